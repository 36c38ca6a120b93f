#!/usr/bin/env python3
"""Server memory for a burst of logins at once.

Starts `ROOKERY serve` on a fresh data folder (a user `bench`), sends N logins at
once (half with the right password, half for unknown names), and prints, as one
JSON line: the server's RSS before, the rise of its peak RSS (VmHWM), and its RSS
1 s, 10 s and 30 s after the last answer. Each argon2id check takes 19 MiB: how much
of that stays with the server afterwards is the allocator's doing.

usage: logins.py ROOKERY [N]
"""
import json, subprocess, sys, tempfile, threading, time

from common import request, status_kb

def login(addr, name, password, out, i):
    out[i] = request(addr, "POST", "/api/v1/login", {"username": name, "password": password})[0]


def main():
    rookery = sys.argv[1]
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 24
    data = tempfile.mkdtemp(prefix="rookery-logins-")
    subprocess.run([rookery, "user", "add", "bench", "--role", "user", "--data", data],
                   input=b"bench-password-1\n", check=True, stdout=subprocess.DEVNULL)
    srv = subprocess.Popen([rookery, "serve", "--listen", "127.0.0.1:0", "--data", data],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        addr = srv.stdout.readline().decode().strip().split("http://")[1]
        time.sleep(1)
        rss_before, hwm_before = status_kb(srv.pid, "VmRSS"), status_kb(srv.pid, "VmHWM")
        out = [0] * n
        threads = [threading.Thread(target=login, args=(addr, "bench" if i % 2 == 0 else f"nobody-{i}",
                   "bench-password-1" if i % 2 == 0 else "some-password-1", out, i)) for i in range(n)]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        took = time.monotonic() - t0
        hwm = status_kb(srv.pid, "VmHWM")
        rss = {}
        waited = 0
        for at in [1, 10, 30]:
            time.sleep(at - waited)
            waited = at
            rss[f"rss_after_{at}s_mb"] = status_kb(srv.pid, "VmRSS") / 1e3
        assert all(s == (200 if i % 2 == 0 else 401) for i, s in enumerate(out)), out
        print(json.dumps({"logins": n, "seconds": round(took, 3), "rss_before_mb": rss_before / 1e3,
                          "peak_rise_mb": (hwm - hwm_before) / 1e3, **rss}))
    finally:
        srv.terminate()
        srv.wait()
        subprocess.run(["rm", "-rf", data])

main()
