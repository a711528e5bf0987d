"""`clinalign train` / `generate` flags through the real entry point: --out (--output-dir), --set, --seed,
--mixed-precision, --log-with, --no-progress, --dtype choices, and the method-labelled progress bar."""

from __future__ import annotations

import pytest
import yaml
from test_train_support import BrightnessReward, tiny_config, tiny_sd_path, toy_rows, write_toy_jsonl

from clinalign.cli import main
from clinalign.training import DraftKTrainer


def _run(argv: list[str]) -> int:
    try:
        main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


@pytest.fixture
def plain_config(tmp_path):
    """A plain-LoRA config (no critic needed) that trains one tiny step."""
    data = write_toy_jsonl(tmp_path / "data", 2)
    values = {
        "model": str(tiny_sd_path()), "train_data": str(data), "lambda_reward": 0.0, "lambda_diff": 1.0,
        "resolution": 16, "batch_size": 2, "max_steps": 1, "checkpoint_every": 0, "log_with": "tensorboard",
        "output_dir": str(tmp_path / "from-config"),
    }  # fmt: skip
    path = tmp_path / "plain.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def test_help_lists_flags_and_choices(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # no truncated option names in rich's help table
    monkeypatch.setenv("TERMINAL_WIDTH", "200")
    assert _run(["train", "--help"]) == 0
    text = capsys.readouterr().out
    for expected in ("--out", "--output-dir", "--set", "--seed", "--allow-config-change", "--no-progress"):
        assert expected in text
    assert "no|fp16|bf16" in text and "tensorboard|wandb|none" in text
    assert _run(["generate", "--help"]) == 0
    text = capsys.readouterr().out
    assert "fp32|bf16|fp16" in text and "--no-progress" in text


def test_flags_and_set_override_the_config(plain_config, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["train", "--config", str(plain_config), "--output-dir", str(out), "--seed", "7"]
    argv += ["--mixed-precision", "no", "--log-with", "none", "--no-progress"]
    argv += ["--set", "learning_rate=2e-3", "--set", "lora_targets=[to_q, to_v]", "--set", "lora_alpha=null"]
    assert _run(argv) == 0
    captured = capsys.readouterr()
    assert "LoRA baseline" not in captured.err  # --no-progress: no bar
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["output_dir"] == str(out) and saved["seed"] == 7 and saved["log_with"] == "none"
    assert saved["learning_rate"] == 2e-3 and saved["lora_targets"] == ["to_q", "to_v"]
    assert saved["lora_alpha"] is None and saved["progress_bar"] is False
    assert not (tmp_path / "from-config").exists()
    assert not (out / "logs").exists()  # --log-with none beat the config's tensorboard


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("learnig_rate=1", "unknown option 'learnig_rate'; did you mean 'learning_rate'?"),
        ("learning_rate=fast", "'learning_rate': Input should be a valid number"),
        ("lora_rank", "expected KEY=VALUE"),
        ("lora_targets=[to_q", "not valid YAML"),
        ("mixed_precision=fp8", "'mixed_precision'"),
    ],
)
def test_bad_set_exits_2_naming_the_field(plain_config, tmp_path, capsys, item, message):
    assert _run(["train", "--config", str(plain_config), "--out", str(tmp_path / "o"), "--set", item]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert err.count("invalid training config") <= 1  # the prefix is said once
    assert not (tmp_path / "o").exists()


def test_progress_bar_is_labelled_with_the_method(plain_config, tmp_path, capsys):
    assert _run(["train", "--config", str(plain_config), "--out", str(tmp_path / "o")]) == 0
    err = capsys.readouterr().err
    assert "LoRA baseline" in err and "DRaFT-K" not in err
    craft = DraftKTrainer(rewards=[BrightnessReward()], config=tiny_config(tmp_path), train_data=toy_rows(2))
    assert craft.method_label == "CRAFT (DRaFT-K)"


def test_generate_no_progress_and_dtype(tmp_path, capsys):
    prompts = tmp_path / "p.txt"
    prompts.write_text("a chest x-ray\n")
    argv = ["generate", "--model", str(tiny_sd_path()), "--prompts", str(prompts), "--resolution", "16"]
    argv += ["--steps", "2", "--dtype", "fp32"]
    assert _run([*argv, "--out", str(tmp_path / "quiet"), "--no-progress"]) == 0
    assert "generate" not in capsys.readouterr().err
    assert _run([*argv, "--out", str(tmp_path / "loud")]) == 0
    assert "generate" in capsys.readouterr().err
