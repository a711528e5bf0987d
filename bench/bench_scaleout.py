"""Scale-out, measured side by side in one run: generation images/s at 1 and 2 processes, and scoring
rows/s with a warm embedding store ÷ with a cold one.

Generation runs ``clinalign generate`` on the tiny SD pipeline through ``torchrun`` with 1 and then 2
CPU processes (one thread each) into fresh folders, and reads the per-rank throughput the command
writes to ``generate_stats.json``; the ratio is the 2-process set rate ÷ the 1-process one (images over
the slowest rank's time). On a 2-core machine shared with other jobs, expect well under 2.

Scoring runs ``evaluate_cas`` twice on the same synthetic sets with one embedding store: the first run
(cold) encodes every image, the second (warm) reads the embeddings back from the memory-mapped store
and only encodes texts (cached) and computes the primitives. Both write the full report.

    python bench/bench_scaleout.py                 # 16 prompts x 2 images at 32 px; 64 scored images at 224 px
    python bench/bench_scaleout.py --prompts 32 --score-n 128
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _generate(nproc: int, sd: Path, prompts: Path, out: Path, args: argparse.Namespace) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "true", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc)]
    cmd += ["--master_port", str(_free_port()), "-m", "clinalign", "generate", "--model", str(sd)]
    cmd += ["--prompts", str(prompts), "--out", str(out), "--n-per-prompt", "2", "--resolution", str(args.resolution)]
    cmd += ["--steps", str(args.steps), "--batch-size", str(args.batch_size), "--no-progress", "--device", "cpu"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-3000:])
    stats = json.loads((out / "generate_stats.json").read_text())
    slowest = max(rank["seconds"] for rank in stats["ranks"])
    for rank in stats["ranks"]:
        print(f"  {nproc} proc, rank {rank['rank']}: {rank['images']} images, {rank['images_per_second']:.2f} images/s")
    return stats["generated"] / slowest


def bench_generation(args: argparse.Namespace, tmp: Path) -> None:
    from clinalign.testing import build_tiny_sd

    sd = build_tiny_sd(tmp / "sd")
    prompts = tmp / "prompts.txt"
    prompts.write_text("".join(f"a chest x-ray, finding {i}\n" for i in range(args.prompts)))
    one = _generate(1, sd, prompts, tmp / "gen1", args)
    two = _generate(2, sd, prompts, tmp / "gen2", args)
    same = all(
        (tmp / "gen1" / "images" / p.name).read_bytes() == p.read_bytes() for p in (tmp / "gen2" / "images").iterdir()
    )
    print(f"generation: 1 process {one:.2f} images/s, 2 processes {two:.2f} images/s")
    print(f"generation speed-up 2 proc / 1 proc: {two / one:.2f}x (images bit-identical: {same})")


def bench_scoring(args: argparse.Namespace, tmp: Path) -> None:
    import numpy as np
    import torch
    from PIL import Image

    from clinalign.critics import load_critic
    from clinalign.critics.embed import embed_image_files
    from clinalign.probe import LinearProbe
    from clinalign.scoring.report import ScoreCASConfig, evaluate_cas
    from clinalign.testing import build_tiny_clip

    torch.set_num_threads(args.threads)
    critic = load_critic(build_tiny_clip(tmp / "clip", image_size=224, patch_size=32, hidden_size=256, layers=4))
    rng = np.random.default_rng(0)
    classes = ["a", "b"]
    real_rows, gen_rows = [], []
    (tmp / "real").mkdir()
    (tmp / "gen" / "images").mkdir(parents=True)
    for i in range(args.score_n):
        label = classes[i % 2]
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(tmp / "real" / f"{i}.png")
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(tmp / "gen" / "images" / f"{i}.png")
        real_rows.append({"id": f"r{i}", "image": f"real/{i}.png", "label": label, "t_ep": f"finding {i}"})
        gen_rows.append({"file": f"images/{i}.png", "prompt": f"finding {i}", "label": label, "ref_id": f"r{i}"})
    (tmp / "real.jsonl").write_text("".join(json.dumps(r) + "\n" for r in real_rows))
    (tmp / "gen" / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in gen_rows))
    (tmp / "checklists.json").write_text(json.dumps({c: f"checklist {c}" for c in classes}))
    real_paths = [tmp / "real" / f"{i}.png" for i in range(args.score_n)]
    emb = embed_image_files(critic, real_paths, progress=False)
    LinearProbe.fit(emb, [r["label"] for r in real_rows], classes, epochs=5, critic_name=critic.name,
                    critic_fingerprint=critic.fingerprint).save(tmp / "probe")  # fmt: skip
    probe = LinearProbe.load(tmp / "probe")

    def run(name: str) -> float:
        config = ScoreCASConfig(
            methods={"m": [str(tmp / "gen")]}, real=str(tmp / "real.jsonl"), checklists=str(tmp / "checklists.json"),
            evaluator=critic.name, probe=str(tmp / "probe"), n_boot=50, n_lowest=0, out=str(tmp / name),
            embedding_cache=str(tmp / "store"), batch_size=32,
        )  # fmt: skip
        calls = critic.image_encoder_calls
        start = time.perf_counter()
        evaluate_cas(config, evaluator=critic, probe=probe, progress=False)
        seconds = time.perf_counter() - start
        print(
            f"  {name}: {2 * args.score_n} rows in {seconds:.2f} s, {critic.image_encoder_calls - calls} encoder calls"
        )
        return 2 * args.score_n / seconds

    cold = run("cold")
    warm = run("warm")
    print(f"scoring: cold {cold:.1f} rows/s, warm {warm:.1f} rows/s; warm / cold: {warm / cold:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--score-n", type=int, default=64, help="real and generated images each")
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--skip-generation", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_generation:
            bench_generation(args, Path(tmp))
        bench_scoring(args, Path(tmp))


if __name__ == "__main__":
    main()
