"""One artifact-metadata type from training through generation to scoring; the reward registry; `train` dispatch."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml
from test_train_support import tiny_config, tiny_sd_path, toy_rows, write_toy_jsonl

from clinalign.artifacts import ArtifactMeta
from clinalign.errors import ConfigError


def _run(argv: list[str], capsys) -> tuple[int, str, str]:
    from clinalign.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(argv)
        raise SystemExit(0)
    captured = capsys.readouterr()
    return int(exit_info.value.code or 0), captured.out, captured.err


def test_train_generate_score_leakage_fires_for_a_local_copy_of_the_critic(tmp_path, tiny_clip_dir, capsys):
    """The real path: a trainer builds its rewards from `critic`, `generate` uses the LoRA, scoring with the
    training critic (here a copy at another path, so its name differs) warns about leakage."""
    from clinalign.critics import load_critic
    from clinalign.scoring.sets import check_leakage, read_generated_set
    from clinalign.training import DraftKTrainer

    cfg = tiny_config(
        tmp_path, critic=str(tiny_clip_dir), rewards=["vdc"], max_steps=1, repeats=1, num_inference_steps=2
    )
    out = DraftKTrainer(config=cfg, train_data=toy_rows(2)).train()
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(
        "".join(json.dumps({"prompt": r["prompt"], "label": r["label"], "checklist": "x"}) + "\n" for r in toy_rows(2))
    )
    gen = tmp_path / "gen"
    code, _, err = _run(
        ["generate", "--model", str(tiny_sd_path()), "--lora", str(out.lora_dir), "--prompts", str(prompts),
         "--out", str(gen), "--resolution", "16", "--steps", "2", "--no-progress"],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    copy = shutil.copytree(tiny_clip_dir, tmp_path / "elsewhere" / "critic_copy")
    evaluator = load_critic(copy, device="cpu")
    trained_name = load_critic(tiny_clip_dir, device="cpu").name
    assert evaluator.name != trained_name  # only the fingerprint can tell they are the same model
    message = check_leakage(evaluator, read_generated_set(gen))
    assert message is not None and "EVALUATION LEAKAGE" in message
    # the images carry the metadata themselves: moving the LoRA away does not hide the leak
    shutil.rmtree(out.lora_dir)
    assert check_leakage(evaluator, read_generated_set(gen)) is not None
    # another critic is not flagged
    from clinalign.testing import build_tiny_clip

    other = load_critic(build_tiny_clip(tmp_path / "other_clip", seed=7), device="cpu")
    assert check_leakage(other, read_generated_set(gen)) is None


def test_artifact_meta_round_trip_keeps_unknown_keys_and_reads_both_critic_fields(tmp_path):
    data = {
        "_class_name": "DraftKTrainer",
        "training_critics": ["a", "b"],
        "training_critic_identities": [{"name": "a", "fingerprint": "f" * 16}],
        "steps": 3,
        "future_field": {"x": 1},
    }
    meta = ArtifactMeta.from_dict(data)
    assert meta.critic_records() == [{"name": "a", "fingerprint": "f" * 16}, "b"]
    meta.save(tmp_path)
    again = ArtifactMeta.load(tmp_path)
    assert again is not None and again.to_dict() == meta.to_dict()
    assert again.to_dict()["future_field"] == {"x": 1} and again.trainer == "DraftKTrainer"
    assert ArtifactMeta.load(tmp_path / "missing") is None


def test_reward_registry_one_entry_adds_a_reward(tmp_path, tiny_clip_dir):
    from clinalign.rewards import registry
    from clinalign.rewards.registry import build_rewards, register_reward

    class Constant:
        name = "constant"

        def __init__(self, critic):
            self.critic = critic

        def __call__(self, images, batch):
            return images.mean(dim=(1, 2, 3)) * 0 + 1

    register_reward("constant", lambda critic, probe: Constant(critic))
    try:
        cfg = tiny_config(tmp_path, critic=str(tiny_clip_dir), rewards=["vdc", "constant"])
        built = build_rewards(cfg.rewards, critic=cfg.critic, probe=None)
        assert [r.name for r in built] == ["vdc", "constant"] and built[1].critic is built[0].critic
        with pytest.raises(ConfigError, match="already registered"):
            register_reward("constant", lambda critic, probe: Constant(critic))
    finally:
        registry._REGISTRY.pop("constant", None)
    with pytest.raises(ConfigError, match="unknown reward name"):
        tiny_config(tmp_path, rewards=["constant"])
    with pytest.raises(ConfigError, match="needs a probe"):
        build_rewards(["dd"], critic=str(tiny_clip_dir), probe=None)


def test_train_cli_dispatches_on_method(tmp_path, capsys):
    data = write_toy_jsonl(tmp_path / "data", 4)
    config = {
        "method": "ti",
        "model": str(tiny_sd_path()),
        "train_data": str(data),
        "placeholder_tokens": {"cardiomegaly": "<c>", "effusion": "<e>"},
        "initializer_token": "a",
        "resolution": 16,
        "num_inference_steps": 2,
        "batch_size": 2,
        "max_steps": 1,
        "log_with": "none",
        "checkpoint_every": 0,
        "progress_bar": False,
        "output_dir": str(tmp_path / "ti"),
    }
    path = tmp_path / "ti.yaml"
    path.write_text(yaml.safe_dump(config))
    code, stdout, err = _run(["train", "--config", str(path), "--set", "num_vectors=2"], capsys)
    assert code == 0, err
    meta = json.loads((tmp_path / "ti" / "textual_inversion" / "clinalign_meta.json").read_text())
    assert meta["_class_name"] == "TextualInversionTrainer" and meta["config"]["num_vectors"] == 2
    assert "artifact written to" in stdout
    path.write_text(yaml.safe_dump({**config, "method": "bogus"}))
    code, _, err = _run(["train", "--config", str(path)], capsys)
    assert code == 2 and "unknown `method: bogus`" in err
    path.write_text(yaml.safe_dump({**config, "lambda_reward": 0.5}))
    code, _, err = _run(["train", "--config", str(path)], capsys)
    assert code == 2 and "lambda_reward" in err


@pytest.mark.parametrize(
    ("name", "cls", "method"),
    [("ti", "TIConfig", "ti"), ("ti_lora", "TrainConfig", "ti_lora"), ("dpo", "DPOConfig", "dpo"),
     ("craft", "TrainConfig", "craft")],
)  # fmt: skip
def test_table1_example_configs_load_through_the_dispatcher(name, cls, method):
    from pathlib import Path

    from clinalign.training import load_train_config

    path = Path(__file__).resolve().parents[1] / "examples" / f"table1_chexpert_{name}.yaml"
    config = load_train_config(path)
    assert type(config).__name__ == cls and config.method == method
    assert config.eval_critic == "google/siglip-base-patch16-224" and config.resolution == 512
    if name == "dpo":
        assert config.beta == 5000
    if name in ("ti_lora", "craft"):
        assert config.textual_inversion == "runs/chexpert/ti/textual_inversion"
