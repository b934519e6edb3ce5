//! The programs under test as child processes: stderr kept in a log file
//! for failure messages, signals (SIGTERM for a clean stop, SIGKILL for a
//! crash), and the memory and file descriptors a soak watches.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, signal: i32) -> i32;
}

const SIGKILL: i32 = 9;
const SIGTERM: i32 = 15;

/// A running program; killed on drop so a failing test leaves nothing
/// running.
pub struct Process {
    pub name: String,
    child: Option<Child>,
    log: PathBuf,
}

impl Process {
    /// Starts `command` with stdout discarded and stderr appended to
    /// `<dir>/<name>.log` (appended: a program restarted under the same
    /// name keeps one log).
    pub fn spawn(name: impl Into<String>, dir: &Path, command: &mut Command) -> Process {
        let name = name.into();
        let log = log_path(dir, &name);
        let file = std::fs::OpenOptions::new().create(true).append(true).open(&log).unwrap();
        let child = command.stdout(Stdio::null()).stderr(file).spawn().unwrap_or_else(|e| panic!("start {name}: {e}"));
        Process { name, child: Some(child), log }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("a running process").id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The exit status, if it has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().unwrap())
    }

    /// Panics with the log's tail if the process has exited.
    pub fn assert_running(&mut self) {
        if let Some(status) = self.exited() {
            panic!("{} exited with {status}:\n{}", self.name, tail(&self.log()));
        }
    }

    /// Waits up to `limit` for the process to exit by itself.
    pub fn wait(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.exited() {
                return status;
            }
            assert!(Instant::now() < deadline, "{} did not exit within {limit:?}:\n{}", self.name, tail(&self.log()));
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits up to 30 s for the program to accept connections on loopback
    /// `port`; panics with its log's tail if it exits first.
    pub fn wait_listening(&mut self, port: u16) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            self.assert_running();
            assert!(Instant::now() < deadline, "{} did not start listening on port {port}", self.name);
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, then the exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        self.signal(SIGTERM);
        self.wait(Duration::from_secs(60))
    }

    /// SIGKILL: a crash at whatever the program was doing.
    pub fn kill_nine(&mut self) -> ExitStatus {
        self.signal(SIGKILL);
        self.wait(Duration::from_secs(10))
    }

    fn signal(&mut self, signal: i32) {
        let pid = self.pid() as i32;
        // SAFETY: kill(2) on our own child, which has not been reaped yet.
        unsafe { libc_kill(pid, signal) };
    }

    /// Resident memory and open file descriptors, from /proc.
    pub fn usage(&self) -> Option<Usage> {
        usage_of(self.pid())
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The log file of the program `name` spawned in `dir`.
pub fn log_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.log"))
}

/// What that log holds now (empty before the first spawn). Read it before
/// spawning to tell what a restart adds: once spawned, the program may
/// write before the caller looks.
pub fn log_of(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(log_path(dir, name)).unwrap_or_default()
}

/// What a soak watches stay flat.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Usage {
    pub rss_kib: u64,
    pub fds: u64,
}

/// The resident set and open descriptors of process `pid` (None once it
/// has exited).
pub fn usage_of(pid: u32) -> Option<Usage> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64;
    Some(Usage { rss_kib, fds })
}

/// The last lines of a log, for failure messages.
pub fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// A descendant of process `root` whose command name (`/proc/PID/comm`,
/// at most 15 bytes) is `comm`: how a test finds the function process
/// `cargo lambda watch` starts.
pub fn descendant_named(root: u32, comm: &str) -> Option<u32> {
    let mut parents = std::collections::HashMap::new();
    let mut named = Vec::new();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        // "pid (comm) state ppid ...": comm may hold spaces, so split at the last ')'.
        let Some((head, rest)) = stat.rsplit_once(')') else { continue };
        let Some(ppid) = rest.split_whitespace().nth(1).and_then(|p| p.parse::<u32>().ok()) else { continue };
        parents.insert(pid, ppid);
        if head.split_once('(').map(|(_, name)| name) == Some(comm) {
            named.push(pid);
        }
    }
    named.into_iter().find(|&pid| {
        let mut at = pid;
        while let Some(&parent) = parents.get(&at) {
            if parent == root {
                return true;
            }
            if parent <= 1 {
                return false;
            }
            at = parent;
        }
        false
    })
}
