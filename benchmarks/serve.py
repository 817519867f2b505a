"""Serving throughput against offline batched generation, measured in the same run.

Starts `lstmgen serve` (the bundled shakespeare-char model) in a subprocess, then 64 concurrent clients
stream completions for 30 s (each opens a request as soon as its last one ends). Reported: errors,
aggregate generated tokens/s, that divided by offline `generate()` over a batch of 64 prompts with the
same options (measured in this process before and after the load; the better one counts), and the p50 /
p99 time to the first streamed token.

The clients are plain asyncio sockets that look only for the first event and the usage chunk, so that
they take as little of the machine as possible from the server.

    python benchmarks/serve.py [--clients 64] [--seconds 30] [--max-tokens 256] [--dtype bfloat16]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import time
from typing import List

import torch

import lstmgen

MODEL = "shakespeare-char"
USAGE = re.compile(rb'"completion_tokens": ?(\d+)')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def offline_tokens_per_s(batch: int, max_tokens: int, temperature: float, dtype: str, repeats: int = 3) -> float:
    """generate() over `batch` prompts in one call: the best of `repeats`."""
    gen = lstmgen.load(MODEL, dtype=dtype)
    best = 0.0
    for r in range(repeats):
        t0 = time.perf_counter()
        out = gen.generate(["ROMEO:"] * batch, max_new_tokens=max_tokens, temperature=temperature, seed=r)
        n = sum(len(o.token_ids) for o in out)
        best = max(best, n / (time.perf_counter() - t0))
    return best


async def one_request(port: int, body: bytes, ttfts: List[float]) -> int:
    """Stream one completion; return its completion tokens (from the usage chunk), raise on an error."""
    t0 = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    await writer.drain()
    parts: List[bytes] = []
    first = False
    while True:
        chunk = await reader.read(65536)
        if not chunk:
            break
        parts.append(chunk)
        if not first and re.search(rb'"text": "[^"]', chunk):  # the first event with text in it
            ttfts.append(time.perf_counter() - t0)
            first = True
    writer.close()
    buf = b"".join(parts)
    if not buf.startswith(b"HTTP/1.1 200") or b"data: [DONE]" not in buf[-200:] or b'"error"' in buf:
        raise RuntimeError(buf[:300].decode(errors="replace"))
    m = USAGE.search(buf)
    return int(m.group(1))


async def load(port: int, clients: int, seconds: float, max_tokens: int, temperature: float):
    body = json.dumps({"model": MODEL, "prompt": "ROMEO:", "max_tokens": max_tokens, "temperature": temperature,
                       "stream": True, "stream_options": {"include_usage": True}}).encode()
    ttfts: List[float] = []
    tokens, errors, requests = 0, [], 0
    deadline = time.perf_counter() + seconds

    async def client() -> None:
        nonlocal tokens, requests
        while time.perf_counter() < deadline:
            try:
                n = await one_request(port, body, ttfts)  # (not `tokens += await ...`: that reads tokens first)
                tokens += n
                requests += 1
            except Exception as e:  # counted, and the client goes on
                errors.append(repr(e)[:200])

    t0 = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return tokens / (time.perf_counter() - t0), requests, errors, ttfts


def wait_ready(port: int, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("the server exited")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                if s.recv(100).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("the server did not start")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--temperature", type=float, default=0.8)
    ap.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32",
                    help="the model's weights, served and offline alike")
    ap.add_argument("--busy", type=int, default=0, help="processes that keep this many cores busy meanwhile")
    ap.add_argument("--threads", type=int, default=None, help="lstmgen serve --threads (default: its own choice)")
    ap.add_argument("--no-offline", action="store_true", help="skip the offline comparison")
    args = ap.parse_args()
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.busy)]
    try:
        run(args)
    finally:
        for b in busy:
            b.kill()


def run(args) -> None:
    torch.set_num_threads(min(torch.get_num_threads(), os.cpu_count() or 1))
    offline = (lambda: 0.0) if args.no_offline else \
        (lambda: offline_tokens_per_s(args.clients, args.max_tokens, args.temperature, args.dtype))
    before = offline()
    port = free_port()
    threads = ["--threads", str(args.threads)] if args.threads is not None else []
    proc = subprocess.Popen([sys.executable, "-m", "lstmgen", "serve", "--port", str(port), "--log-level", "warning",
                             "--max-batch", str(max(args.clients, 64)), "--dtype", args.dtype, *threads])
    try:
        wait_ready(port, proc)
        asyncio.run(load(port, 4, 2.0, 16, args.temperature))  # warm-up
        served, requests, errors, ttfts = asyncio.run(
            load(port, args.clients, args.seconds, args.max_tokens, args.temperature))
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    after = offline()
    offline = max(before, after) or float("nan")
    q = statistics.quantiles(ttfts, n=100) if len(ttfts) >= 2 else [float("nan")] * 99
    print(f"model {MODEL} in {args.dtype}; {args.clients} streaming clients for {args.seconds:g} s; "
          f"max_tokens {args.max_tokens}; temperature {args.temperature}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; serve --threads {args.threads if args.threads is not None else 'auto'}; "
          f"{args.busy} busy core(s)\n")
    print("| requests | errors | served tok/s | offline batch-64 tok/s | served / offline | TTFT p50 | TTFT p99 |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    print(f"| {requests} | {len(errors)} | {served:,.0f} | {offline:,.0f} | {served / offline:.2f} | "
          f"{q[49] * 1000:.0f} ms | {q[98] * 1000:.0f} ms |")
    if errors:
        print("\nfirst errors:", *errors[:5], sep="\n  ")
    sys.exit(1 if errors else 0)


if __name__ == "__main__":
    main()
