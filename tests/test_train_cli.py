"""`clinalign train` and `clinalign generate` end to end on tiny local models (the full config path:
critic rewards vdc/ccs/dd/sfs from a YAML config, held-out evaluation with a different critic)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from clinalign.cli import main


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> dict[str, Path]:
    from clinalign.testing import build_tiny_craft_assets

    return build_tiny_craft_assets(tmp_path_factory.mktemp("assets"))


def _run(argv: list[str]) -> int:
    try:
        main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def _config(assets: dict[str, Path], tmp_path: Path, **overrides) -> Path:
    values = {
        "model": str(assets["sd"]),
        "critic": str(assets["critic"]),
        "probe": str(assets["probe"]),
        "train_data": str(assets["train_data"]),
        "checklists": str(assets["checklists"]),
        "eval_data": str(assets["eval_data"]),
        "eval_critic": str(assets["evaluator"]),
        "eval_probe": str(assets["eval_probe"]),
        "eval_every": 2,
        "eval_max_prompts": 2,
        "resolution": 16,
        "num_inference_steps": 2,
        "batch_size": 2,
        "max_steps": 2,
        "checkpoint_every": 1,
        "output_dir": str(tmp_path / "run"),
        "log_with": "tensorboard",
        "progress_bar": False,
    }
    values.update(overrides)
    path = tmp_path / "craft.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def test_train_then_generate(assets, tmp_path, capsys):
    config = _config(assets, tmp_path)
    assert _run(["train", "--config", str(config)]) == 0
    run = tmp_path / "run"
    lora = run / "lora"
    assert (lora / "pytorch_lora_weights.safetensors").is_file()
    meta = json.loads((lora / "clinalign_meta.json").read_text())
    assert [r["name"] for r in meta["rewards"]] == ["vdc", "ccs", "dd", "sfs"]
    assert meta["class_names"] == ["cardiomegaly", "effusion"]  # from the DD probe
    assert len(meta["training_critics"]) == 1 and "critic" in meta["training_critics"][0]
    assert (run / "checkpoints" / "step-0000002" / "trainer_state.json").is_file()
    state = json.loads((run / "checkpoints" / "step-0000002" / "trainer_state.json").read_text())
    assert [e["step"] for e in state["eval_history"]] == [0, 2]
    assert {"eval/vdc", "eval/ccs", "eval/dd", "eval/sfs", "eval/train_critic_total"} <= set(state["eval_history"][1])

    # resume at the end is a no-op that still writes the LoRA
    assert _run(["train", "--config", str(config), "--resume", "latest"]) == 0
    assert "trained 2 steps" in capsys.readouterr().out

    out = tmp_path / "gen"
    argv = ["generate", "--model", str(assets["sd"]), "--lora", str(lora), "--prompts", str(assets["eval_data"])]
    argv += ["--n-per-prompt", "2", "--out", str(out), "--seed", "1", "--resolution", "16", "--steps", "2"]
    assert _run(argv) == 0
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert len(rows) == 8
    for row in rows:
        assert (out / row["file"]).is_file()
        assert {"file", "prompt", "label", "seed", "sample_index", "ref_id"} <= set(row)
    assert {r["ref_id"] for r in rows} == {"eval-0", "eval-1", "eval-2", "eval-3"}


def test_generate_from_txt(assets, tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("a chest x-ray\n\npleural effusion\n")
    argv = ["generate", "--model", str(assets["sd"]), "--prompts", str(prompts), "--out", str(tmp_path / "g")]
    argv += ["--resolution", "16", "--steps", "2", "--batch-size", "1"]
    assert _run(argv) == 0
    rows = [json.loads(line) for line in (tmp_path / "g" / "manifest.jsonl").read_text().splitlines()]
    assert [r["prompt"] for r in rows] == ["a chest x-ray", "pleural effusion"]
    assert all(r["label"] is None for r in rows)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"k": 5}, "`k` must be between 1 and `num_inference_steps` (2), got 5"),
        ({"rewards": ["vdc", "aesthetic"]}, "unknown reward name(s) ['aesthetic']"),
        ({"reward_weights": {"vdc": -1}}, "non-negative"),
        ({"train_data": "/no/such/train.jsonl"}, "train_data file not found"),
        ({"probe": None}, "the 'dd' reward needs `probe`"),
        ({"lamda_reward": 1}, "did you mean 'lambda_reward'"),
    ],
)
def test_train_bad_config_exit_2(assets, tmp_path, capsys, overrides, message):
    config = _config(assets, tmp_path, **overrides)
    assert _run(["train", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


def test_generate_bad_input_exit_2(assets, tmp_path, capsys):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"label": "a"}\n')
    argv = ["generate", "--model", str(assets["sd"]), "--prompts", str(prompts), "--out", str(tmp_path / "g")]
    assert _run(argv) == 2
    assert "missing 'prompt'" in capsys.readouterr().err
    argv = ["generate", "--model", str(tmp_path / "nope"), "--prompts", str(prompts), "--out", str(tmp_path / "g")]
    assert _run(argv) == 2
