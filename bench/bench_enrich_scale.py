"""Peak memory of export/import enrichment vs the number of records (issue #15: it must not grow with N).

Two parts, each run in fresh subprocesses per N:

``library``: for each N (default 10,000 and 100,000) synthetic records are streamed from a generator (one tiny image
shared by all, labels cycling over the chexpert classes) through ``clinalign enrich --mode export``'s library
function in a fresh subprocess; the request files are then answered line by line with the loopback server's
fake model (:func:`clinalign.enrich.testing.valid_reply_handler`, as an engine such as vLLM ``run_batch``
would) and imported in another fresh subprocess. Each subprocess reports its peak RSS
(``resource.getrusage``). The ratios RSS(N_max)/RSS(N_min) are printed side by side; ~1 means memory does
not grow with N (the baseline is the interpreter with pydantic, openai and the preset loaded: ~100 MB).

``cli``: the whole ``clinalign enrich --dataset generic --manifest M.csv --mode export`` command on a
synthetic manifest of N rows (``image,label,patient_id``; two records per patient). The generic loader
checks that every image file exists (it does not open them) and the export reads each image to embed it
in its request, so every row points to its own file name: a hard link to one 16x16 PNG (N directory
entries, one file's data). Three variants: ``stream`` (the CLI as it is: the dataset read row by row),
``split`` (the same with ``--split-fractions train=0.8,val=0.1,test=0.1``: one entry per patient for the
seeded split and the ids/labels written to split.json are kept, so memory grows with N by design) and
``list`` (the same command with the selected records collected into a list before the export, what the
CLI did before it streamed: the contrast).

    python bench/bench_enrich_scale.py                    # 10k and 100k records, both parts
    python bench/bench_enrich_scale.py --sizes 2000 20000 # quicker
    python bench/bench_enrich_scale.py --part cli
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CLASSES = ["Cardiomegaly", "Pleural Effusion", "Pneumonia", "No Finding"]

_CHILD = r"""
import json, resource, sys, time
from pathlib import Path
from clinalign.data import Record
from clinalign.enrich import EnrichConfig, get_preset
from clinalign.enrich.batch import export_requests, import_output

step, folder, n = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
classes = json.loads(sys.argv[4])
config = EnrichConfig(model="loopback", base_url="http://127.0.0.1:9/v1", progress=False)
preset = get_preset("chexpert")
image = folder / "tiny.png"


def records():  # a generator: nothing holds all records
    for i in range(n):
        yield Record(id=f"s{i:07d}", image=image, label=classes[i % len(classes)])


start = time.perf_counter()
if step == "export":
    files, counts = export_requests(records(), preset, config, folder / "out")
    detail = {"files": len(files), "counts": counts}
else:
    outputs = sorted(folder.glob("output-*.jsonl"))
    result, counts = import_output(outputs, preset, config, folder / "out")
    detail = {"counts": counts}
peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"peak_mib": peak_kib / 1024, "seconds": time.perf_counter() - start, **detail}))
"""


_CLI_CHILD = r"""
import json, resource, sys, time
variant, argv = sys.argv[1], json.loads(sys.argv[2])
if variant == "list":  # the contrast: the selected records held in a list before the export
    import clinalign.enrich.batch as batch

    streaming_export = batch.export_requests

    def export_from_list(records, *args, **kwargs):
        return streaming_export(list(records), *args, **kwargs)

    batch.export_requests = export_from_list
from clinalign.cli import main

start = time.perf_counter()
try:
    main(argv)
except SystemExit as exc:
    if exc.code:
        raise
peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print("\n" + json.dumps({"peak_mib": peak_kib / 1024, "seconds": time.perf_counter() - start}))
"""

CLI_VARIANTS = ("stream", "split", "list")


def _cli_child(variant: str, folder: Path, n: int) -> dict:
    out = folder / f"out-{variant}"
    argv = ["enrich", "--dataset", "generic", "--manifest", str(folder / "manifest.csv"), "--model", "loopback"]
    argv += ["--base-url", "http://127.0.0.1:9/v1", "--mode", "export", "--no-progress", "--out", str(out)]
    if variant == "split":
        argv += ["--split-fractions", "train=0.8,val=0.1,test=0.1"]
    proc = subprocess.run(
        [sys.executable, "-c", _CLI_CHILD, variant, json.dumps(argv)], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise SystemExit(f"clinalign enrich ({variant}) with {n} records failed:\n{proc.stderr}")
    lines = 0
    for path in (out / "batch").glob("requests-*.jsonl"):
        with open(path, "rb") as handle:
            lines += sum(1 for _ in handle)
    if lines != n:
        raise SystemExit(f"clinalign enrich ({variant}) with {n} records wrote {lines} requests")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _synthetic_manifest(folder: Path, n: int) -> None:
    """N rows, each with its own image file name (hard links to one tiny PNG), two records per patient."""
    from PIL import Image

    images = folder / "img"
    images.mkdir(parents=True)
    with open(folder / "manifest.csv", "w", encoding="utf-8") as handle:
        handle.write("image,label,patient_id\n")
        for i in range(n):
            source = folder / f"tiny-{i // 50_000}.png"  # a file takes at most 65,000 links (ext4)
            if not source.is_file():
                Image.new("RGB", (16, 16), (120, 80, 60)).save(source)
            os.link(source, images / f"{i:07d}.png")
            handle.write(f"img/{i:07d}.png,{CLASSES[i % len(CLASSES)]},p{i // 2:07d}\n")


def run_cli(sizes: list[int]) -> None:
    results: dict[str, list[tuple[int, dict]]] = {v: [] for v in CLI_VARIANTS}
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            folder = Path(tmp) / f"cli{n}"
            _synthetic_manifest(folder, n)
            for variant in CLI_VARIANTS:
                measured = _cli_child(variant, folder, n)
                results[variant].append((n, measured))
                peak, seconds = measured["peak_mib"], measured["seconds"]
                print(f"CLI {variant:>6}, N={n:>8,}: peak RSS {peak:.1f} MiB ({seconds:.1f} s)", flush=True)
            shutil.rmtree(folder)
    n0, n1 = sizes[0], sizes[-1]
    shown = ", ".join(f"{v} {rows[-1][1]['peak_mib'] / rows[0][1]['peak_mib']:.3f}" for v, rows in results.items())
    print(f"CLI RSS({n1:,})/RSS({n0:,}): {shown} (records x{n1 / n0:g}; ~1 means memory does not grow with N)")


def _child(step: str, folder: Path, n: int) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, step, str(folder), str(n), json.dumps(CLASSES)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"{step} with {n} records failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _engine(folder: Path) -> int:
    """Answer every request line with the fake model, streaming (what run_batch does with a real model)."""
    from clinalign.enrich import get_preset
    from clinalign.enrich.testing import valid_reply_handler

    handler = valid_reply_handler(get_preset("chexpert"))
    n = 0
    for number, path in enumerate(sorted((folder / "out" / "batch").glob("requests-*.jsonl"))):
        with open(path, encoding="utf-8") as src, open(folder / f"output-{number:05d}.jsonl", "w") as dst:
            for line in src:
                request = json.loads(line)
                body = handler(request["body"], n).body
                dst.write(
                    json.dumps({"custom_id": request["custom_id"], "response": {"status_code": 200, "body": body}})
                )
                dst.write("\n")
                n += 1
    return n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--part", choices=["all", "library", "cli"], default="all")
    args = parser.parse_args()
    if args.part in ("all", "library"):
        run_library(args.sizes)
    if args.part in ("all", "cli"):
        run_cli(args.sizes)


def run_library(sizes: list[int]) -> None:
    from PIL import Image

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            folder = Path(tmp) / f"n{n}"
            folder.mkdir()
            Image.new("RGB", (16, 16), (120, 80, 60)).save(folder / "tiny.png")
            exported = _child("export", folder, n)
            started = time.perf_counter()
            answered = _engine(folder)
            engine_s = time.perf_counter() - started
            imported = _child("import", folder, n)
            if imported["counts"] != {"validated": n} or answered != n:
                raise SystemExit(f"N={n}: not every record was validated: {imported['counts']}")
            rows.append((n, exported, imported, engine_s))
            print(
                f"N={n:>8,}: export peak RSS {exported['peak_mib']:.1f} MiB ({exported['seconds']:.1f} s, "
                f"{exported['files']} request file(s)); import peak RSS {imported['peak_mib']:.1f} MiB "
                f"({imported['seconds']:.1f} s); fake engine {engine_s:.1f} s",
                flush=True,
            )
    (n0, e0, i0, _), (n1, e1, i1, _) = rows[0], rows[-1]
    print(
        f"RSS({n1:,})/RSS({n0:,}): export {e1['peak_mib'] / e0['peak_mib']:.3f}, "
        f"import {i1['peak_mib'] / i0['peak_mib']:.3f} (records x{n1 / n0:g}; ~1 means memory does not grow with N)"
    )


if __name__ == "__main__":
    main()
