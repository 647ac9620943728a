"""Download throughput: `stylegan-ops download` vs curl against the same loopback server.

The server streams a file with sendfile(2) so that it is not the bottleneck. Each client
runs as its own process; the best of --repeat runs is reported.

Usage: python benchmarks/download_throughput.py [--size-mb 1024] [--repeat 3]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shlex
import shutil
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

WORK = Path(os.environ.get("BENCH_DIR", "bench-out"))


class SendfileHandler(BaseHTTPRequestHandler):
    source: Path
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        size = self.source.stat().st_size
        start = 0
        if rng := self.headers.get("Range"):
            start = int(rng.removeprefix("bytes=").split("-")[0])
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
        self.send_header("Content-Length", str(size - start))
        self.end_headers()
        self.wfile.flush()
        with self.source.open("rb") as f:
            self.connection.sendfile(f, start, size - start)


def timed(cmd: list[str], out: Path) -> float:
    out.unlink(missing_ok=True)
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    if not shutil.which("curl"):
        sys.exit("curl is needed for the baseline")
    WORK.mkdir(exist_ok=True)
    src = WORK / f"payload-{args.size_mb}mb.bin"
    if not src.exists() or src.stat().st_size != args.size_mb << 20:
        with src.open("wb") as f:
            for _ in range(args.size_mb):
                f.write(os.urandom(1 << 20))
    md5 = hashlib.md5(src.read_bytes(), usedforsecurity=False).hexdigest()
    handler = type("H", (SendfileHandler,), {"source": src})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}/payload.bin"
    dst = WORK / "downloaded.bin"
    ops = [sys.executable, "-m", "stylegan_ops.cli", "download", url, "--out", str(dst)]
    curl = ["curl", "-s", "--noproxy", "*", "-o", str(dst), url]
    variants = {
        "curl": curl,
        "stylegan-ops (no checksum)": ops,
        "curl + md5sum": ["sh", "-c", f"{shlex.join(curl)} && md5sum {dst} >/dev/null"],
        "stylegan-ops --md5": [*ops, "--md5", md5],
    }
    best = {name: min(timed(cmd, dst) for _ in range(args.repeat))
            for name, cmd in variants.items()}
    httpd.shutdown()
    dst.unlink(missing_ok=True)
    mb = args.size_mb * 1.048576
    print(f"\n{args.size_mb} MiB over loopback, best of {args.repeat}")
    for name, seconds in best.items():
        print(f"{name:28s} {mb / seconds:8.1f} MB/s  ({seconds:.2f} s)")
    plain = best["curl"] / best["stylegan-ops (no checksum)"]
    verified = best["curl + md5sum"] / best["stylegan-ops --md5"]
    print(f"ours/curl (transfer only)      = {plain:.2f}  (target >= 0.90)")
    print(f"ours/curl (with verification)  = {verified:.2f}")


if __name__ == "__main__":
    main()
