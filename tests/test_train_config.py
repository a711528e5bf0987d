"""TrainConfig: paper defaults, YAML/JSON round trips, clear errors for bad values."""

from __future__ import annotations

import pytest

from clinalign.errors import ConfigError
from clinalign.training import TrainConfig
from clinalign.training.data import MicroBatchOrder, class_names_for, load_checklists, load_examples


def test_paper_defaults():
    cfg = TrainConfig()
    assert (cfg.k, cfg.repeats, cfg.num_inference_steps) == (1, 2, 20)
    assert (cfg.lambda_diff, cfg.lambda_reward, cfg.batch_size) == (0.2, 0.8, 4)
    assert cfg.rewards == ["vdc", "ccs", "dd", "sfs"]
    assert cfg.resolution == 512 and cfg.num_epochs == 10
    assert cfg.lora_targets == ["to_q", "to_k", "to_v", "to_out.0"]


def test_fields_documented_and_ordered_by_phase():
    fields = list(TrainConfig.model_fields)
    for name, info in TrainConfig.model_fields.items():
        assert info.description, f"{name} has no description"
    order = ["model", "train_data", "resolution", "num_inference_steps", "lambda_diff", "lora_rank"]
    order += ["learning_rate", "mixed_precision", "output_dir", "checkpoint_every", "eval_every"]
    positions = [fields.index(n) for n in order]
    assert positions == sorted(positions)


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_roundtrip(tmp_path, suffix):
    cfg = TrainConfig(k=3, num_inference_steps=10, reward_weights={"vdc": 2.0}, lora_targets=["to_q"])
    path = cfg.save(tmp_path / f"c{suffix}")
    assert TrainConfig.from_file(path) == cfg
    assert TrainConfig.from_file(path, k=2).k == 2


@pytest.mark.parametrize(
    ("values", "match"),
    [
        ({"k": 30}, r"`k` must be between 1 and `num_inference_steps` \(20\), got 30"),
        ({"k": 0}, "'k'"),
        ({"lambda_diff": -0.1}, "'lambda_diff'"),
        ({"lambda_diff": 0, "lambda_reward": 0}, "nothing to train"),
        ({"reward_weights": {"vdc": -1.0}}, "non-negative"),
        ({"rewards": ["vdc", "clip_score"]}, r"unknown reward name\(s\) \['clip_score'\]"),
        ({"rewards": ["vdc", "vdc"]}, "twice"),
        ({"resolution": 500}, "multiple of 8"),
        ({"lamda_diff": 0.1}, "did you mean 'lambda_diff'"),
        ({"mixed_precision": "fp8"}, "'mixed_precision'"),
        ({"lora_targets": []}, "lora_targets"),
        ({"lora_dropout": 1.0}, "'lora_dropout'"),
    ],
)
def test_bad_values(values, match):
    with pytest.raises(ConfigError, match=match):
        TrainConfig(**values)


def test_assignment_is_validated():
    cfg = TrainConfig()
    with pytest.raises(ConfigError, match="`k` must be between"):
        cfg.k = 50


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        TrainConfig.from_file(tmp_path / "none.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("k: 40\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*`k` must be between"):
        TrainConfig.from_file(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        TrainConfig.from_file(listy)


@pytest.mark.parametrize(
    ("values", "match"),
    [
        ({}, "need a training critic"),
        ({"critic": "x", "rewards": ["vdc", "dd"]}, "needs `probe`"),
        ({"critic": "x", "rewards": ["vdc"], "reward_weights": {"sfs": 1.0}}, r"not in `rewards`"),
        ({"rewards": []}, "`rewards` is empty"),
    ],
)
def test_reward_options(values, match):
    with pytest.raises(ConfigError, match=match):
        TrainConfig(**values).check_reward_options(rewards_given=False)


def test_same_evaluator_warns():
    cfg = TrainConfig(critic="google/siglip-x", probe="p", eval_critic="google/siglip-x")
    with pytest.warns(UserWarning, match="cannot reveal reward hacking"):
        cfg.check_reward_options(rewards_given=False)


def test_checklists_and_templates(tmp_path):
    path = tmp_path / "checklists.yaml"
    path.write_text("checklists:\n  a:\n    Location: left\n    Color: red\n  b: plain text\n")
    checklists = load_checklists(path)
    assert checklists == {"a": "Location: left; Color: red", "b": "plain text"}
    written = tmp_path / "checklists.json"  # the layout `clinalign checklists` writes
    written.write_text(
        '{"checklists": {"a": {"attributes": {"Location": "left"}, "t_c": "left, red", "source": "builtin"}},'
        ' "failures": {}, "missing": []}'
    )
    assert load_checklists(written) == {"a": "left, red"}
    from PIL import Image

    image = Image.new("RGB", (8, 8))
    with pytest.warns(UserWarning, match="prompt_template"):
        rows = load_examples([{"image": image, "label": "a"}], checklists=checklists, prompt_template="x-ray, {label}")
    assert rows[0].prompt == "x-ray, a" and rows[0].checklist == "Location: left; Color: red"


def test_class_names():
    from PIL import Image

    image = Image.new("RGB", (8, 8))
    rows = load_examples([{"image": image, "label": lab, "prompt": "p"} for lab in ("b", "a", "b")])
    assert class_names_for(rows) == ["a", "b"]
    assert class_names_for(rows, ["b", "a", "c"]) == ["b", "a", "c"]  # a DD probe's order wins
    from clinalign.errors import DataError

    with pytest.raises(DataError, match="not among the classes"):
        class_names_for(rows, ["a", "c"])


def test_micro_batch_order_shards_and_is_stateless():
    order = MicroBatchOrder(10, batch_size=2, world_size=2, seed=3)
    assert order.micro_steps_per_epoch == 2
    epoch0 = [order.indices(m, r) for m in range(2) for r in range(2)]
    flat = [i for chunk in epoch0 for i in chunk]
    assert len(set(flat)) == 8  # disjoint across ranks and micro-steps within an epoch
    again = MicroBatchOrder(10, batch_size=2, world_size=2, seed=3)
    assert again.indices(5, 1) == order.indices(5, 1)
    assert order.indices(2, 0) != order.indices(0, 0) or order.indices(3, 0) != order.indices(1, 0)
