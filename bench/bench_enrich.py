"""Enrichment throughput against a loopback OpenAI-compatible server with fixed latency.

The server runs in its own process (so its threads do not compete with the client for the GIL) and
answers every request with a valid reply after ``--latency`` seconds. For each concurrency the full
pipeline runs (image encoding, request, validation, rendering, fsynced JSONL append) over
``rounds x concurrency`` records, and throughput is reported as a ratio of the ideal
``concurrency / latency`` records per second. Each run's fixed start-up and wrap-up (client and TLS
context creation, config and preset files, compaction: ~0.1 s measured) is included in the time; with the
default 16 rounds it weighs ~3 %, with 8 rounds ~6 %.

    python bench/bench_enrich.py                 # latency 0.2 s, concurrency 1 8 32
    python bench/bench_enrich.py --concurrency 1 8 32 64 --rounds 8
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from clinalign.data import Record
from clinalign.enrich import EnrichConfig, aenrich, get_preset


def _records(folder: Path, n: int) -> list[Record]:
    rng = np.random.default_rng(0)
    records = []
    for i in range(n):
        path = folder / f"{i:05d}.png"
        if not path.exists():
            Image.fromarray(rng.integers(0, 255, (96, 96, 3), dtype=np.uint8)).save(path)
        records.append(Record(id=f"r{i:05d}", image=path, label="ab"[i % 2]))
    return records


def _start_server(latency: float) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "clinalign.enrich.testing", "--preset", "generic", "--latency", str(latency)],
        stdout=subprocess.PIPE,
        text=True,
    )
    url = proc.stdout.readline().strip() if proc.stdout else ""
    if not url.startswith("http"):
        proc.kill()
        raise RuntimeError("the loopback server did not start")
    return proc, url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=0.2, help="server latency per request (s)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--rounds", type=int, default=16, help="records per run = rounds x concurrency")
    args = parser.parse_args()

    os.environ.setdefault("BENCH_KEY", "sk-bench")
    logging.getLogger("clinalign.enrich").setLevel(logging.ERROR)  # the generic preset has no checklists
    preset = get_preset("generic")
    server, url = _start_server(args.latency)
    print(f"loopback server {url}, latency {args.latency * 1000:.0f} ms, {os.cpu_count()} CPUs")
    print(f"{'concurrency':>11}  {'records':>7}  {'seconds':>7}  {'records/s':>9}  {'ideal':>7}  {'ratio':>5}")
    ratios = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            images = Path(tmp) / "images"
            images.mkdir()
            all_records = _records(images, args.rounds * max(args.concurrency))
            # warm-up: imports, the openai client, the CLIP vocabulary
            warm = EnrichConfig(model="bench", base_url=url, api_key_env="BENCH_KEY", concurrency=2, progress=False)
            asyncio.run(aenrich(all_records[:2], preset, warm, Path(tmp) / "warm"))
            for concurrency in args.concurrency:
                records = all_records[: args.rounds * concurrency]
                config = warm.model_copy(update={"concurrency": concurrency})
                start = time.perf_counter()
                result = asyncio.run(aenrich(records, preset, config, Path(tmp) / f"c{concurrency}"))
                seconds = time.perf_counter() - start
                if result.succeeded != len(records):
                    raise RuntimeError(f"only {result.succeeded}/{len(records)} records succeeded")
                rate = len(records) / seconds
                ideal = concurrency / args.latency
                ratios[concurrency] = rate / ideal
                print(
                    f"{concurrency:>11}  {len(records):>7}  {seconds:>7.2f}  {rate:>9.1f}  {ideal:>7.1f}  "
                    f"{rate / ideal:>5.2f}"
                )
    finally:
        server.terminate()
        server.wait(timeout=10)
    print("ratios of ideal: " + ", ".join(f"c={c}: {r:.2f}" for c, r in ratios.items()))
    if 32 in ratios:
        verdict = "meets" if ratios[32] >= 0.8 else "misses"
        print(f"goal >= 0.80 of ideal at concurrency 32: {verdict} ({ratios[32]:.2f})")


if __name__ == "__main__":
    main()
