"""Training configs: ``BaseTrainConfig`` (what every method shares) and ``TrainConfig`` (CRAFT / DRaFT-K).

Each method's config is the shared base plus its own fields (``TIConfig`` and ``DPOConfig`` live with
their trainers); all are flat pydantic models, ordered by phase, loadable from YAML/JSON.
"""

from __future__ import annotations

import difflib
import json
import os
import warnings
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from clinalign.errors import ConfigError

#: The built-in rewards (the registry in clinalign.rewards.registry may hold more).
KNOWN_REWARDS: tuple[str, ...] = ("vdc", "ccs", "dd", "sfs")
#: The values of a config's ``method`` (``clinalign train --config`` dispatches on it).
METHODS: tuple[str, ...] = ("craft", "lora", "ti", "ti_lora", "dpo")


_PREFIX = "invalid training config: "


def _format_validation_error(
    exc: ValidationError, source: str | None = None, config_cls: type[BaseModel] | None = None
) -> str:
    where = f"{source}: " if source else ""
    fields = set((config_cls or TrainConfig).model_fields)
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "config"
        inner = (err.get("ctx") or {}).get("error")
        if isinstance(inner, ConfigError):
            # pydantic re-wraps the ConfigError our __init__ raised; its text is already formatted
            lines.append(str(inner).removeprefix(_PREFIX))
            continue
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            close = difflib.get_close_matches(str(err["loc"][0]), fields, n=1)
            name = (config_cls or TrainConfig).__name__
            hint = f"; did you mean '{close[0]}'?" if close else f"; see `{name}.model_fields` for the options."
            lines.append(f"unknown option '{loc}'{hint}")
        elif loc == "config":
            lines.append(msg)
        else:
            lines.append(f"'{loc}': {msg} (got {err.get('input')!r})")
    return where + _PREFIX + "; ".join(lines)


_FIELDS_CONFIG = ConfigDict(extra="forbid", validate_assignment=True)


# The shared fields come in one small model per phase. A config class lists the phase models among its bases
# so that its fields (model_fields, saved configs, docs) read in phase order: pydantic collects fields in
# reverse method-resolution order, so a method can slot its own phases (e.g. the DRaFT-K loss, LoRA) between
# the shared ones. See TrainConfig.


class _ModelFields(BaseModel):
    """Training options: model."""

    model_config = _FIELDS_CONFIG

    model: str = Field(
        "stabilityai/stable-diffusion-2-1-base",
        description="Base Stable Diffusion 1.x/2.x pipeline: a hub id or a local diffusers directory.",
    )
    revision: str | None = Field(None, description="Hub revision of `model` (branch, tag or commit).")


class _DataFields(BaseModel):
    """Training options: data."""

    model_config = _FIELDS_CONFIG

    train_data: str | None = Field(
        None,
        description="Enriched JSONL (`clinalign enrich` output: id, image, label, t_ep) or a manifest CSV/JSONL "
        "(image, label, optional prompt). Relative image paths resolve from the file's folder.",
    )
    checklists: str | None = Field(
        None, description="JSON/YAML mapping class name -> checklist t_c, for rows without a 'checklist' field."
    )
    prompt_template: str = Field(
        "{label}", description="Prompt for rows without an enriched prompt ('prompt'/'t_ep'); '{label}' is filled in."
    )
    eval_data: str | None = Field(
        None, description="Held-out rows (same format as train_data) for periodic evaluation."
    )
    train_split: str | None = Field(
        None,
        description="Use only train_data rows of this split (their 'split' field, or the split.json beside the file "
        "that `clinalign enrich` wrote); None uses every row.",
    )
    eval_split: str | None = Field(None, description="Like train_split, for eval_data.")
    resolution: int = Field(512, description="Square image size in pixels (paper: 512 for SD 2.1 base).", gt=0)


