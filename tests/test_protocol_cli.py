"""`--protocol craft-paper` through the real CLI: enrich -> split.json -> probe train -> score-cas checks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from cli_support import run
from PIL import Image

from clinalign.enrich import get_preset
from clinalign.enrich.testing import LoopbackServer, valid_reply_handler
from clinalign.probe import LinearProbe
from clinalign.protocols.commands import scoring_settings

CODES = {"adenosis": ("B", "A"), "ductal carcinoma": ("M", "DC")}


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLINALIGN_TEST_KEY", "sk-protocol-test")
    monkeypatch.delenv("CLINALIGN_TRACEBACK", raising=False)


def _breakhis(root: Path, patients: int = 8, per_patient: int = 3) -> Path:
    """A BreakHis-shaped folder tree: benign|malignant/SOB/<subtype>/<slide>/<mag>/SOB_..png (100X and 40X)."""
    rng = np.random.default_rng(0)
    for p in range(patients):
        label = "adenosis" if p % 2 else "ductal carcinoma"
        kind, code = CODES[label]
        slide = f"SOB_{kind}_{code}_14-{2000 + p}AB"
        for mag in ("100X", "40X"):
            folder = root / ("benign" if kind == "B" else "malignant") / "SOB" / label.replace(" ", "_") / slide / mag
            folder.mkdir(parents=True, exist_ok=True)
            for k in range(per_patient):
                colour = (200, 80, 160) if kind == "B" else (90, 40, 140)
                array = np.clip(rng.normal(colour, 20, size=(32, 32, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(array).save(folder / f"SOB_{kind}_{code}-14-{2000 + p}AB-{mag[:-1]}-{k:03d}.png")
    return root


def test_enrich_probe_and_score_settings_follow_one_split(tmp_path, tiny_clip_dir, capsys):
    data = _breakhis(tmp_path / "BreaKHis_v1")
    out = tmp_path / "out"
    preset = get_preset("breakhis_craft_paper")
    with LoopbackServer(valid_reply_handler(preset)) as server:
        args = ["enrich", "--dataset", "breakhis", "--data-root", str(data), "--protocol", "craft-paper"]
        args += ["--classes", "adenosis", "--classes", "ductal carcinoma", "--model", "m", "--base-url", server.url]
        args += ["--api-key-env", "CLINALIGN_TEST_KEY", "--out", str(out), "--no-progress"]
        code, stdout, err = run(args, capsys)
    assert code == 0, err
    assert "protocol craft-paper: test 12" in err and "train 12" in err
    split = json.loads((out / "split.json").read_text())
    assert split["protocol"] == "craft-paper" and split["dataset"] == "breakhis"
    assert split["counts"] == {
        "test": {"adenosis": 6, "ductal carcinoma": 6},
        "train": {"adenosis": 6, "ductal carcinoma": 6},
    }
    assert split["design"]["split"]["grouped_by"] == "breakhis-filename"
    rows = [json.loads(line) for line in (out / "enriched.jsonl").read_text().splitlines()]
    assert len(rows) == 24 and {r["preset"] for r in rows} == {"breakhis_craft_paper"}
    assert all("/100X/" in r["image"] for r in rows)  # 100x only
    patients = {}
    for r in rows:
        patients.setdefault(Path(r["image"]).parent.parent.name, set()).add(r["split"])
        assert r["id"] in split["ids"][r["split"]]
        assert r["t_ep"].startswith(f"H&E breast histopathology at 100x, {r['label']}")
    assert all(len(s) == 1 for s in patients.values())
    # the protocol's critic limit (64) applies to t_ep when no critic tokenizer is given
    config = json.loads((out / "enrich_config.json").read_text())
    assert config["critic_max_tokens"] == 64

    # training reads the same split: train_split keeps the split.json's train ids
    from clinalign.training.data import load_examples

    train_rows = load_examples(out / "enriched.jsonl", split="train")
    assert sorted(e.id for e in train_rows) == split["ids"]["train"]
    assert all(e.prompt.startswith("H&E breast histopathology") for e in train_rows)

    # probe train --protocol: the split.json's train ids, no validation hold-out
    probe_dir = tmp_path / "probe"
    argv = ["probe", "train", "--critic", str(tiny_clip_dir), "--manifest", str(out / "enriched.jsonl")]
    code, stdout, err = run([*argv, "--out", str(probe_dir), "--protocol", "craft-paper", "--epochs", "50"], capsys)
    assert code == 0, err
    assert "on 12 images" in stdout and "val accuracy:   n/a" in stdout
    assert LinearProbe.load(probe_dir).class_names == ["adenosis", "ductal carcinoma"]
    code, _, err = run([*argv, "--out", str(tmp_path / "p2"), "--protocol", "craft-paper", "--epochs", "10"], capsys)
    assert code == 2 and "--epochs 10 contradicts --protocol craft-paper (50)" in err

    # score-cas settings: the test split of split.json, checked against the real rows
    settings = scoring_settings(
        "craft-paper", out / "enriched.jsonl", real_split=None, dd_mode="accuracy", tau_quantile=0.25
    )
    assert settings == {"real_split": "test", "dd_mode": "accuracy", "tau_quantile": 0.25}
    edited = json.loads((out / "split.json").read_text())
    edited["ids"]["test"] = edited["ids"]["test"][1:]
    (out / "split.json").write_text(json.dumps(edited))
    score = ["score-cas", "--real", str(out / "enriched.jsonl"), "--evaluator", str(tiny_clip_dir)]
    score += ["--probe", str(probe_dir), "--generated", str(out), "--out", str(tmp_path / "cas")]
    code, _, err = run([*score, "--protocol", "craft-paper"], capsys)
    assert code == 2 and "differ from" in err and "split.json" in err


def test_protocol_errors_exit_2(tmp_path, capsys):
    data = _breakhis(tmp_path / "bh", patients=2, per_patient=1)
    base = ["enrich", "--dataset", "breakhis", "--data-root", str(data), "--protocol", "craft-paper", "--dry-run"]
    code, _, err = run([*base, "--magnification", "40X"], capsys)
    assert code == 2 and "contradicts protocol 'craft-paper'" in err
    code, _, err = run([*base, "--preset", "breakhis"], capsys)
    assert code == 2 and "--preset breakhis contradicts --protocol craft-paper" in err
    code, _, err = run(
        ["enrich", "--dataset", "generic", "--manifest", "x.csv", "--protocol", "craft-paper", "--dry-run"], capsys
    )
    assert code == 2 and "covers the datasets" in err
    code, _, err = run(
        ["enrich", "--dataset", "origa", "--data-root", str(tmp_path), "--protocol", "nope", "--dry-run"], capsys
    )
    assert code == 2 and "unknown protocol 'nope'" in err


def test_checklists_protocol_lists_the_paper_classes(capsys):
    code, out, err = run(["checklists", "--dataset", "fitzpatrick17k", "--protocol", "craft-paper"], capsys)
    assert code == 0, err
    for name in ("actinic keratosis (built-in)", "eczema (built-in)", "erythema multiforme (built-in)", "scabies"):
        assert name in out
    block = out.split("erythema multiforme (built-in)")[1].split("\n\n")[0]
    assert "Texture:" not in block and "Color:" in block
