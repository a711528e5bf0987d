"""The CLI: --version, probe train end to end on tiny images, exit code 2 on bad input."""

from __future__ import annotations

import csv
import re

import numpy as np
import pytest
from PIL import Image

from clinalign import __version__
from clinalign.cli import main
from clinalign.probe import LinearProbe


def _run(argv: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
        raise SystemExit(0)
    captured = capsys.readouterr()
    return int(exit_info.value.code or 0), captured.out, captured.err


def _toy_manifest(root, n_per_class: int = 12) -> tuple:
    rng = np.random.default_rng(0)
    rows = []
    colours = {"red_lesion": (200, 40, 40), "white_patch": (235, 235, 235), "target": (120, 40, 160)}
    for label, colour in colours.items():
        for i in range(n_per_class):
            array = np.clip(rng.normal(colour, 25, size=(32, 32, 3)), 0, 255).astype(np.uint8)
            name = f"{label}_{i}.png"
            Image.fromarray(array).save(root / name)
            split = "train" if i < n_per_class - 3 else "test"
            rows.append({"id": f"{label}-{i}", "image": name, "label": label, "split": split, "patient_id": f"p{i}"})
    path = root / "manifest.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path, list(colours)


def test_version(capsys):
    code, out, _ = _run(["--version"], capsys)
    assert code == 0 and out.strip() == f"clinalign {__version__}"


def test_probe_train_end_to_end(tmp_path, tiny_clip_dir, capsys):
    manifest, classes = _toy_manifest(tmp_path)
    out_dir = tmp_path / "probe"
    argv = ["probe", "train", "--critic", str(tiny_clip_dir), "--manifest", str(manifest), "--out", str(out_dir)]
    code, out, err = _run([*argv, "--val-fraction", "0.25", "--epochs", "100", "--lr", "0.01"], capsys)
    assert code == 0, err
    assert "train accuracy:" in out and "val accuracy:" in out
    probe = LinearProbe.load(out_dir)
    assert probe.class_names == sorted(classes)
    assert probe.critic_name == f"transformers:{tiny_clip_dir.resolve()}"
    # flat colour classes are linearly separable even in a random critic's space
    assert probe.metrics["train_accuracy"] > 0.9
    # the embedding store (one folder per critic) holds every train and val image once
    (store,) = (out_dir / "cache").iterdir()
    n_used = sum(int(n) for n in re.findall(r"accuracy:\s+[0-9.]+ on (\d+) images", out))
    assert n_used > 0 and len((store / "keys.txt").read_text().splitlines()) == n_used
    code, out, _ = _run(["probe", "show", str(out_dir)], capsys)
    assert code == 0 and "red_lesion" in out


def test_probe_train_bad_manifest_exits_2(tmp_path, tiny_clip_dir, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("image,label\nmissing.png,a\n")
    argv = ["probe", "train", "--critic", str(tiny_clip_dir), "--manifest", str(bad), "--out", str(tmp_path / "o")]
    code, _, err = _run(argv, capsys)
    assert code == 2
    assert "bad.csv, row at line 2" in err and "missing.png" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()
    code, _, err = _run([*argv[:-4], "--manifest", str(tmp_path / "none.csv"), "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "manifest not found" in err


def test_unknown_critic_dir_exits_2(tmp_path, capsys):
    manifest, _ = _toy_manifest(tmp_path, n_per_class=8)
    argv = [
        "probe",
        "train",
        "--critic",
        str(tmp_path / "nope" / "x"),
        "--manifest",
        str(manifest),
        "--out",
        str(tmp_path / "o"),
    ]
    code, _, err = _run(argv, capsys)
    assert code == 2 and "critic directory not found" in err
