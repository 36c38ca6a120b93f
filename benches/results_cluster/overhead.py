#!/usr/bin/env python3
"""What the registry and the hop cost: scoring req/s through HAProxy to 2 nodes on
PostgreSQL (scripts/cluster) against one node on SQLite, same demo services, same
machine, interleaved rounds. Prints a Markdown table of medians and the ratio.

    python3 benches/results_cluster/overhead.py [ROUNDS] [SECONDS]

Needs a release build (target/release/rookery and rookery-bench) and scripts/cluster's
PostgreSQL and HAProxy (scripts/install-deps). On a 2-core machine both setups share
the cores: this measures overhead, not scaling.
"""
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BIN = os.path.join(ROOT, "target", "release", "rookery")
GLM_ROW = {f"x{i}": round(-0.45 + 0.1 * (i - 1), 2) for i in range(1, 11)}


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def next_port_free(port):
    """HAProxy takes PORT and PORT+1."""
    try:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port + 1))
        return True
    except OSError:
        return False


def demo_key(lines):
    for line in lines:
        m = re.match(r"demo API key: (\S+)", line)
        if m:
            return m.group(1)
    raise SystemExit("no demo API key in: " + "\n".join(lines))


def single_node(data):
    proc = subprocess.Popen(
        [BIN, "serve", "--demo", "--listen", "127.0.0.1:0", "--data", data],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    lines = [proc.stdout.readline().strip() for _ in range(4)]
    addr = lines[0].removeprefix("rookery listening on http://")
    return proc, addr, demo_key(lines)


def cluster(folder):
    port = free_port()
    while not next_port_free(port):
        port = free_port()
    proc = subprocess.Popen(
        [os.path.join(ROOT, "scripts", "cluster"), "--nodes", "2", "--demo",
         "--port", str(port), "--dir", folder],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    node1 = None
    while True:
        line = proc.stdout.readline()
        if not line:
            raise SystemExit("scripts/cluster ended")
        if line.startswith("node node1 "):
            node1 = line.split()[2]
        if line.startswith("cluster "):
            break
    with open(os.path.join(folder, "node1", "stdout")) as f:
        key = demo_key(f.read().splitlines())
    return proc, f"127.0.0.1:{port}", node1, key


def wait_ready(addr):
    for _ in range(600):
        try:
            with urllib.request.urlopen(f"http://{addr}/readyz", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"{addr} never became ready")


def load(addr, key, service, body_file, seconds):
    out = subprocess.run(
        [BIN, "bench", "http", "--url", f"http://{addr}/api/v1/services/{service}",
         "-H", f"Authorization: Bearer {key}", "-H", "Content-Type: application/json",
         "--body-file", body_file, "--connections", "4", "--duration", f"{seconds}s",
         "--json"], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    seconds = sys.argv[2] if len(sys.argv) > 2 else "10"
    # Under target/ (reachable by the worker accounts, unlike a 0700 temp folder).
    os.makedirs(os.path.join(ROOT, "target"), exist_ok=True)
    with tempfile.TemporaryDirectory(dir=os.path.join(ROOT, "target"), prefix="bench-cluster-") as tmp:
        os.chmod(tmp, 0o755)
        bodies = {}
        for name, rows in [("glm/1", 1), ("rf/1", 100)]:
            path = os.path.join(tmp, name.replace("/", "_") + ".json")
            with open(path, "w") as f:
                json.dump([GLM_ROW] * rows, f)
            bodies[name] = path
        one, one_addr, one_key = single_node(os.path.join(tmp, "single"))
        many, lb_addr, node1_addr, lb_key = cluster(os.path.join(tmp, "cluster"))
        try:
            wait_ready(one_addr)
            wait_ready(lb_addr)
            results = {}
            for service, body in bodies.items():
                for r in range(rounds):
                    for setup, addr, key in [("sqlite_1_node", one_addr, one_key),
                                             ("pg_node_direct", node1_addr, lb_key),
                                             ("haproxy_2_nodes_pg", lb_addr, lb_key)]:
                        got = load(addr, key, service, body, seconds)
                        results.setdefault((service, setup), []).append(got)
                        print(f"round {r + 1} {service} {setup}: {got['req_per_s']:.0f} req/s, "
                              f"errors {got.get('errors', 0)}", file=sys.stderr)
        finally:
            one.terminate()
            one.wait()
            many.stdin.close()
            many.wait()
    print("| workload | one node, SQLite (req/s) | one node of the cluster, direct (req/s) | HAProxy + 2 nodes, PostgreSQL (req/s) | ratio HAProxy/SQLite |")
    print("|---|---|---|---|---|")
    for service, label in [("glm/1", "glm, 1 row, 4 connections"),
                           ("rf/1", "randomForest, 100 rows, 4 connections")]:
        one = statistics.median(x["req_per_s"] for x in results[(service, "sqlite_1_node")])
        direct = statistics.median(x["req_per_s"] for x in results[(service, "pg_node_direct")])
        two = statistics.median(x["req_per_s"] for x in results[(service, "haproxy_2_nodes_pg")])
        print(f"| {label} | {one:,.0f} | {direct:,.0f} | {two:,.0f} | {two / one:.2f} |")


if __name__ == "__main__":
    main()