class _SamplingFields(BaseModel):
    """Training options: sampling."""

    model_config = _FIELDS_CONFIG

    num_inference_steps: int = Field(
        20,
        description="T: denoising steps per sampled trajectory (DRaFT-K training; sample grids and evaluation "
        "for every method; paper: 20).",
        ge=1,
    )
    eta: float = Field(1.0, description="DDIM eta: 0 deterministic, 1 DDPM-like stochastic (paper: stochastic).", ge=0)
    guidance_scale: float = Field(7.5, description="Classifier-free guidance scale (<= 1 disables CFG).", ge=0)


class _OptimisationFields(BaseModel):
    """Training options: optimisation."""

    model_config = _FIELDS_CONFIG

    learning_rate: float = Field(1e-4, description="AdamW peak learning rate.", gt=0)
    adam_beta1: float = Field(0.9, description="AdamW beta1.", ge=0, lt=1)
    adam_beta2: float = Field(0.999, description="AdamW beta2.", ge=0, lt=1)
    adam_epsilon: float = Field(1e-8, description="AdamW epsilon.", gt=0)
    weight_decay: float = Field(1e-2, description="AdamW weight decay.", ge=0)
    lr_scheduler: Literal["constant", "linear", "cosine"] = Field(
        "constant", description="Learning-rate schedule after warmup."
    )
    lr_warmup_steps: int = Field(0, description="Linear warmup, in optimiser steps.", ge=0)
    max_grad_norm: float | None = Field(1.0, description="Gradient clipping norm (None disables).", gt=0)
    gradient_accumulation_steps: int = Field(1, description="Micro-batches per optimiser step.", ge=1)
    batch_size: int = Field(4, description="Prompts (real images) per micro-batch per process (paper: 4).", ge=1)
    num_epochs: int = Field(10, description="Passes over train_data (paper: 10); max_steps wins when set.", ge=1)
    max_steps: int | None = Field(None, description="Stop after this many optimiser steps.", ge=1)


class _PrecisionFields(BaseModel):
    """Training options: precision and memory."""

    model_config = _FIELDS_CONFIG

    mixed_precision: Literal["no", "fp16", "bf16"] = Field(
        "no", description="Frozen weights and activations in this dtype; LoRA weights stay fp32."
    )
    gradient_checkpointing: bool = Field(True, description="Checkpoint the grad-step UNet calls and the VAE decode.")
    allow_tf32: bool = Field(True, description="Allow TF32 matmuls on Ampere+ GPUs.")
    seed: int = Field(0, description="Seed for data order, noise and LoRA init; a run is a function of it.")


class _LoggingFields(BaseModel):
    """Training options: logging."""

    model_config = _FIELDS_CONFIG

    output_dir: str = Field("runs/craft", description="Where logs, samples, checkpoints and the final LoRA go.")
    log_with: Literal["tensorboard", "wandb", "none"] = Field("tensorboard", description="Experiment tracker.")
    log_every: int = Field(1, description="Log scalars every N optimiser steps.", ge=1)
    sample_every: int = Field(0, description="Write a sample grid every N steps (0 = never).", ge=0)
    num_sample_prompts: int = Field(4, description="Prompts in the sample grid (first rows of eval/train data).", ge=1)
    progress_bar: bool = Field(True, description="Show a progress bar with the live reward.")
    max_nan_steps: int = Field(5, description="Stop with an error after this many non-finite losses in a row.", ge=1)


class _CheckpointFields(BaseModel):
    """Training options: checkpointing."""

    model_config = _FIELDS_CONFIG

    checkpoint_every: int = Field(
        500, description="Save a resumable checkpoint every N steps (0 = only at the end).", ge=0
    )
    checkpoints_total_limit: int | None = Field(None, description="Keep at most this many checkpoints.", ge=1)
    resume_from: str | None = Field(None, description="'latest' or a checkpoint directory to resume from.")
    allow_config_change: bool = Field(
        False,
        description="Resume even though options that change the training trajectory differ from the "
        "checkpoint's (learning_rate, seed, ...); the change is recorded in the run's metadata. The LoRA "
        "shape (lora_rank, lora_targets, lora_layers) can never change on resume.",
    )


