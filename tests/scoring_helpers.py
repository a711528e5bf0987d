"""Builders for CAS tests: a tiny real test set, generated sets as `clinalign generate` writes them, a probe."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

COLOURS = {"red_lesion": (200, 40, 40), "white_patch": (235, 235, 235), "target": (120, 40, 160)}
CHECKLISTS = {
    "red_lesion": "Location: trunk; Lesion Type: plaque; Color: red; Texture: scaly",
    "white_patch": "Location: face; Lesion Type: patch; Color: white; Texture: smooth",
    "target": "Location: arm; Lesion Type: target lesion; Color: red ring with dark centre",
}


def _image(path: Path, colour, rng, noise: float = 25.0, size: int = 32) -> None:
    array = np.clip(rng.normal(colour, noise, size=(size, size, 3)), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def write_real_set(root: Path, *, n_per_class: int = 6, seed: int = 0, fmt: str = "jsonl") -> Path:
    """Real test images with an enriched prompt each; returns the manifest path (JSONL or CSV)."""
    rng = np.random.default_rng(seed)
    rows = []
    for label, colour in COLOURS.items():
        for i in range(n_per_class):
            name = f"real/{label}_{i}.png"
            _image(root / name, colour, rng)
            rows.append(
                {
                    "id": f"{label}-{i}",
                    "image": name,
                    "label": label,
                    "split": "test",
                    "t_ep": f"dermatology photo of a {label.replace('_', ' ')} on the {('arm', 'leg', 'trunk')[i % 3]}",
                }
            )
    if fmt == "csv":
        import csv

        path = root / "real.csv"
        with open(path, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        return path
    path = root / "real_enriched.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def write_generated_set(
    out: Path,
    real_manifest: Path,
    *,
    seed: int = 0,
    n_per_prompt: int = 1,
    noise: float = 40.0,
    wrong_fraction: float = 0.0,
    with_ref: bool = True,
    training_critics: list | None = None,
    lora_dir: Path | None = None,
) -> Path:
    """A directory like `clinalign generate` writes: images/, manifest.jsonl, generate_config.json.

    ``wrong_fraction`` of images get another class's colour (failures the tail should catch).
    ``training_critics`` writes a clinalign_meta.json into ``lora_dir`` (named by generate_config.json)
    or, without ``lora_dir``, beside the manifest.
    """
    rng = np.random.default_rng(1000 + seed)
    real_rows = [json.loads(line) for line in real_manifest.read_text().splitlines() if line.strip()]
    labels = list(COLOURS)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for p, real in enumerate(real_rows):
        for j in range(n_per_prompt):
            file = f"images/{p:06d}_{j:03d}.png"
            colour_label = real["label"]
            if rng.random() < wrong_fraction:
                colour_label = labels[(labels.index(real["label"]) + 1) % len(labels)]
            _image(out / file, COLOURS[colour_label], rng, noise=noise, size=48)
            row = {"file": file, "prompt": real["t_ep"], "label": real["label"], "seed": int(rng.integers(1 << 31))}
            row |= {"sample_index": j, "prompt_index": p}
            if with_ref:
                row["ref_id"] = real["id"]
            rows.append(row)
    (out / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = {"seed": seed, "n_per_prompt": n_per_prompt, "lora": None if lora_dir is None else str(lora_dir)}
    (out / "generate_config.json").write_text(json.dumps(config))
    if training_critics is not None:
        meta_dir = lora_dir if lora_dir is not None else out
        meta_dir.mkdir(parents=True, exist_ok=True)
        (meta_dir / "clinalign_meta.json").write_text(json.dumps({"training_critics": training_critics}))
    return out


def write_checklists(path: Path, fmt: str = "json") -> Path:
    if fmt == "yaml":
        import yaml

        path.write_text(yaml.safe_dump(CHECKLISTS))
    else:
        path.write_text(json.dumps(CHECKLISTS))
    return path


def train_probe_dir(critic, real_root: Path, out: Path, *, n_per_class: int = 12):
    """A probe fitted on the critic's embeddings of separate 'training' images of the same colour classes."""
    import torch

    from clinalign.critics.embed import embed_image_files
    from clinalign.probe import LinearProbe

    rng = np.random.default_rng(7)
    paths, labels = [], []
    for label, colour in COLOURS.items():
        for i in range(n_per_class):
            path = real_root / "train" / f"{label}_{i}.png"
            _image(path, colour, rng)
            paths.append(path)
            labels.append(label)
    with torch.no_grad():
        embeddings = embed_image_files(critic, paths, progress=False)
    probe = LinearProbe.fit(embeddings, labels, sorted(COLOURS), epochs=100, lr=0.01, critic_name=critic.name)
    probe.save(out)
    return probe


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    """Run ``clinalign ARGV`` in-process: (exit code, stdout, stderr)."""
    import pytest

    from clinalign.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(argv)
        raise SystemExit(0)
    captured = capsys.readouterr()
    return int(exit_info.value.code or 0), captured.out, captured.err
