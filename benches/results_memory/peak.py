#!/usr/bin/env python3
"""Server memory and time to first byte for one large session result.

Starts `ROOKERY serve` on a fresh data folder (a publisher `bench`), opens a
session, stores `x <- runif(N)`, then asks for `x` over HTTP and prints, as one
JSON line: the server's peak RSS (VmHWM) before and after, its RSS after, the time
to the first byte of the answer and to its last, and the answer's size. Every
figure is the server's own (/proc); the answer is checked to hold N numbers.

With `--settle S`, it also samples the server's RSS 10 s, 30 s and S s after the
answer (how soon memory goes back after a spike; the allocator decides that).

usage: peak.py ROOKERY N [--settle S] [serve flags, e.g. --max-result-bytes B]
"""
import json, os, subprocess, sys, tempfile, time

from common import request, status_kb


def main():
    rookery, n = sys.argv[1], int(float(sys.argv[2]))
    extra = sys.argv[3:]
    settle = 0
    if extra[:1] == ["--settle"]:
        settle, extra = float(extra[1]), extra[2:]
    data = tempfile.mkdtemp(prefix="rookery-peak-")
    subprocess.run([rookery, "user", "add", "bench", "--role", "publisher", "--data", data],
                   input=b"bench-password-1\n", check=True, stdout=subprocess.DEVNULL)
    srv = subprocess.Popen([rookery, "serve", "--listen", "127.0.0.1:0", "--data", data] + extra,
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        addr = srv.stdout.readline().decode().strip().split("http://")[1]
        _, body, _, _ = request(addr, "POST", "/api/v1/login",
                                {"username": "bench", "password": "bench-password-1"})
        token = json.loads(body)["access_token"]
        _, body, _, _ = request(addr, "POST", "/api/v1/sessions", {}, token)
        sid = json.loads(body)["id"]
        path = f"/api/v1/sessions/{sid}/execute"
        request(addr, "POST", path, {"code": f"x <- runif({n}); NULL"}, token)
        before = status_kb(srv.pid, "VmHWM")
        rss_before = status_kb(srv.pid, "VmRSS")
        code, body, first, total = request(addr, "POST", path, {"code": "x"}, token)
        after = status_kb(srv.pid, "VmHWM")
        time.sleep(1)
        rss = status_kb(srv.pid, "VmRSS")
        shmem = status_kb(srv.pid, "RssShmem")
        settled, waited = {}, 1
        for at in [10, 30, settle]:
            if settle and at <= settle and at > waited:
                time.sleep(at - waited)
                waited = at
                settled[f"rss_after_{int(at)}s_mb"] = status_kb(srv.pid, "VmRSS") / 1e3
        if code == 200:
            assert len(json.loads(body)["result"]) == n
        print(json.dumps({"n": n, "status": code, "value_mb": n * 8 / 1e6,
                          "rss_before_mb": rss_before / 1e3,
                          "peak_before_mb": before / 1e3, "peak_after_mb": after / 1e3,
                          "peak_rise_mb": (after - before) / 1e3, "rss_after_mb": rss / 1e3, "rss_shmem_after_mb": shmem / 1e3,
                          "first_byte_s": round(first, 3), "last_byte_s": round(total, 3),
                          "answer_mb": len(body) / 1e6, **settled}))
    finally:
        srv.terminate()
        srv.wait()
        subprocess.run(["rm", "-rf", data])

main()