class _EvaluationFields(BaseModel):
    """Training options: evaluation."""

    model_config = _FIELDS_CONFIG

    eval_every: int = Field(0, description="Evaluate on eval_data every N steps (0 = never).", ge=0)
    eval_critic: str | None = Field(
        None, description="Evaluator critic, different from `critic` (paper: SigLIP), for the held-out score."
    )
    eval_probe: str | None = Field(None, description="LinearProbe directory in the evaluator's space (adds DD).")
    eval_max_prompts: int = Field(16, description="Held-out prompts scored per evaluation.", ge=1)
    eval_num_inference_steps: int | None = Field(None, description="Steps for eval samples (default: T).", ge=1)
    hacking_tolerance: float = Field(
        0.01,
        description="Reward-hacking warning: how far (absolute) the evaluator's held-out score must fall below "
        "its best so far to count as a drop; smaller changes are evaluation noise.",
        ge=0,
    )
    hacking_patience: int = Field(
        2,
        description="Reward-hacking warning: evaluations in a row that must show such a drop while the "
        "training critic's held-out score stays above its value at the evaluator's best.",
        ge=1,
    )


class BaseTrainConfig(
    _EvaluationFields,
    _CheckpointFields,
    _LoggingFields,
    _PrecisionFields,
    _OptimisationFields,
    _SamplingFields,
    _DataFields,
    _ModelFields,
):
    """Options every training method shares (model, data, preview sampling, optimisation, precision, logging,
    checkpointing, held-out evaluation). Each method's config adds its own fields after these.

    Load with :meth:`from_file` (YAML or JSON), save with :meth:`save`; a copy is written beside every
    checkpoint and artifact. Invalid values raise :class:`~clinalign.errors.ConfigError` naming the field.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    #: ``method`` values this config class serves (the first is its default).
    methods: ClassVar[tuple[str, ...]] = ()

    # ---------------------------------------------------------------- validation
    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise ConfigError(_format_validation_error(exc, config_cls=type(self))) from None

    def __setattr__(self, name: str, value: Any) -> None:
        try:
            super().__setattr__(name, value)
        except ValidationError as exc:
            raise ConfigError(_format_validation_error(exc, config_cls=type(self))) from None

    @model_validator(mode="after")
    def _check_base(self) -> BaseTrainConfig:
        if self.resolution % 8 != 0:
            raise ValueError(f"`resolution` must be a multiple of 8, got {self.resolution}.")
        return self

    def check_options(self, *, rewards_given: bool = False) -> None:
        """Checks that depend on how the trainer is called (override per method)."""
        if self.eval_critic is not None and self.eval_critic == getattr(self, "critic", None):
            _warn_once(
                f"`eval_critic` is the training critic ('{self.eval_critic}'): evaluation cannot reveal reward "
                "hacking. Use a different evaluator (paper: SigLIP for a MedSigLIP-trained model)."
            )

    # ---------------------------------------------------------------- I/O
    @classmethod
    def from_file(
        cls, path: str | os.PathLike[str], *, set_values: dict[str, Any] | None = None, **overrides: Any
    ) -> BaseTrainConfig:
        """Load from YAML (``.yaml``/``.yml``) or JSON, then apply overrides.

        ``set_values`` (e.g. from :func:`parse_overrides`) replace file values, None included; keyword
        ``overrides`` replace them too but are skipped when None (flags that were not given).
        """
        import yaml

        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found. Check the path.")
        text = path.read_text(encoding="utf-8")
        try:
            data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
        except (json.JSONDecodeError, yaml.YAMLError) as exc:
            raise ConfigError(f"{path}: cannot parse the config ({exc}).") from exc
        data = data or {}
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: a config must be a mapping of option: value, got {type(data).__name__}.")
        data.pop("_class_name", None)
        data.pop("_clinalign_version", None)
        method = data.get("method")
        if cls.methods and method is not None and method not in cls.methods:
            raise ConfigError(
                f"{path}: `method: {method}` is not trained by {cls.__name__} (methods {list(cls.methods)}); "
                "use `clinalign train --config`, which picks the trainer from `method`."
            )
        data.update(set_values or {})
        data.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(_format_validation_error(exc, str(path), cls)) from None
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None

    def to_dict(self) -> dict[str, Any]:
        from clinalign import __version__

        return {"_class_name": type(self).__name__, "_clinalign_version": __version__, **self.model_dump(mode="json")}

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the config as YAML (``.yaml``/``.yml``) or JSON, atomically."""
        import yaml

        from clinalign.utils.io import atomic_write_text, write_json

        path = Path(path)
        if path.suffix.lower() in (".yaml", ".yml"):
            atomic_write_text(path, yaml.safe_dump(self.to_dict(), sort_keys=False))
        else:
            write_json(path, self.to_dict())
        return path


