"""The reward-hacking warning needs a real, sustained drop: the detector as a pure function, then in the trainer."""

from __future__ import annotations

import warnings

import pytest
import torch
from test_train_support import tiny_config, toy_rows

from clinalign.training import DraftKTrainer, RewardHackingWarning, detect_reward_hacking


def _history(evaluator: list[float], trained: list[float]) -> list[dict[str, float]]:
    return [
        {"eval/total": e, "eval/train_critic_total": t, "step": float(i)}
        for i, (e, t) in enumerate(zip(evaluator, trained, strict=True))
    ]


def _verdicts(evaluator, trained, **kwargs):
    history = _history(evaluator, trained)
    return [detect_reward_hacking(history[: i + 1], **kwargs) for i in range(len(history))]


def test_tiny_wobble_is_not_hacking():
    # evaluator wobbles by <= 0.005 (the old rule, any drop > 0, fired at step 1) while the training critic rises
    verdicts = _verdicts([0.50, 0.496, 0.503, 0.497, 0.499], [0.3, 0.4, 0.5, 0.6, 0.7])
    assert [v.hacking for v in verdicts] == [False] * 5


def test_one_big_dip_then_recovery_is_not_hacking():
    verdicts = _verdicts([0.50, 0.40, 0.52, 0.51], [0.3, 0.4, 0.5, 0.6])
    assert [v.hacking for v in verdicts] == [False] * 4
    assert verdicts[1].streak == 1 and verdicts[2].streak == 0


def test_sustained_drop_with_rising_training_reward_is_hacking():
    verdicts = _verdicts([0.50, 0.55, 0.53, 0.52, 0.51, 0.49], [0.3, 0.4, 0.5, 0.6, 0.7, 0.8])
    # best is 0.55 at index 1; 0.53 is only 0.02 below (> tolerance 0.01): counts; 0.52 counts -> hacking
    assert [v.streak for v in verdicts] == [0, 0, 1, 2, 3, 4]
    assert [v.hacking for v in verdicts] == [False, False, False, True, True, True]
    assert [v.new for v in verdicts] == [False, False, False, True, False, False]  # warn once per streak
    assert verdicts[-1].best_index == 1


def test_drop_without_training_gain_is_not_hacking():
    # both critics fall: the model got worse, but not by gaming the training critic
    verdicts = _verdicts([0.50, 0.40, 0.30], [0.5, 0.4, 0.3])
    assert not any(v.hacking for v in verdicts)


def test_tolerance_and_patience_are_respected():
    evaluator, trained = [0.50, 0.48, 0.47], [0.1, 0.2, 0.3]
    assert not _verdicts(evaluator, trained, tolerance=0.05)[-1].hacking
    assert _verdicts(evaluator, trained, tolerance=0.01)[-1].hacking
    assert not _verdicts(evaluator, trained, tolerance=0.01, patience=3)[-1].hacking
    assert _verdicts(evaluator, trained, tolerance=0.0, patience=1)[1].hacking
    with pytest.raises(ValueError, match="patience"):
        detect_reward_hacking([], patience=0)


class _Scripted:
    """A reward that returns a scripted per-evaluation value when scoring held-out samples (no grad)."""

    def __init__(self, name: str, values: list[float]) -> None:
        self.name = name
        self.values = values
        self.calls = 0

    def __call__(self, images, batch):
        if torch.is_grad_enabled():
            return images.mean(dim=(1, 2, 3))
        value = self.values[min(self.calls, len(self.values) - 1)]
        self.calls += 1
        return torch.full((images.shape[0],), value)


@pytest.mark.parametrize(
    ("evaluator", "warns"),
    [([0.50, 0.495, 0.503, 0.497], False), ([0.50, 0.45, 0.44, 0.43], True)],
    ids=["wobble", "sustained-drop"],
)
def test_trainer_warns_only_on_a_sustained_drop(tmp_path, evaluator, warns):
    cfg = tiny_config(
        tmp_path, lambda_reward=0.0, lambda_diff=1.0, max_steps=3, eval_every=1, eval_max_prompts=2,
        num_inference_steps=2, batch_size=2,
    )  # fmt: skip
    trainer = DraftKTrainer(
        rewards=[_Scripted("train_critic", [0.1, 0.2, 0.3, 0.4])],
        config=cfg,
        train_data=toy_rows(2),
        eval_data=toy_rows(2, seed=1),
        eval_rewards=[_Scripted("evaluator", evaluator)],
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = trainer.train()
    hacking = [w for w in caught if issubclass(w.category, RewardHackingWarning)]
    flags = [e["eval/hacking"] for e in out.eval_history]
    if warns:
        assert len(hacking) == 1 and "2 held-out evaluations in a row" in str(hacking[0].message)
        assert flags == [0.0, 0.0, 1.0, 1.0]
    else:
        assert not hacking and flags == [0.0] * 4
