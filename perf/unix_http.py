"""HTTP/1.1 to a pororocad over its unix socket, for the Python parts of the benchmarks (perf/*.sh
run them with PYTHONPATH=perf)."""
import http.client
import json
import socket
import time


class UnixConnection(http.client.HTTPConnection):
    """A kept-alive connection to the daemon's API socket at `socket_path`."""

    def __init__(self, socket_path, timeout=60):
        super().__init__("localhost", timeout=timeout)
        self.socket_path = socket_path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.socket_path)


def call(conn, method, path, body=None):
    """Sends one request (body: a JSON value, or None). Returns (status, body bytes, seconds)."""
    t0 = time.monotonic()
    conn.request(method, path, body=json.dumps(body) if body is not None else None,
                 headers={"Content-Type": "application/json"} if body is not None else {})
    r = conn.getresponse()
    data = r.read()
    return r.status, data, time.monotonic() - t0
