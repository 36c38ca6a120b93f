"""What the memory and throughput scripts beside this file share: a process's
/proc/PID/status figures, and one raw HTTP/1.1 request timed to its first and last
byte (the body dechunked, never parsed)."""
import json, socket, time

def status_kb(pid, key):
    """A `kB` figure of /proc/PID/status (VmRSS, VmHWM, RssShmem, ...)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])

def request(addr, method, path, body=None, token=None):
    """One request over a fresh connection to `addr` ("HOST:PORT"), with `body` as
    JSON. Returns (status, body bytes, seconds to the first byte, to the last)."""
    host, port = addr.rsplit(":", 1)
    s = socket.create_connection((host, int(port)))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    data = json.dumps(body).encode() if body is not None else b""
    head = f"{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n" \
           f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n"
    if token:
        head += f"Authorization: Bearer {token}\r\n"
    t0 = time.monotonic()
    s.sendall(head.encode() + b"\r\n" + data)
    chunks, first = [], None
    while True:
        b = s.recv(1 << 20)
        if not b:
            break
        if first is None:
            first = time.monotonic() - t0
        chunks.append(b)
    total = time.monotonic() - t0
    s.close()
    raw = b"".join(chunks)
    head, _, rest = raw.partition(b"\r\n\r\n")
    if b"chunked" in head.lower():
        out, i = bytearray(), 0
        while True:
            j = rest.index(b"\r\n", i)
            n = int(rest[i:j], 16)
            if n == 0:
                break
            out += rest[j + 2:j + 2 + n]
            i = j + 2 + n + 2
        rest = bytes(out)
    return int(head[9:12]), rest, first, total
