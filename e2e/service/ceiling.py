#!/usr/bin/env python3
"""The disk ceiling for the service-mode bench: N parallel streams (one per replica of an ensemble on one
machine), each appending blocks of SIZE bytes to its own file and fsyncing after every block, for SECS
seconds. Prints one JSON line: MiB/s over all streams and the per-fsync p50/p99 in ms.

    e2e/service/ceiling.py [--streams 3] [--size 2000000] [--secs 10] [--dir /tmp]
"""
import argparse, json, os, tempfile, threading, time

def stream(path, size, secs, out):
    buf = os.urandom(size)
    lat = []
    written = 0
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        end = time.monotonic() + secs
        while time.monotonic() < end:
            t = time.monotonic()
            os.write(fd, buf)
            os.fsync(fd)
            lat.append(time.monotonic() - t)
            written += size
    finally:
        os.close(fd)
        os.unlink(path)
    out.append((written, lat))

def main():
    p = argparse.ArgumentParser()
    p.add_argument("--streams", type=int, default=3)
    p.add_argument("--size", type=int, default=2_000_000)
    p.add_argument("--secs", type=float, default=10)
    p.add_argument("--dir", default=tempfile.gettempdir())
    a = p.parse_args()
    out = []
    ts = [threading.Thread(target=stream, args=(os.path.join(a.dir, f"ceiling-{os.getpid()}-{i}"), a.size, a.secs, out))
          for i in range(a.streams)]
    start = time.monotonic()
    for t in ts: t.start()
    for t in ts: t.join()
    took = time.monotonic() - start
    lat = sorted(x for _, l in out for x in l)
    pct = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] * 1000 if lat else 0
    print(json.dumps({"streams": a.streams, "block_bytes": a.size, "mib_per_s": round(sum(w for w, _ in out) / took / 2**20, 1),
                      "fsync_p50_ms": round(pct(0.5), 2), "fsync_p99_ms": round(pct(0.99), 2)}))

if __name__ == "__main__":
    main()