class LoraOptions(BaseModel):
    """The LoRA fields shared by the methods that train a UNet LoRA (CRAFT/LoRA/TI+LoRA, DPO)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    # ---------------------------------------------------------------- LoRA
    lora_rank: int = Field(8, description="LoRA rank r.", ge=1)
    lora_alpha: float | None = Field(None, description="LoRA alpha (update scaled by alpha/r); default = lora_rank.")
    lora_dropout: float = Field(0.0, description="Dropout on the LoRA branch.", ge=0, lt=1)
    lora_targets: list[str] = Field(
        default_factory=lambda: ["to_q", "to_k", "to_v", "to_out.0"],
        description="Attention projections that get LoRA.",
    )
    lora_layers: Literal["cross_attention", "all_attention"] = Field(
        "cross_attention", description="LoRA on cross-attention only (paper) or on self- and cross-attention."
    )

    @model_validator(mode="after")
    def _check_lora(self) -> LoraOptions:
        if self.lora_alpha is not None and self.lora_alpha <= 0:
            raise ValueError(f"`lora_alpha` must be positive, got {self.lora_alpha}.")
        if not self.lora_targets:
            raise ValueError("`lora_targets` is empty; give at least one projection, e.g. ['to_q', 'to_v'].")
        return self

    @property
    def effective_lora_alpha(self) -> float:
        return float(self.lora_alpha if self.lora_alpha is not None else self.lora_rank)

    def lora_spec(self):
        """The :class:`~clinalign.diffusion.lora.LoraSpec` these fields describe."""
        from clinalign.diffusion.lora import LoraSpec

        return LoraSpec(
            rank=self.lora_rank,
            alpha=self.effective_lora_alpha,
            dropout=self.lora_dropout,
            targets=tuple(self.lora_targets),
            layers=self.lora_layers,
        )


class _DraftKMethodFields(BaseModel):
    """TrainConfig options: the method and its training critic."""

    model_config = _FIELDS_CONFIG

    method: Literal["craft", "lora", "ti_lora"] = Field(
        "craft",
        description="craft: DRaFT-K reward finetuning; lora: plain LoRA finetuning (lambda_reward defaults to 0); "
        "ti_lora: LoRA on prompts with learnt textual-inversion tokens (needs `textual_inversion`).",
    )
    critic: str | None = Field(
        None,
        description="Training critic for the built-in rewards: a transformers hub id/dir or 'open_clip:<name>' "
        "(paper: 'google/medsiglip-448'). Not needed when rewards are passed to DraftKTrainer directly.",
    )
    probe: str | None = Field(
        None, description="Directory of a LinearProbe fitted in `critic`'s space (the DD reward)."
    )


class _DraftKSamplingFields(BaseModel):
    """TrainConfig options: DRaFT-K sampling."""

    model_config = _FIELDS_CONFIG

    k: int = Field(1, description="K: final steps that keep gradients (DRaFT-K; paper: 1).", ge=1)
    repeats: int = Field(
        2, description="M: sampled trajectories per prompt, rewards averaged over them (paper: 2).", ge=1
    )
    repeats_in_batch: bool | int = Field(
        False,
        description="Sample the M trajectories of a step together, one UNet call per denoising step for several "
        "of them: true = all M, a number = that many per call, false (= 1) = one call per trajectory. Each "
        "trajectory keeps its own noise, so results equal the separate calls up to float rounding; faster when "
        "memory allows (the batched calls hold that many times more activations).",
    )


class _DraftKLossFields(BaseModel):
    """TrainConfig options: the DRaFT-K loss."""

    model_config = _FIELDS_CONFIG

    lambda_diff: float = Field(0.2, description="Weight of the diffusion loss on real images (0 = pure DRaFT-K).", ge=0)
    lambda_reward: float = Field(0.8, description="Weight of the reward term (0 = plain LoRA finetuning).", ge=0)
    rewards: list[str] = Field(
        default_factory=lambda: list(KNOWN_REWARDS),
        description="Built-in rewards to optimise, from: vdc, ccs, dd, sfs (paper: all four, equal weights).",
    )
    reward_weights: dict[str, float] = Field(
        default_factory=dict,
        description="Per-reward weights by name (missing names weigh 1); see reward_weight_mode.",
    )
    reward_weight_mode: Literal["normalized", "raw"] = Field(
        "normalized",
        description="normalized: r_cam = Σ w_i r_i / Σ w_i (raising one weight lowers the others' share); raw: "
        "r_cam = Σ w_i r_i (each weight acts alone, e.g. the CRAFT paper's App. J λ_DD sweep with the others fixed).",
    )


class _StartFields(BaseModel):
    """TrainConfig options: the starting point (a previous LoRA / TI result)."""

    model_config = _FIELDS_CONFIG

    init_lora: str | None = Field(
        None,
        description="Start from this LoRA (a folder written by a previous run, e.g. TI+LoRA) instead of a fresh "
        "adapter; its rank must equal `lora_rank`.",
    )
    textual_inversion: str | None = Field(
        None,
        description="Textual-inversion folder (`method: ti` output) whose tokens are loaded, frozen, before "
        "training; prompts then carry the class tokens (see `ti_prompt_template`).",
    )
    ti_prompt_template: str = Field(
        "{token}, {prompt}",
        description="With `textual_inversion`: the prompt of each row, from its class token ({token}), class "
        "({label}) and enriched prompt ({prompt}).",
    )


class TrainConfig(
    BaseTrainConfig,
    _StartFields,
    LoraOptions,
    _DraftKLossFields,
    _DraftKSamplingFields,
    _SamplingFields,
    _DataFields,
    _DraftKMethodFields,
    _ModelFields,
):
    """Options of a DRaFT-K run (CRAFT stage 2) and of the plain LoRA / TI+LoRA baselines: the shared
    :class:`BaseTrainConfig` fields with the method's own slotted in by phase: model, method and critic, data,
    sampling, K and M, loss, LoRA, starting point, optimisation, precision, logging, checkpointing, evaluation.
    Defaults follow the paper.
    """

    methods: ClassVar[tuple[str, ...]] = ("craft", "lora", "ti_lora")

    # ---------------------------------------------------------------- validation
    @model_validator(mode="before")
    @classmethod
    def _method_defaults(cls, data: Any) -> Any:
        # the plain-LoRA baselines train without rewards unless a lambda_reward is given explicitly
        if isinstance(data, dict) and data.get("method") in ("lora", "ti_lora") and "lambda_reward" not in data:
            data = {**data, "lambda_reward": 0.0}
        return data

    @property
    def repeats_per_call(self) -> int:
        """Trajectories sampled per UNet call (``repeats_in_batch`` resolved against ``repeats``)."""
        if isinstance(self.repeats_in_batch, bool):
            return self.repeats if self.repeats_in_batch else 1
        return self.repeats_in_batch

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if not isinstance(self.repeats_in_batch, bool) and not 1 <= self.repeats_in_batch <= self.repeats:
            raise ValueError(
                f"`repeats_in_batch` must be true/false or between 1 and `repeats` ({self.repeats}), got "
                f"{self.repeats_in_batch}; it is how many of the M trajectories share one UNet call."
            )
        if self.k > self.num_inference_steps:
            raise ValueError(
                f"`k` must be between 1 and `num_inference_steps` ({self.num_inference_steps}), got {self.k}; "
                "lower `k` or raise `num_inference_steps`."
            )
        if self.lambda_diff == 0 and self.lambda_reward == 0:
            raise ValueError("`lambda_diff` and `lambda_reward` are both 0: nothing to train. Set one above 0.")
        from clinalign.rewards.registry import reward_names

        known = reward_names()
        unknown = [r for r in self.rewards if r not in known]
        if unknown:
            raise ValueError(
                f"unknown reward name(s) {unknown} in `rewards`; choose from {list(known)} "
                "(custom rewards are passed to DraftKTrainer(rewards=[...]) in Python, or registered with "
                "clinalign.rewards.registry.register_reward)."
            )
        if len(set(self.rewards)) != len(self.rewards):
            raise ValueError(f"`rewards` lists a reward twice: {self.rewards}.")
        bad = {n: w for n, w in self.reward_weights.items() if not (w >= 0)}
        if bad:
            raise ValueError(f"`reward_weights` must be non-negative, got {bad}.")
        if self.method in ("lora", "ti_lora") and self.lambda_reward > 0:
            raise ValueError(
                f"`method: {self.method}` trains without rewards, but `lambda_reward` is {self.lambda_reward}; "
                "use `method: craft` for reward finetuning or set lambda_reward: 0."
            )
        if self.method == "ti_lora" and self.textual_inversion is None:
            raise ValueError("`method: ti_lora` needs `textual_inversion` (the folder a `method: ti` run wrote).")
        return self

    def check_reward_options(self, *, rewards_given: bool) -> None:
        """Checks that depend on whether rewards come from this config or from Python objects."""
        if rewards_given:
            if self.critic or self.probe:
                _warn_once("`critic`/`probe` are ignored: reward objects were passed to DraftKTrainer directly.")
            return
        if self.lambda_reward > 0:
            if not self.rewards:
                raise ConfigError("`lambda_reward` > 0 but `rewards` is empty; list rewards or set lambda_reward: 0.")
            if self.critic is None:
                raise ConfigError(
                    f"the rewards {self.rewards} need a training critic: set `critic` (e.g. 'google/medsiglip-448')."
                )
            if "dd" in self.rewards and self.probe is None:
                raise ConfigError(
                    "the 'dd' reward needs `probe` (a LinearProbe directory; `clinalign probe train`), "
                    "or drop 'dd' from `rewards`."
                )
            unknown = sorted(set(self.reward_weights) - set(self.rewards))
            if unknown:
                raise ConfigError(f"`reward_weights` names {unknown}, which are not in `rewards` {self.rewards}.")
        elif self.rewards and self.critic is not None:
            _warn_once("`lambda_reward` is 0: the rewards and critic are ignored (plain LoRA finetuning).")
        super().check_options(rewards_given=rewards_given)

    def check_options(self, *, rewards_given: bool = False) -> None:
        self.check_reward_options(rewards_given=rewards_given)


_WARNED: set[str] = set()


def _warn_once(message: str) -> None:
    if message in _WARNED:
        return
    _WARNED.add(message)
    warnings.warn(message, UserWarning, stacklevel=3)


def parse_overrides(
    items: list[str] | tuple[str, ...], config_cls: type[BaseTrainConfig] | None = None
) -> dict[str, Any]:
    """``["key=value", ...]`` (the CLI's ``--set``) -> ``{key: value}``, each value parsed as YAML.

    Keys must be :class:`TrainConfig` fields; values are validated later with the whole config.

    Raises:
        ConfigError: an item without ``=``, an unknown key (with the closest field name), or a value
            that is not valid YAML.
    """
    import yaml

    out: dict[str, Any] = {}
    config_cls = config_cls or TrainConfig
    fields = list(config_cls.model_fields)
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set learning_rate=5e-5.")
        if key not in config_cls.model_fields:
            close = difflib.get_close_matches(key, fields, n=1)
            hint = f" did you mean '{close[0]}'?" if close else " see docs/training.md for the options."
            raise ConfigError(f"--set {item!r}: unknown option '{key}';{hint}")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {item!r}: the value of '{key}' is not valid YAML ({exc}).") from None
        out[key] = value
    return out
