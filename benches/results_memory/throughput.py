#!/usr/bin/env python3
"""MB/s of one large result: `runif(N)` (default 1e7 doubles, 80 MB) already in the
server's memory, asked for and read to its last byte, over:

- Rookery, HTTP: `GET /api/v1/sessions/{id}/objects/x` (JSON, streamed);
- Rookery, QAP1: `CMD_eval "x"` on a logged-in connection;
- Rserve 1.8 (Debian's r-cran-rserve), QAP1: `CMD_eval "x"`;
- plumber (Debian's r-cran-plumber), HTTP: `GET /x` (jsonlite, digits = NA).

Every server is started here on a free loopback port and stopped at the end. The
client reads raw bytes (no JSON or QAP1 decoding) so that the figure is the
server's. Rounds are interleaved (A B C D, A B C D, ...); it prints one JSON line
per round and a final one with the medians, in MB of value (8 bytes per double) per
second and in MB on the wire.

usage: throughput.py ROOKERY [N] [ROUNDS]
"""
import json, os, socket, statistics, struct, subprocess, sys, tempfile, time

from common import request

USER, PASSWORD = "bench", "bench-password-1"

def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port

def wait_port(port, proc, what, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            sys.exit(f"{what} exited early")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    sys.exit(f"{what} did not listen on {port}")

def http(port, method, path, body=None, token=None):
    """Status, body and seconds to the last byte of one request to a loopback port."""
    status, body, _, took = request(f"127.0.0.1:{port}", method, path, body, token)
    return status, body, took

def recv_exact(s, n):
    buf = bytearray(n)
    view, got = memoryview(buf), 0
    while got < n:
        k = s.recv_into(view[got:], min(n - got, 1 << 20))
        if k == 0:
            raise EOFError("the server closed the connection")
        got += k
    return bytes(buf)

def qap_string(text):
    b = text.encode() + b"\0"
    b += b"\0" * (-len(b) % 4)
    return struct.pack("<I", 4 | (len(b) << 8)) + b

def qap(s, command, text):
    """One QAP1 request with a DT_STRING; returns (answer word, payload length)."""
    p = qap_string(text)
    s.sendall(struct.pack("<IIII", command, len(p), 0, 0) + p)
    cmd, lo, _, hi = struct.unpack("<IIII", recv_exact(s, 16))
    n = lo | (hi << 32)
    left = n
    while left:
        left -= len(s.recv(min(left, 1 << 20)))
    return cmd, n

def qap_connect(port, login):
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    recv_exact(s, 32)
    if login:
        cmd, _ = qap(s, 0x001, f"{USER}\n{PASSWORD}")
        assert cmd & 0xFFFFFF == 0x10001, hex(cmd)
    return s

def timed_qap(s):
    t0 = time.monotonic()
    cmd, n = qap(s, 0x003, "x")
    took = time.monotonic() - t0
    assert cmd & 0xFFFFFF == 0x10001, hex(cmd)
    return n, took

PLUMBER = """
library(plumber)
x <- runif({n})
ser <- serializer_json(digits = NA, auto_unbox = FALSE)
pr() |> pr_get("/x", function() x, serializer = ser) |>
  pr_run(port = {port}L, host = "127.0.0.1", docs = FALSE)
"""

def main():
    rookery = sys.argv[1]
    n = int(float(sys.argv[2])) if len(sys.argv) > 2 else 10_000_000
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    value_mb = n * 8 / 1e6
    tmp = tempfile.mkdtemp(prefix="rookery-throughput-")
    # Its own folder, not inside tmp (0700): worker accounts must reach it.
    data = tempfile.mkdtemp(prefix="rookery-throughput-data-")
    rs_pidfile = os.path.join(tmp, "rserve.pid")
    procs = []
    try:
        subprocess.run([rookery, "user", "add", USER, "--role", "publisher", "--data", data],
                       input=(PASSWORD + "\n").encode(), check=True, stdout=subprocess.DEVNULL)
        rk_http, rk_qap, rs_port, pl_port = free_port(), free_port(), free_port(), free_port()
        conf = os.path.join(tmp, "rookery.toml")
        with open(conf, "w") as f:
            f.write(f'[limits]\nmax_result_bytes = 0\n'
                    f'[qap]\nlisten = "127.0.0.1:{rk_qap}"\n')
        procs.append(subprocess.Popen([rookery, "serve", "--listen", f"127.0.0.1:{rk_http}",
                                       "--config", conf, "--data", data],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_port(rk_http, procs[-1], "rookery serve")
        wait_port(rk_qap, procs[-1], "rookery serve (QAP1)")
        rserve = subprocess.check_output(["Rscript", "-e",
                    'cat(system.file("libs", "Rserve", package = "Rserve"))']).decode()
        rsconf = os.path.join(tmp, "Rserv.conf")
        with open(rsconf, "w") as f:
            f.write("maxsendbuf 0\nmaxinbuf 1048576\n")
        # Rserve puts itself in the background: its pid comes from its pidfile.
        subprocess.run(["R", "CMD", rserve, "--no-save", "--RS-port", str(rs_port),
                        "--RS-conf", rsconf, "--RS-workdir", tmp, "--RS-pidfile", rs_pidfile],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        wait_port(rs_port, None, "Rserve")
        script = os.path.join(tmp, "plumber.R")
        with open(script, "w") as f:
            f.write(PLUMBER.replace("{n}", str(n)).replace("{port}", str(pl_port)))
        procs.append(subprocess.Popen(["Rscript", script],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_port(pl_port, procs[-1], "plumber")

        _, body, _ = http(rk_http, "POST", "/api/v1/login", {"username": USER, "password": PASSWORD})
        token = json.loads(body)["access_token"]
        _, body, _ = http(rk_http, "POST", "/api/v1/sessions", {}, token)
        sid = json.loads(body)["id"]
        http(rk_http, "POST", f"/api/v1/sessions/{sid}/execute", {"code": f"x <- runif({n}); NULL"}, token)
        rq = qap_connect(rk_qap, True)
        assert qap(rq, 0x002, f"x <- runif({n})")[0] & 0xFFFFFF == 0x10001
        rs = qap_connect(rs_port, False)
        assert qap(rs, 0x002, f"x <- runif({n})")[0] & 0xFFFFFF == 0x10001

        runs = {k: [] for k in ["rookery_http", "rookery_qap", "rserve_qap", "plumber_http"]}
        wire = {}
        for r in range(rounds):
            status, body, took = http(rk_http, "GET", f"/api/v1/sessions/{sid}/objects/x", token=token)
            assert status == 200 and body.count(b",") == n - 1, status
            runs["rookery_http"].append(took); wire["rookery_http"] = len(body) / 1e6
            size, took = timed_qap(rq)
            runs["rookery_qap"].append(took); wire["rookery_qap"] = size / 1e6
            size, took = timed_qap(rs)
            runs["rserve_qap"].append(took); wire["rserve_qap"] = size / 1e6
            status, body, took = http(pl_port, "GET", "/x")
            assert status == 200 and body.count(b",") == n - 1, status
            runs["plumber_http"].append(took); wire["plumber_http"] = len(body) / 1e6
            print(json.dumps({"round": r + 1, **{k: round(v[-1], 3) for k, v in runs.items()}}))
        # Rserve's child for this connection ends with it, before its parent does.
        rq.close()
        rs.close()
        time.sleep(0.5)
        med = {k: statistics.median(v) for k, v in runs.items()}
        print(json.dumps({"n": n, "value_mb": value_mb, "rounds": rounds,
                          "median_s": {k: round(v, 3) for k, v in med.items()},
                          "value_mb_per_s": {k: round(value_mb / v, 1) for k, v in med.items()},
                          "wire_mb": {k: round(v, 1) for k, v in wire.items()}}))
    finally:
        if os.path.exists(rs_pidfile):
            subprocess.run(["kill", open(rs_pidfile).read().strip()])
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        subprocess.run(["rm", "-rf", tmp, data])

main()
