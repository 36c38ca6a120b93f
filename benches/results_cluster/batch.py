#!/usr/bin/env python3
"""A batch of ROWS rows (default 10 million, the demo glm input of docs/peers.md) sent
with `rookery batch --server` (50,000-row jobs, 4 in flight): to one node on SQLite,
through HAProxy to 2 nodes on PostgreSQL (scripts/cluster --nodes 2 --demo), and
through HAProxy again with node 2 killed by SIGKILL halfway through. Every run's
output is checked (one line per input row). Prints a Markdown table of medians over
ROUNDS rounds (interleaved) and the time the kill cost.

    python3 benches/results_cluster/batch.py [ROWS] [ROUNDS]

Needs a release build and scripts/cluster's PostgreSQL and HAProxy. On a 2-core
machine every node shares the cores: this measures overhead and recovery, not
scaling.
"""
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
from overhead import BIN, ROOT, demo_key, free_port, single_node, wait_ready  # noqa: E402


def free_pair():
    """A free port whose next port is free too (HAProxy takes both)."""
    while True:
        port = free_port()
        try:
            with socket.socket() as s:
                s.bind(("127.0.0.1", port + 1))
            return port
        except OSError:
            continue


def start_cluster(folder):
    """scripts/cluster with 2 nodes and the demo: (process, HAProxy address, {node: pid}, key)."""
    port = free_pair()
    proc = subprocess.Popen(
        [os.path.join(ROOT, "scripts", "cluster"), "--nodes", "2", "--demo",
         "--port", str(port), "--dir", folder],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    pids = {}
    while True:
        line = proc.stdout.readline()
        if not line:
            raise SystemExit("scripts/cluster ended")
        words = line.split()
        if words[0] == "node":
            pids[words[1]] = int(words[4])
        if words[0] == "cluster":
            break
    with open(os.path.join(folder, "node1", "stdout")) as f:
        key = demo_key(f.read().splitlines())
    lb = f"127.0.0.1:{port}"
    wait_ready(lb)
    return proc, lb, pids, key


def run_batch(addr, key, source, out, kill=None):
    """Seconds `rookery batch --server` took; `kill`: (pid, after seconds) to SIGKILL."""
    if kill:
        pid, after = kill
        threading.Timer(after, lambda: os.kill(pid, signal.SIGKILL)).start()
    started = time.monotonic()
    done = subprocess.run(
        [BIN, "batch", "--server", f"http://{addr}", "--service", "glm", "--input", source,
         "--output", out, "--workers", "4", "--quiet"],
        env={**os.environ, "ROOKERY_TOKEN": key}, capture_output=True, text=True)
    took = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"rookery batch failed ({done.returncode}): {done.stderr}")
    return took


def count_lines(path):
    n = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            n += chunk.count(b"\n")
    return n


def main():
    rows = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000_000
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    os.makedirs(os.path.join(ROOT, "target"), exist_ok=True)
    with tempfile.TemporaryDirectory(dir=os.path.join(ROOT, "target"), prefix="bench-batch-") as tmp:
        os.chmod(tmp, 0o755)
        source = os.path.join(tmp, "big.parquet")
        subprocess.run([BIN, "batch", "--generate-demo", str(rows), "--output", source],
                       check=True, capture_output=True)
        out = os.path.join(tmp, "scores.csv")
        times = {"sqlite": [], "cluster": [], "killed": []}
        for r in range(rounds):
            one, one_addr, one_key = single_node(os.path.join(tmp, f"single{r}"))
            try:
                wait_ready(one_addr)
                times["sqlite"].append(run_batch(one_addr, one_key, source, out))
            finally:
                one.terminate()
                one.wait()
            assert count_lines(out) == rows + 1, "one line per row, and the header"
            folder = os.path.join(tmp, f"cluster{r}")
            proc, lb, pids, key = start_cluster(folder)
            try:
                took = run_batch(lb, key, source, out)
                times["cluster"].append(took)
                assert count_lines(out) == rows + 1
                killed = run_batch(lb, key, source, out, kill=(pids["node2"], took / 2))
                times["killed"].append(killed)
                assert count_lines(out) == rows + 1
            finally:
                proc.stdin.close()
                proc.wait()
            print(f"round {r + 1}: sqlite {times['sqlite'][-1]:.1f} s, cluster "
                  f"{times['cluster'][-1]:.1f} s, node2 killed at {took / 2:.1f} s: "
                  f"{times['killed'][-1]:.1f} s", file=sys.stderr)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"| setup ({rows:,} rows, glm, `rookery batch --server`, 4 jobs in flight) "
          f"| seconds (median of {rounds}) | rows/s |")
    print("|---|---|---|")
    for key, label in [("sqlite", "one node, SQLite"),
                       ("cluster", "HAProxy + 2 nodes, PostgreSQL"),
                       ("killed", "HAProxy + 2 nodes, node 2 SIGKILLed halfway")]:
        print(f"| {label} | {med[key]:.1f} | {rows / med[key]:,.0f} |")
    print(f"\nTime lost to the kill (median): {med['killed'] - med['cluster']:.1f} s")


if __name__ == "__main__":
    main()
