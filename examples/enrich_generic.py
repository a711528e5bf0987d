"""Enrich a small labelled image set offline, end to end.

Builds a tiny dermatology-like image set with a generic manifest, serves an OpenAI-compatible endpoint
on 127.0.0.1 that replies with valid JSON (clinalign.enrich.testing), and runs the same enrichment a
real endpoint would get: dry run, enrichment, resume, checklists. Swap the loopback URL for your vLLM /
Ollama / OpenAI endpoint and model name to do it for real.

    python examples/enrich_generic.py [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from clinalign.data import load_dataset, patient_split
from clinalign.enrich import EnrichConfig, builtin_checklists, dry_run, enrich, get_preset
from clinalign.enrich.testing import LoopbackServer, valid_reply_handler


def make_dataset(folder: Path, n: int = 12) -> Path:
    """Draw n small 'lesion' photos (two classes) and write manifest.csv next to them."""
    rng = np.random.default_rng(0)
    rows = ["image,label,patient_id"]
    for i in range(n):
        label = "psoriasis" if i % 2 else "vitiligo"
        skin = tuple(int(c) for c in rng.integers(120, 220, 3))
        image = Image.new("RGB", (128, 128), skin)
        colour = (200, 60, 60) if label == "psoriasis" else (245, 245, 240)
        radius = int(rng.integers(20, 40))
        ImageDraw.Draw(image).ellipse((64 - radius, 64 - radius, 64 + radius, 64 + radius), fill=colour)
        image.save(folder / f"img{i:02d}.png")
        rows.append(f"img{i:02d}.png,{label},patient{i // 3}")
    manifest = folder / "manifest.csv"
    manifest.write_text("\n".join(rows) + "\n")
    return manifest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: a temporary folder)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="clinalign-enrich-"))
    out = args.out or work / "enriched"
    manifest = make_dataset(work)

    data = load_dataset("generic", manifest=manifest)
    records = patient_split(data.records, {"train": 0.75, "test": 0.25}, seed=0)  # no patient in two splits
    train = [r for r in records if r.split == "train"]
    print(f"{data.summary()}; {len(train)} in train")

    # the fitzpatrick17k preset: closed vocabularies, word limits, label rules, built-in checklists
    preset = get_preset("fitzpatrick17k")
    os.environ.setdefault("EXAMPLE_KEY", "sk-example-not-a-real-key")
    with LoopbackServer(valid_reply_handler(preset.with_classes(["psoriasis", "vitiligo"]))) as server:
        config = EnrichConfig(model="demo-model", base_url=server.url, api_key_env="EXAMPLE_KEY", concurrency=4)
        print(dry_run(train, preset, config)[:1200], "...\n")
        result = enrich(train, preset, config, out)
        print(result.summary_table())
        again = enrich(train, preset, config, out)  # a rerun resumes: nothing left to do
        print(f"rerun: {again.already_done} already done, {again.succeeded} new")

    first = json.loads((out / "enriched.jsonl").read_text().splitlines()[0])
    print(f"\nt_ep ({first['label']}): {first['t_ep']}\nt_c: {first['t_c']}")
    print("\n" + builtin_checklists(preset, ["psoriasis"]).format())
    print(f"outputs in {out}")


if __name__ == "__main__":
    main()
