"""A counting HTTP reverse proxy for an S3-compatible server on loopback.

Each replicator under test talks to its own proxy, which forwards every
request unchanged (headers included, so SigV4 signatures still match the
Host they were made for) to moto and counts it by S3 request kind, plus the
bytes of the bodies uploaded. Counting at the wire treats every tool alike:
no tool's own metrics are trusted.
"""
import http.client, http.server, threading
from urllib.parse import urlsplit, parse_qs

KINDS = ("PUT", "COPY", "POST", "LIST", "GET", "HEAD", "DELETE", "OTHER")
# S3 Standard list prices, us-east-1, dollars per 1,000 requests. DELETE is free.
PRICE_PER_1000 = {"PUT": 0.005, "COPY": 0.005, "POST": 0.005, "LIST": 0.005,
                  "GET": 0.0004, "HEAD": 0.0004, "OTHER": 0.0004, "DELETE": 0.0}
HOURS_PER_MONTH = 730  # a 30.4-day month


def classify(method, target, headers):
    """The S3 request kind: path-style URLs, /bucket[/key][?query]."""
    path, query = urlsplit(target).path, parse_qs(urlsplit(target).query, keep_blank_values=True)
    has_key = "/" in path.lstrip("/")  and path.lstrip("/").split("/", 1)[1] != ""
    if method == "PUT":
        return "COPY" if headers.get("x-amz-copy-source") else "PUT"
    if method == "GET":
        if has_key:
            return "GET"
        # ListObjects(V2) is a GET on the bucket; other bucket GETs
        # (?location, ?versioning) are billed as GETs.
        listing = not query or any(k in query for k in ("list-type", "prefix", "delimiter", "continuation-token"))
        return "LIST" if listing else "OTHER"
    if method in ("HEAD", "DELETE", "POST"):
        return method
    return "OTHER"


def read_body(rfile, headers):
    """The request body as sent (raw chunks if chunked), and its payload size."""
    length = headers.get("Content-Length")
    if length is not None:
        data = rfile.read(int(length))
        # aws-chunked uploads carry the object's size here; the raw length
        # includes chunk signatures.
        decoded = headers.get("x-amz-decoded-content-length")
        return data, int(decoded) if decoded else len(data)
    if headers.get("Transfer-Encoding", "").lower() == "chunked":
        raw, payload = bytearray(), 0
        while True:
            line = rfile.readline()
            raw += line
            size = int(line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while True:  # trailers, then the empty line
                    trailer = rfile.readline()
                    raw += trailer
                    if trailer in (b"\r\n", b"\n", b""):
                        break
                break
            chunk = rfile.read(size + 2)  # the data and its CRLF
            raw += chunk
            payload += size
        decoded = headers.get("x-amz-decoded-content-length")
        return bytes(raw), int(decoded) if decoded else payload
    return b"", 0


class CountingProxy:
    """Forwards 127.0.0.1:port -> upstream (host, port); counts requests."""

    def __init__(self, upstream_port):
        self.upstream_port = upstream_port
        self.lock = threading.Lock()
        self.counts = dict.fromkeys(KINDS, 0)
        self.uploaded = 0
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as the SDKs expect

            def log_message(self, *args):
                pass

            def forward(self):
                body, payload = read_body(self.rfile, self.headers)
                kind = classify(self.command, self.path, self.headers)
                with proxy.lock:
                    proxy.counts[kind] += 1
                    if self.command in ("PUT", "POST"):
                        proxy.uploaded += payload
                upstream = getattr(self.server.local, "conn", None)
                if upstream is None:
                    upstream = self.server.local.conn = http.client.HTTPConnection("127.0.0.1", proxy.upstream_port,
                                                                                   timeout=120)
                upstream.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
                for name, value in self.headers.items():
                    upstream.putheader(name, value)
                upstream.endheaders(body if body else None)
                response = upstream.getresponse()
                data = response.read()
                self.send_response_only(response.status, response.reason)
                for name, value in response.getheaders():
                    if name.lower() not in ("transfer-encoding", "content-length", "connection"):
                        self.send_header(name, value)
                # HEAD answers carry the object's length but no body.
                length = response.getheader("Content-Length") if self.command == "HEAD" else str(len(data))
                self.send_header("Content-Length", length or "0")
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = forward

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.local = threading.local()  # one upstream connection per client connection thread
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def snapshot(self):
        """(counts by kind, bytes uploaded) so far."""
        with self.lock:
            return dict(self.counts), self.uploaded

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def delta(after, before):
    """Counts and bytes between two snapshots."""
    return {k: after[0][k] - before[0][k] for k in KINDS}, after[1] - before[1]


def monthly_cost(counts_per_hour):
    """Dollars per month (HOURS_PER_MONTH) at PRICE_PER_1000; kinds missing
    from `counts_per_hour` count as none."""
    return sum(counts_per_hour.get(k, 0) * PRICE_PER_1000[k] / 1000 for k in KINDS) * HOURS_PER_MONTH
