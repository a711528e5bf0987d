"""Peak memory of ``score-cas`` against the number of generated rows: 20k and 200k, side by side.

Each N runs in its own subprocess (peak RSS is ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` of that
process), through the real scoring path: :func:`clinalign.scoring.report.evaluate_cas` with a tiny CLIP
evaluator and a fitted probe, an on-disk embedding store, the whole report written (per_image.csv,
tables, plots). The generated manifests point at a pool of distinct 8x8 PNGs (``--pool``, default 1000)
with 100 distinct prompts, so the encoder and text work are the same for every N and what grows with N
is the manifest and the per-image result rows.

Printed per N: peak RSS (the high-water mark is reset after the models load, through
``/proc/self/clear_refs``, so the import and loading peak does not hide the scoring's), RSS after the
models loaded (baseline), the scoring's increment, and the size
of the per-image result rows it keeps (NumPy arrays + list slots + distinct strings of ``CASScores``).
The summary line gives RSS(200k)/RSS(20k) and the increment's growth per extra row next to the
measured size of one result row: the growth is the result rows, not the manifest. For contrast, the
same is measured for :func:`clinalign.scoring.sets.read_generated_set`, which holds every row.

    python bench/bench_scoring_rss.py                    # N = 20000 and 200000
    python bench/bench_scoring_rss.py --sizes 2000 20000 # quicker
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CLASSES = {"red_lesion": (200, 40, 40), "blue_lesion": (40, 40, 200)}
N_PROMPTS = 100


def _maxrss_mib() -> float:
    # ru_maxrss is KiB on Linux (bytes on macOS)
    scale = 1 / 1024 if sys.platform != "darwin" else 1 / (1024 * 1024)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def _current_rss_mib() -> float:
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / (1024 * 1024)
    except OSError:
        return _maxrss_mib()


def _reset_peak() -> bool:
    """Reset the process's peak RSS (Linux >= 4.0), so ``ru_maxrss`` measures only what follows."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def _png(path: Path, colour: tuple[int, int, int], rng) -> None:
    import numpy as np
    from PIL import Image

    noise = rng.integers(-30, 31, size=(8, 8, 3))
    pixels = np.clip(np.asarray(colour)[None, None, :] + noise, 0, 255).astype("uint8")
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def prepare(root: Path, sizes: list[int], pool: int) -> None:
    """Tiny evaluator, probe, real set, image pool and one manifest per N under ``root``."""
    import numpy as np
    import torch

    from clinalign.critics import load_critic
    from clinalign.critics.embed import embed_image_files
    from clinalign.probe import LinearProbe
    from clinalign.testing import build_tiny_clip

    rng = np.random.default_rng(0)
    build_tiny_clip(root / "critic")
    labels = list(CLASSES)
    real_rows, train_paths, train_labels = [], [], []
    for i in range(40):
        label = labels[i % 2]
        _png(root / "real" / f"{i}.png", CLASSES[label], rng)
        real_rows.append({"id": f"r{i}", "image": f"real/{i}.png", "label": label, "t_ep": f"a {label} case {i}"})
        _png(root / "train" / f"{i}.png", CLASSES[label], rng)
        train_paths.append(root / "train" / f"{i}.png")
        train_labels.append(label)
    (root / "real.jsonl").write_text("".join(json.dumps(r) + "\n" for r in real_rows))
    checklists = {c: f"{c.replace('_', ' ')}: round, sharp border" for c in labels}
    (root / "checklists.json").write_text(json.dumps(checklists))
    critic = load_critic(root / "critic", device="cpu")
    with torch.no_grad():
        embeddings = embed_image_files(critic, train_paths, progress=False)
    LinearProbe.fit(embeddings, train_labels, labels, epochs=50, lr=0.01, critic_name=critic.name).save(root / "probe")
    for i in range(pool):
        _png(root / "pool" / f"{i:05d}.png", CLASSES[labels[i % 2]], rng)
    for n in sizes:
        folder = root / f"gen_{n}"
        folder.mkdir()
        with open(folder / "manifest.jsonl", "w") as handle:
            for i in range(n):
                label = labels[i % 2]
                prompt = f"a {label} case, variant {(i // 2) % (N_PROMPTS // 2)}"
                row = {"file": f"../pool/{i % pool:05d}.png", "prompt": prompt, "label": label, "ref_id": f"r{i % 40}"}
                handle.write(json.dumps(row) + "\n")
        (folder / "generate_config.json").write_text(json.dumps({"seed": 0}))


