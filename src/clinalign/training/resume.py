"""Resume safety: compare the config a checkpoint was saved with against the config of the resuming run.

A resumed run continues the saved trajectory only if every option that shapes that trajectory is the
same. Options that do not (how long to run, logging, evaluation and checkpoint cadence, output paths,
progress display) may change freely; any other change is refused unless explicitly allowed, and an
allowed change is recorded in the run's metadata. Changes to the LoRA's shape (rank, targets, layers)
can never be resumed: the saved tensors do not fit the new adapter.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from clinalign.errors import ConfigError

#: Options that do not change the optimisation trajectory: a resumed run may change them freely.
TRAJECTORY_NEUTRAL: frozenset[str] = frozenset(
    {
        "max_steps",
        "num_epochs",
        "output_dir",
        "log_with",
        "log_every",
        "sample_every",
        "num_sample_prompts",
        "progress_bar",
        "max_nan_steps",
        "checkpoint_every",
        "checkpoints_total_limit",
        "resume_from",
        "allow_config_change",
        "eval_every",
        "eval_data",
        "eval_critic",
        "eval_probe",
        "eval_max_prompts",
        "eval_num_inference_steps",
        "hacking_tolerance",
        "hacking_patience",
    }
)

#: Options that fix the LoRA's tensor shapes: a checkpoint cannot be resumed with other values.
ADAPTER_SHAPE: tuple[str, ...] = ("lora_rank", "lora_targets", "lora_layers")

#: Run-length options that also set the length of a decaying learning-rate schedule.
_SCHEDULE_LENGTH: frozenset[str] = frozenset({"max_steps", "num_epochs"})

_INTERNAL_KEYS = ("_class_name", "_clinalign_version")


@dataclass(frozen=True)
class ConfigChange:
    """One option whose value differs between the checkpoint and the resuming run."""

    field: str
    old: Any
    new: Any

    def describe(self) -> str:
        return f"{self.field}: {self.old!r} → {self.new!r}"


def config_changes(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[ConfigChange]:
    """Trajectory-changing differences between two ``TrainConfig.to_dict()`` dumps, in field order.

    Fields missing from ``saved`` (a checkpoint from an older version) are not reported. ``max_steps`` and
    ``num_epochs`` count as trajectory-changing only under a decaying schedule (``lr_scheduler`` linear or
    cosine), whose learning rate at every step depends on the total number of steps.
    """
    decaying = current.get("lr_scheduler", "constant") != "constant"
    changes = []
    for field, new in current.items():
        if field in _INTERNAL_KEYS or field not in saved:
            continue
        if field in TRAJECTORY_NEUTRAL and not (decaying and field in _SCHEDULE_LENGTH):
            continue
        old = saved[field]
        if old != new:
            changes.append(ConfigChange(field, old, new))
    return changes


def check_resume_config(
    saved: Mapping[str, Any], current: Mapping[str, Any], *, checkpoint: str, allow_change: bool
) -> list[ConfigChange]:
    """Refuse a resume whose config changes the trajectory; returns the (allowed) changes.

    Raises:
        ConfigError: the LoRA shape changed (always), or other trajectory options changed and
            ``allow_change`` is False. The message lists each field as ``old → new``.
    """
    changes = config_changes(saved, current)
    shape = [c for c in changes if c.field in ADAPTER_SHAPE]
    if shape:
        raise ConfigError(
            f"cannot resume from {checkpoint}: the LoRA shape changed ({'; '.join(c.describe() for c in shape)}), "
            "so the saved weights do not fit the new adapter. Restore the old values, or start a new run "
            "in another output folder."
        )
    if changes and not allow_change:
        listed = "; ".join(c.describe() for c in changes)
        raise ConfigError(
            f"cannot resume from {checkpoint}: the config changed in options that alter the training "
            f"trajectory ({listed}). Restore the saved values, start a new run in another output folder, or "
            "pass --allow-config-change (`allow_config_change: true`) to continue anyway; the change is then "
            "recorded in the run's metadata."
        )
    return changes


def change_record(step: int, checkpoint: str, changes: list[ConfigChange]) -> dict[str, Any]:
    """A JSON-able record of allowed changes, kept in the trainer state and the LoRA's metadata."""
    return {
        "step": step,
        "checkpoint": checkpoint,
        "changes": {c.field: {"old": c.old, "new": c.new} for c in changes},
    }