def _result_bytes(scores) -> int:
    """Bytes the per-image result rows of ``scores`` hold: arrays, list slots, each distinct object once."""
    seen: set[int] = set()
    total = sum(a.nbytes for a in (scores.vdc, scores.ccs, scores.dd, scores.cas) if a is not None)
    total += 0 if scores.sfs is None else scores.sfs.nbytes
    lists = [scores.labels, scores.predicted, scores.ids or [], *scores.extra.values()]
    for values in lists:
        total += 8 * len(values)
        for value in values:
            if id(value) not in seen:
                seen.add(id(value))
                total += sys.getsizeof(value)
    return total


def child(root: Path, n: int, mode: str) -> None:
    """One measurement, in its own process: prints a JSON line."""
    import torch

    torch.set_num_threads(1)
    from clinalign.critics import load_critic
    from clinalign.probe import LinearProbe
    from clinalign.scoring.report import ScoreCASConfig, evaluate_cas
    from clinalign.scoring.sets import read_checklists, read_generated_set

    evaluator = load_critic(root / "critic", device="cpu")
    probe = LinearProbe.load(root / "probe")
    baseline = _current_rss_mib()
    # the imports and model loading peak above what follows: start the high-water mark here
    reset = _reset_peak()
    start = time.perf_counter()
    result: dict[str, float] = {"n": n}
    if mode == "score":
        config = ScoreCASConfig(
            methods={"method": [str(root / f"gen_{n}")]},
            real=str(root / "real.jsonl"),
            checklists=str(root / "checklists.json"),
            evaluator=str(root / "critic"),
            probe=str(root / "probe"),
            batch_size=256,
            n_boot=20,
            n_lowest=8,
            embedding_cache=str(root / "store"),
            out=str(root / f"out_{n}"),
        )
        report = evaluate_cas(config, evaluator=evaluator, probe=probe, progress=False)
        result["result_bytes"] = _result_bytes(report.runs["method"][0].scores)
    else:
        image_set = read_generated_set(root / f"gen_{n}", checklists=read_checklists(root / "checklists.json"))
        result["rows_held"] = len(image_set)
    result.update(seconds=time.perf_counter() - start, baseline_mib=baseline, peak_mib=_maxrss_mib(), reset=reset)
    print(json.dumps(result))


def _run_child(root: Path, n: int, mode: str) -> dict[str, float]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, __file__, "--child", str(root), "--n", str(n), "--mode", mode]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs=2, default=[20_000, 200_000], metavar=("SMALL", "LARGE"))
    parser.add_argument("--pool", type=int, default=1000, help="Distinct images the manifests point at.")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="score", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(args.child, args.n, args.mode)
        return
    small, large = args.sizes
    with tempfile.TemporaryDirectory(prefix="bench_scoring_rss_") as tmp:
        root = Path(tmp)
        prepare(root, [small, large], args.pool)
        _run_child(root, small, "score")  # fills the embedding store: both measured runs read it warm
        runs = {}
        for mode in ("score", "read"):
            for n in (small, large):
                runs[mode, n] = r = _run_child(root, n, mode)
                extra = f", result rows {r['result_bytes'] / n:.0f} B/row" if mode == "score" else ""
                print(
                    f"{mode:>5} N={n:>7}: peak RSS {r['peak_mib']:7.1f} MiB "
                    f"(models loaded: {r['baseline_mib']:6.1f} MiB, increment "
                    f"{r['peak_mib'] - r['baseline_mib']:6.1f} MiB){extra}, {r['seconds']:.1f} s"
                )
    lo, hi = runs["score", small], runs["score", large]
    growth = (hi["peak_mib"] - lo["peak_mib"]) * 1024 * 1024 / (large - small)
    result_row = (hi["result_bytes"] - lo["result_bytes"]) / (large - small)
    print(
        f"score-cas: peak RSS({large}) / peak RSS({small}) = {hi['peak_mib'] / lo['peak_mib']:.2f}; growth "
        f"{growth:.0f} B per extra row vs {result_row:.0f} B per per-image result row kept "
        f"(ratio {growth / result_row:.2f})"
    )
    rs, rl = runs["read", small], runs["read", large]
    held = (rl["peak_mib"] - rs["peak_mib"]) * 1024 * 1024 / (large - small)
    print(
        f"in-memory reader (read_generated_set) for contrast: peak RSS ratio {rl['peak_mib'] / rs['peak_mib']:.2f}, "
        f"{held:.0f} B per row held"
    )


if __name__ == "__main__":
    main()
