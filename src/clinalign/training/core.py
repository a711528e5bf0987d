"""The shared training loop every method runs on: ``Trainer``.

A method (:class:`~clinalign.training.trainer.DraftKTrainer`, :class:`~clinalign.training.textual_inversion.
TextualInversionTrainer`, :class:`~clinalign.training.dpo.DiffusionDPOTrainer`) supplies three things:

- its config: :class:`~clinalign.training.config.BaseTrainConfig` plus its own fields;
- its trainable parameters: :meth:`Trainer.setup_adapters` adds adapters to the :class:`DiffusionModel`
  (LoRA, textual-inversion rows) and returns their parameters;
- :meth:`Trainer.compute_loss` on one micro-batch, returning a :class:`LossOutput`.

Everything else lives here once: accelerate setup, micro-batching and gradient accumulation, the
cross-process gradient all-reduce, fp16 overflow and NaN skipping, clipping, the LR schedule,
held-out evaluation with the evaluator critic and the reward-hacking warning, sample grids, tracker
logging, rank-safe checkpoints with exact resume (refusing trajectory-changing config changes),
graceful SIGINT/SIGTERM stops, and the final save.

The model is deliberately not wrapped in DDP: DRaFT-K calls the UNet many times per step, which DDP's
once-per-forward gradient hooks do not support; an explicit all-reduce of the few adapter tensors is
simpler and just as fast. Every random draw of a micro-step (data order, noise, timesteps, dropout)
is derived from ``(seed, micro-step, rank)``, so a resumed run continues bit for bit like the
uninterrupted run.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from clinalign.artifacts import META_NAME, ArtifactMeta
from clinalign.diffusion import DiffusionModel, load_diffusion_model, sample
from clinalign.errors import ClinAlignError, ConfigError, ModelLoadError
from clinalign.training.checkpoint import (
    checkpoint_dir,
    load_checkpoint,
    prune_checkpoints,
    resolve_resume,
    save_checkpoint,
)
from clinalign.training.config import BaseTrainConfig
from clinalign.training.data import (
    MicroBatchOrder,
    TrainExample,
    label_indices,
    load_checklists,
    load_examples,
    load_pixels,
)
from clinalign.training.hacking import detect_reward_hacking
from clinalign.training.resume import change_record, check_resume_config
from clinalign.training.signals import StopRequest, TrainingInterrupted
from clinalign.utils.seeding import mix_seeds


class TrainingDivergedError(ClinAlignError):
    """The loss was NaN/inf for ``max_nan_steps`` optimiser steps in a row."""


class RewardHackingWarning(UserWarning):
    """The training critic's score rose while the independent evaluator's score fell."""


@dataclass
class TrainOutput:
    """Result of :meth:`Trainer.train`.

    Attributes:
        global_step: optimiser steps done (including steps resumed from a checkpoint).
        history: one dict of logged scalars per optimiser step run in this call (same on every process).
        eval_history: one dict per held-out evaluation.
        lora_dir: where the final LoRA was written (None for methods without a LoRA).
        artifact_dir: where the final artifact (LoRA or embeddings + metadata) was written.
    """

    global_step: int
    history: list[dict[str, float]] = field(default_factory=list)
    eval_history: list[dict[str, float]] = field(default_factory=list)
    lora_dir: Path | None = None
    artifact_dir: Path | None = None


@dataclass
class TrainBatch:
    """One micro-batch handed to :meth:`Trainer.compute_loss`.

    Attributes:
        rows: the rows of this micro-batch (the method's own row type).
        micro_step: global micro-step index (optimiser step × accumulation + micro).
    """

    rows: list[Any]
    micro_step: int


@dataclass
class LossOutput:
    """What :meth:`Trainer.compute_loss` returns.

    Attributes:
        loss: scalar loss for the core to backpropagate, or None when the method already backpropagated
            its terms through :meth:`Trainer.backward` (e.g. DRaFT-K, one trajectory at a time).
        metrics: scalars to log for this micro-batch (``loss/total`` is filled from ``loss`` if missing).
        finite: False when a term the method backpropagated itself was NaN/inf.
    """

    loss: torch.Tensor | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    finite: bool = True


def composite_rewards(rewards: Any, weights: Mapping[str, float], mode: str = "normalized") -> Any:
    """Reward objects (or a ``CompositeReward``) -> one ``CompositeReward`` with ``weights`` by name; None if empty."""
    from clinalign.rewards import CompositeReward

    if isinstance(rewards, CompositeReward):
        return rewards
    rewards = list(rewards)
    if not rewards:
        return None
    names = [getattr(r, "name", None) for r in rewards]
    unknown = sorted(set(weights) - {n for n in names if isinstance(n, str)})
    if unknown:
        raise ConfigError(f"`reward_weights` names {unknown}, but the rewards are {names}.")
    resolved = {n: float(weights.get(n, 1.0)) for n in names} if weights else None
    return CompositeReward(rewards, weights=resolved, normalize=mode == "normalized")


def probe_classes(composite: Any) -> list[str] | None:
    if composite is None:
        return None
    for reward in composite.rewards:
        probe = getattr(reward, "probe", None)
        if probe is not None and getattr(probe, "class_names", None):
            return list(probe.class_names)
    return None


def critic_names(composite: Any) -> list[str]:
    if composite is None:
        return []
    return sorted({r.critic.name for r in composite.rewards if getattr(r, "critic", None) is not None})


def critic_identities(composite: Any) -> list[dict[str, str]]:
    """``{"name", "fingerprint"}`` of each distinct critic behind ``composite``'s rewards."""
    if composite is None:
        return []
    found: dict[str, dict[str, str]] = {}
    for reward in composite.rewards:
        critic = getattr(reward, "critic", None)
        if critic is not None and hasattr(critic, "identity"):
            identity = critic.identity()
            found[identity.get("fingerprint") or identity["name"]] = identity
    return sorted(found.values(), key=lambda i: i["name"])


def warm_text_caches(composites: Sequence[Any], texts: Sequence[str], *, batch_size: int = 64) -> int:
    """Encode ``texts`` once on every critic behind ``composites``, in sorted order and fixed batches.

    Critics cache text embeddings, and an embedding's last bits depend on the batch it was first
    encoded in (padding to the longest text, batch-size-dependent kernels). Filling the caches up front
    from the training texts alone makes every process, uninterrupted or resumed, use identical
    embeddings. Returns the number of critics warmed.
    """
    unique = sorted({t for t in texts if t})
    critics: dict[int, Any] = {}
    for composite in composites:
        for reward in getattr(composite, "rewards", []) if composite is not None else []:
            critic = getattr(reward, "critic", None)
            if critic is not None and callable(getattr(critic, "encode_texts", None)):
                critics[id(critic)] = critic
    if unique:
        for critic in critics.values():
            for start in range(0, len(unique), batch_size):
                critic.encode_texts(unique[start : start + batch_size])
    return len(critics)


def _allow_new_precision(mixed_precision: str) -> None:
    """accelerate keeps one process-wide state; in a single process (notebook, tests) a second trainer
    with another precision would fail, so drop the old state there. Launched multi-process runs keep it."""
    from accelerate.state import AcceleratorState

    state = AcceleratorState._shared_state
    if state and state.get("_mixed_precision", mixed_precision) != mixed_precision:
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise ConfigError(
                f"this process already runs accelerate with mixed_precision={state.get('_mixed_precision')!r}; "
                f"cannot switch to {mixed_precision!r} inside a launched multi-process job."
            )
        AcceleratorState._reset_state()


def lr_factor(step: int, config: BaseTrainConfig, total_steps: int) -> float:
    """The learning-rate multiplier at optimiser ``step``: linear warmup, then constant/linear/cosine."""
    warmup = config.lr_warmup_steps
    if warmup and step < warmup:
        return (step + 1) / warmup
    if config.lr_scheduler == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total_steps - warmup)
    progress = min(max(progress, 0.0), 1.0)
    if config.lr_scheduler == "linear":
        return 1.0 - progress
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def _hparams(config: BaseTrainConfig) -> dict[str, Any]:
    out = {}
    for key, value in config.model_dump(mode="json").items():
        out[key] = value if isinstance(value, (int, float, str, bool)) else str(value)
    return out


class Trainer:
    """The shared loop; subclasses are the methods (see the module docstring).

    Args:
        model: hub id or diffusers directory of the base model, or a loaded :class:`DiffusionModel`
            (without adapters); default ``config.model``.
        config: the method's config (an instance of :attr:`config_class`).
        train_data: the method's training rows (path or sequence of dicts); default ``config.train_data``.
        eval_data: held-out rows (``image``, ``prompt``, ``label``, optional ``checklist``) for periodic
            evaluation; default ``config.eval_data``.
        eval_rewards: rewards on a *different* critic scoring the held-out samples; default built from
            ``config.eval_critic`` (+ ``config.eval_probe``).
        checklists: class -> checklist mapping (or file) for rows without one; default ``config.checklists``.
        accelerator: an ``accelerate.Accelerator`` to use (default: one built from the config).
    """

    #: the config type this method takes
    config_class: type[BaseTrainConfig] = BaseTrainConfig
    #: progress-bar label
    label: str = "training"
    #: folder under ``output_dir`` the final artifact is written to
    artifact_name: str = "lora"

    def __init__(
        self,
        model: str | os.PathLike[str] | DiffusionModel | None = None,
        config: BaseTrainConfig | None = None,
        train_data: str | os.PathLike[str] | Sequence[Mapping[str, Any]] | None = None,
        eval_data: str | os.PathLike[str] | Sequence[Mapping[str, Any]] | None = None,
        *,
        eval_rewards: Sequence[Any] | Any | None = None,
        checklists: str | os.PathLike[str] | Mapping[str, Any] | None = None,
        accelerator: Any | None = None,
        rewards: Sequence[Any] | Any | None = None,
    ) -> None:
        from accelerate import Accelerator
        from accelerate.utils import ProjectConfiguration

        self.config = cfg = config if config is not None else self.config_class()
        if not isinstance(cfg, self.config_class):
            raise ConfigError(f"config must be a {self.config_class.__name__}, got {type(cfg).__name__}.")
        cfg.check_options(rewards_given=rewards is not None)
        self.output_dir = Path(cfg.output_dir)
        if accelerator is None:
            _allow_new_precision(cfg.mixed_precision)
            if cfg.log_with == "wandb":  # accelerate would only warn and log nothing
                from clinalign.utils.deps import require

                require("wandb", feature="log_with: wandb", extra="wandb")
        self.accelerator = accelerator or Accelerator(
            mixed_precision=cfg.mixed_precision,
            log_with=None if cfg.log_with == "none" else cfg.log_with,
            project_config=ProjectConfiguration(
                project_dir=str(self.output_dir), logging_dir=str(self.output_dir / "logs")
            ),
        )
        acc = self.accelerator
        if cfg.allow_tf32 and torch.cuda.is_available():
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True

        # ---- model + adapters (same seed on every rank -> identical adapter init)
        weight_dtype = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[cfg.mixed_precision]
        if isinstance(model, DiffusionModel):
            if model.has_lora or model.adapters:
                raise ConfigError("pass a DiffusionModel without adapters; the trainer adds its own.")
            self.model = model
        else:
            name = str(model) if model is not None else cfg.model
            self.model = load_diffusion_model(name, device=acc.device, dtype=weight_dtype, revision=cfg.revision)
        self.model.check_resolution(cfg.resolution)
        torch.manual_seed(cfg.seed)
        self.params: list[torch.nn.Parameter] = self.setup_adapters()
        if not self.params:
            raise ConfigError(f"{type(self).__name__} has no trainable parameters; check the adapter options.")

        # ---- the method's objective (rewards, ...)
        self.reward_fn: Any = None
        self.setup_objective(rewards)

        # ---- data
        self._checklists = load_checklists(checklists if checklists is not None else cfg.checklists)
        source = train_data if train_data is not None else cfg.train_data
        if source is None:
            raise ConfigError("no training data: pass train_data=... or set `train_data` in the config.")
        self.train_examples: list[Any] = self.load_train_rows(source)
        self.class_names: list[str] | None = self.resolve_class_names()
        self.order = MicroBatchOrder(
            len(self.train_examples), batch_size=cfg.batch_size, world_size=acc.num_processes, seed=cfg.seed
        )

        # ---- held-out evaluation
        eval_source = eval_data if eval_data is not None else cfg.eval_data
        self.eval_examples: list[TrainExample] = []
        if eval_source is not None:
            self.eval_examples = load_examples(
                eval_source,
                checklists=self._checklists,
                prompt_template=cfg.prompt_template,
                what="eval_data",
                split=cfg.eval_split,
            )[: max(cfg.eval_max_prompts, cfg.num_sample_prompts)]
        if eval_rewards is None and cfg.eval_critic is not None and self.eval_examples:
            from clinalign.rewards.registry import build_rewards

            names = ["vdc", "sfs"] + (["ccs"] if all(e.checklist for e in self.eval_examples) else [])
            names += ["dd"] if cfg.eval_probe else []
            eval_rewards = build_rewards(names, critic=cfg.eval_critic, probe=cfg.eval_probe, device=acc.device)
        if self.class_names is None and self.eval_examples:
            from clinalign.training.data import class_names_for

            self.class_names = class_names_for(self.eval_examples)
        self.eval_fn = composite_rewards(eval_rewards if eval_rewards is not None else [], {})
        # before any evaluation or step can fill them in another order
        warm_text_caches([self.reward_fn, self.eval_fn], self.cache_texts())
        if cfg.eval_every > 0 and not self.eval_examples:
            raise ConfigError("`eval_every` > 0 needs held-out rows: set `eval_data` or pass eval_data=[...].")
        if cfg.eval_every > 0 and self.eval_fn is None:
            raise ConfigError("`eval_every` > 0 needs an evaluator: set `eval_critic` or pass eval_rewards=[...].")
        self._warn_shared_critic()

        # ---- optimiser (only the adapter parameters)
        optimizer = torch.optim.AdamW(
            self.params,
            lr=cfg.learning_rate,
            betas=(cfg.adam_beta1, cfg.adam_beta2),
            eps=cfg.adam_epsilon,
            weight_decay=cfg.weight_decay,
        )
        self.optimizer = acc.prepare(optimizer)
        micro_total = cfg.num_epochs * self.order.micro_steps_per_epoch
        self.total_steps = cfg.max_steps or max(1, micro_total // cfg.gradient_accumulation_steps)
        self.global_step = 0
        self.nan_streak = 0
        self.skipped_steps = 0
        self.overflow_steps = 0
        self.eval_history: list[dict[str, float]] = []
        self.config_changes: list[dict[str, Any]] = []
        self._loss_scale = 1.0

    # ------------------------------------------------------------------ what a method supplies
    def setup_adapters(self) -> list[torch.nn.Parameter]:
        """Add the method's adapters to ``self.model``; return the parameters to optimise."""
        raise NotImplementedError

    def setup_objective(self, rewards: Sequence[Any] | Any | None) -> None:
        """Build what the loss needs beyond the model (e.g. rewards); sets ``self.reward_fn`` if any."""
        if rewards is not None:
            raise ConfigError(f"{type(self).__name__} takes no rewards.")

    def load_train_rows(self, source: Any) -> list[Any]:
        """The training rows (default: image + prompt + label rows, as :func:`load_examples` reads them)."""
        return load_examples(
            source, checklists=self._checklists, prompt_template=self.config.prompt_template,
            what="train_data", split=self.config.train_split,
        )  # fmt: skip

    def resolve_class_names(self) -> list[str] | None:
        from clinalign.training.data import class_names_for

        examples = [e for e in self.train_examples if isinstance(e, TrainExample)]
        return class_names_for(examples, probe_classes(self.reward_fn)) if examples else None

    def cache_texts(self) -> list[str]:
        """Texts the critics will encode during training (warmed in a fixed order up front)."""
        return [text for e in self.train_examples for text in (getattr(e, "prompt", ""), getattr(e, "checklist", ""))]

    def compute_loss(self, batch: TrainBatch) -> LossOutput:
        """The method's loss on one micro-batch (called in train mode, inside the step's accumulation)."""
        raise NotImplementedError

    def prompt_for(self, example: TrainExample) -> str:
        """The prompt a held-out / sample-grid row is generated from (methods with tokens rewrite it)."""
        return example.prompt

    def method_name(self) -> str:
        return str(getattr(self.config, "method", "") or "")

    def artifact_fields(self) -> dict[str, Any]:
        """Method-specific fields of the artifact metadata (``lora``, ``textual_inversion``, ``init``)."""
        return {}

    def save_artifact(self, directory: Path) -> None:
        """Write the method's weights into ``directory`` (every process calls this; only main writes)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ helpers for methods
    def seed_for(self, micro_step: int, purpose: int, j: int = 0) -> int:
        """A seed for one random draw of one micro-step on this process (resume-stable)."""
        return mix_seeds(self.config.seed, micro_step, self.accelerator.process_index, purpose, j)

    _seed = seed_for

    def backward(self, loss: torch.Tensor) -> bool:
        """Backpropagate ``loss`` scaled for gradient accumulation; False (and no backward) if it is not finite."""
        if not torch.isfinite(loss):
            return False
        self.accelerator.backward(loss * self._loss_scale)
        return True

    @property
    def training_critics(self) -> list[str]:
        return critic_names(self.reward_fn)

    def _warn_shared_critic(self) -> None:
        # compare weights fingerprints, not names: a hub id and its local copy are the same model
        trained_with = {i.get("fingerprint") or i["name"]: i["name"] for i in critic_identities(self.reward_fn)}
        evaluated_with = {i.get("fingerprint") or i["name"] for i in critic_identities(self.eval_fn)}
        shared = sorted(trained_with[key] for key in evaluated_with & set(trained_with))
        if shared:
            warnings.warn(
                f"the evaluator uses the training critic {shared}: held-out scores cannot reveal reward "
                "hacking. Use a different evaluator critic.",
                UserWarning,
                stacklevel=3,
            )

    def _reward_batch(self, examples: Sequence[TrainExample], references: torch.Tensor | None, composite: Any):
        from clinalign.rewards import RewardBatch

        classes = probe_classes(composite) or self.class_names
        labels = label_indices(examples, classes)
        return RewardBatch(
            prompts=[e.prompt for e in examples],
            checklists=[e.checklist for e in examples],
            labels=labels,
            references=references,
        )

    def _all_max(self, values: torch.Tensor) -> torch.Tensor:
        if self.accelerator.num_processes > 1:
            import torch.distributed as dist

            values = values.clone()
            dist.all_reduce(values, op=dist.ReduceOp.MAX)
        return values

    def _all_mean(self, values: torch.Tensor) -> torch.Tensor:
        if self.accelerator.num_processes > 1:
            import torch.distributed as dist

            values = values.clone()
            dist.all_reduce(values)
            values /= self.accelerator.num_processes
        return values

    def _sync_gradients(self) -> None:
        """Average adapter gradients over processes with one flat all-reduce."""
        if self.accelerator.num_processes == 1:
            return
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.params]
        flat = self._all_mean(torch.cat([g.reshape(-1) for g in grads]))
        offset = 0
        for p in self.params:
            n = p.numel()
            p.grad = flat[offset : offset + n].view_as(p).clone()
            offset += n

    # ------------------------------------------------------------------ one micro-step
    def _micro_step(self, micro_step: int, scale: float) -> tuple[dict[str, float], bool]:
        """Forward + backward for one micro-batch. Returns (metrics, finite)."""
        rows = [self.train_examples[i] for i in self.order.indices(micro_step, self.accelerator.process_index)]
        torch.manual_seed(self.seed_for(micro_step, 0))  # dropout and anything else on the global RNG
        self._loss_scale = scale
        out = self.compute_loss(TrainBatch(rows=rows, micro_step=micro_step))
        metrics = dict(out.metrics)
        finite = out.finite
        if out.loss is not None:
            metrics.setdefault("loss/total", float(out.loss.detach()))
            finite = self.backward(out.loss) and finite
        finite = finite and math.isfinite(metrics.get("loss/total", 0.0))
        return metrics, finite

    # ------------------------------------------------------------------ training loop
    def train(self) -> TrainOutput:
        """Run (or resume) training up to ``max_steps`` / ``num_epochs``, then save the artifact.

        Returns:
            :class:`TrainOutput` with the per-step history and the artifact directory.
        """
        # the first SIGINT/SIGTERM only asks for a stop at the end of the current step (see signals.py)
        with StopRequest() as stop:
            return self._train(stop)

    def _train(self, stop: StopRequest) -> TrainOutput:
        from tqdm.auto import tqdm

        cfg, acc, model = self.config, self.accelerator, self.model
        if cfg.resume_from is not None:
            self._resume(cfg.resume_from)
        if acc.is_local_main_process:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            cfg.save(self.output_dir / "config.yaml")
        if cfg.log_with != "none":
            acc.init_trackers("clinalign", config=_hparams(cfg))
        history: list[dict[str, float]] = []
        progress = tqdm(
            total=self.total_steps,
            initial=self.global_step,
            desc=self.method_label,
            disable=not (acc.is_local_main_process and cfg.progress_bar),
            dynamic_ncols=True,
        )
        self._catch_up_step_end()  # step 0, or work a signal-stopped run skipped at its last step
        ga = cfg.gradient_accumulation_steps
        while self.global_step < self.total_steps:
            start = time.perf_counter()
            model.set_training(True)
            self.optimizer.zero_grad(set_to_none=True)
            step_metrics: dict[str, list[float]] = {}
            finite = True
            for micro in range(ga):
                metrics, ok = self._micro_step(self.global_step * ga + micro, 1.0 / ga)
                finite = finite and ok
                for key, value in metrics.items():
                    step_metrics.setdefault(key, []).append(value)
            self._sync_gradients()
            # one collective for both: any process saw a non-finite loss / received a stop signal
            flags = self._all_max(torch.tensor([0.0 if finite else 1.0, float(stop.signum or 0)], device=acc.device))
            stop_signal = int(flags[1].item())
            flags = flags[:1]
            grad_norm = self._clip()
            scaler = getattr(acc, "scaler", None)
            # fp16: inf gradients with finite losses are loss-scale overflows, routine while the scaler
            # calibrates; stepping lets GradScaler skip the update and lower its scale
            overflow = scaler is not None and flags.item() == 0 and not math.isfinite(grad_norm)
            skip = not overflow and (bool(flags.item() > 0) or not math.isfinite(grad_norm))
            if overflow:
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
                self.overflow_steps += 1
            elif skip:
                self.optimizer.zero_grad(set_to_none=True)
                if scaler is not None:
                    # no gradients left, so no update; this only closes the scaler's unscale/update cycle
                    self.optimizer.step()
                self.nan_streak += 1
                self.skipped_steps += 1
                if acc.is_main_process:
                    warnings.warn(
                        f"step {self.global_step}: non-finite loss or gradient; step skipped "
                        f"({self.nan_streak} in a row, limit {cfg.max_nan_steps}).",
                        RuntimeWarning,
                        stacklevel=2,
                    )
            else:
                self.nan_streak = 0
                lr = cfg.learning_rate * lr_factor(self.global_step, cfg, self.total_steps)
                for group in self.optimizer.param_groups:
                    group["lr"] = lr
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
            self.global_step += 1
            if skip and self.nan_streak >= cfg.max_nan_steps:
                progress.close()
                raise TrainingDivergedError(
                    f"the loss was NaN/inf for {self.nan_streak} steps in a row (up to step {self.global_step}). "
                    "Lower `learning_rate` or `lambda_reward`, enable `max_grad_norm`, or use bf16 instead of fp16."
                )
            elapsed = time.perf_counter() - start
            record = self._reduce_metrics(step_metrics)
            record.update(
                {
                    "train/grad_norm": grad_norm,
                    "train/lr": float(self.optimizer.param_groups[0]["lr"]),
                    "train/skipped_steps": float(self.skipped_steps),
                    "train/overflow_steps": float(self.overflow_steps),
                    "perf/step_time": elapsed,
                    "perf/samples_per_second": cfg.batch_size * acc.num_processes * ga / max(elapsed, 1e-9),
                }
            )
            history.append(record)
            if cfg.log_with != "none" and self.global_step % cfg.log_every == 0:
                acc.log(record, step=self.global_step)
            postfix = {"loss": f"{record.get('loss/total', float('nan')):.4f}"}
            if "reward/total" in record:
                postfix["reward"] = f"{record['reward/total']:.4f}"
            progress.set_postfix(postfix)
            progress.update(1)
            if stop_signal:
                # the step is complete; its sample grid / evaluation run when the run resumes
                progress.close()
                directory = self.save_checkpoint()
                if cfg.log_with != "none":
                    acc.end_training()
                raise TrainingInterrupted(stop_signal, self.global_step, directory)
            if cfg.sample_every and self.global_step % cfg.sample_every == 0:
                self.save_sample_grid()
            if cfg.eval_every and self.global_step % cfg.eval_every == 0:
                self.evaluate()
            if cfg.checkpoint_every and self.global_step % cfg.checkpoint_every == 0:
                self.save_checkpoint()
        progress.close()
        if cfg.checkpoint_every and self.global_step % cfg.checkpoint_every != 0:
            self.save_checkpoint()
        artifact_dir = self.save(self.output_dir / self.artifact_name)
        if cfg.log_with != "none":
            acc.end_training()
        return TrainOutput(
            global_step=self.global_step,
            history=history,
            eval_history=list(self.eval_history),
            lora_dir=artifact_dir if self.model.has_lora else None,
            artifact_dir=artifact_dir,
        )

    @property
    def method_label(self) -> str:
        return self.label

    def _catch_up_step_end(self) -> None:
        """Run the evaluation and sample grid due at the current step if they have not run yet.

        At step 0 this is the baseline evaluation; after resuming from a checkpoint written on a stop
        signal it is the work that signal skipped, so the eval history matches the uninterrupted run.
        """
        cfg, step = self.config, self.global_step
        grid_due = step > 0 and cfg.sample_every and step % cfg.sample_every == 0
        if grid_due and not (self.output_dir / "samples" / f"step-{step:07d}.png").is_file():
            self.save_sample_grid()
        eval_due = cfg.eval_every and step % cfg.eval_every == 0
        if eval_due and not any(int(e.get("step", -1)) == step for e in self.eval_history):
            self.evaluate()

    def _clip(self) -> float:
        max_norm = self.config.max_grad_norm
        grads = [p for p in self.params if p.grad is not None]
        if not grads:
            return 0.0
        if max_norm is not None:
            norm = self.accelerator.clip_grad_norm_(grads, max_norm)  # unscales fp16 gradients first
        else:
            if getattr(self.accelerator, "scaler", None) is not None:
                self.accelerator.unscale_gradients()
            norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in grads]))
        return float(norm)

    def _reduce_metrics(self, step_metrics: dict[str, list[float]]) -> dict[str, float]:
        keys = sorted(step_metrics)
        local = torch.tensor([sum(step_metrics[k]) / len(step_metrics[k]) for k in keys], dtype=torch.float64)
        reduced = self._all_mean(local.to(self.accelerator.device)).cpu().tolist()
        return dict(zip(keys, reduced, strict=True))

    # ------------------------------------------------------------------ sampling / eval
    def _generate(self, examples: Sequence[TrainExample], *, seed_offset: int, steps: int | None = None):
        cfg, model = self.config, self.model
        model.set_training(False)
        generators = [torch.Generator().manual_seed(cfg.seed + seed_offset + i) for i in range(len(examples))]
        with torch.no_grad(), self.accelerator.autocast():
            out = sample(
                model,
                model.encode_prompts([self.prompt_for(e) for e in examples]),
                height=cfg.resolution,
                width=cfg.resolution,
                num_inference_steps=steps or cfg.num_inference_steps,
                k=0,
                eta=cfg.eta,
                guidance_scale=cfg.guidance_scale,
                generator=generators,
            )
        return out.images.float()

    def sample_rows(self) -> list[TrainExample]:
        """Rows the sample grid is drawn from: the first eval rows, else the first training rows."""
        rows = self.eval_examples or [e for e in self.train_examples if isinstance(e, TrainExample)]
        return list(rows[: self.config.num_sample_prompts])

    def save_sample_grid(self) -> Path | None:
        """Write ``samples/step-XXXXXXX.png`` (fixed prompts and seeds) and log it; main process only."""
        if not self.accelerator.is_main_process:
            return None
        from clinalign.utils.io import atomic_open

        rows = self.sample_rows()
        if not rows:
            return None
        images = self._generate(rows, seed_offset=10_000)
        grid = _grid(images)
        path = self.output_dir / "samples" / f"step-{self.global_step:07d}.png"
        with atomic_open(path, "wb", encoding=None) as handle:
            grid.save(handle, format="PNG")
        if self.config.log_with != "none":
            import numpy as np

            for tracker in self.accelerator.trackers:
                if tracker.name == "tensorboard":
                    tracker.log_images({"samples": np.asarray(grid)[None]}, step=self.global_step, dataformats="NHWC")
                elif tracker.name == "wandb":
                    tracker.log_images({"samples": [grid]}, step=self.global_step)
        return path

    def evaluate(self) -> dict[str, float]:
        """Generate for held-out prompts and score with the evaluator (and the training rewards, for contrast).

        All processes take part (the prompts are sharded). Logs ``eval/*`` and warns with
        :class:`RewardHackingWarning` when the training critic's held-out score rose since the last
        evaluation while the evaluator's fell by more than ``hacking_tolerance``.
        """
        from accelerate.utils import gather_object

        cfg, acc = self.config, self.accelerator
        if self.eval_fn is None or not self.eval_examples:
            raise ConfigError("evaluate() needs eval_data and an evaluator (eval_critic or eval_rewards).")
        rows = self.eval_examples[: cfg.eval_max_prompts]
        mine = list(range(acc.process_index, len(rows), acc.num_processes))
        scores: list[dict[str, float]] = []
        for start in range(0, len(mine), cfg.batch_size):
            idx = mine[start : start + cfg.batch_size]
            chunk = [rows[i] for i in idx]
            images = self._generate(chunk, seed_offset=20_000 + idx[0], steps=cfg.eval_num_inference_steps)
            # one generator per row keyed by the row index, so results do not depend on the sharding
            references = load_pixels(chunk, cfg.resolution).to(acc.device)
            with torch.no_grad():
                evaluated = self.eval_fn(images, self._reward_batch(chunk, references, self.eval_fn))
                trained = (
                    self.reward_fn(images, self._reward_batch(chunk, references, self.reward_fn))
                    if self.reward_fn is not None
                    else None
                )
            for b in range(len(chunk)):
                row = {"eval/total": float(evaluated.total[b])}
                row.update({f"eval/{n}": float(v[b]) for n, v in evaluated.components.items()})
                if trained is not None:
                    row["eval/train_critic_total"] = float(trained.total[b])
                scores.append(row)
        gathered = gather_object(scores) if acc.num_processes > 1 else scores
        keys = sorted({k for row in gathered for k in row})
        result = {k: sum(r[k] for r in gathered) / len(gathered) for k in keys}
        result["eval/n"] = float(len(gathered))
        result["step"] = float(self.global_step)
        hacking = self._hacking_check(result)
        result["eval/hacking"] = 1.0 if hacking else 0.0
        self.eval_history.append(result)
        if cfg.log_with != "none":
            acc.log({k: v for k, v in result.items() if k != "step"}, step=self.global_step)
        return result

    def _hacking_check(self, current: dict[str, float]) -> bool:
        cfg = self.config
        if "eval/train_critic_total" not in current:
            return False  # no training critic to contrast with (TI, DPO, plain LoRA)
        history = [*self.eval_history, current]
        verdict = detect_reward_hacking(history, tolerance=cfg.hacking_tolerance, patience=cfg.hacking_patience)
        if verdict.new and self.accelerator.is_main_process:
            best = history[verdict.best_index]
            warnings.warn(
                f"possible reward hacking at step {self.global_step}: for {verdict.streak} held-out evaluations "
                f"in a row the evaluator's ({', '.join(critic_names(self.eval_fn))}) score stayed more than "
                f"{cfg.hacking_tolerance:g} below its best ({best['eval/total']:.4f} at step {int(best['step'])}; "
                f"now {current['eval/total']:.4f}) while the training critic's rose "
                f"({best['eval/train_critic_total']:.4f} -> {current['eval/train_critic_total']:.4f}). "
                "Consider stopping earlier, lowering lambda_reward or raising lambda_diff "
                "(`hacking_tolerance`/`hacking_patience` tune this warning).",
                RewardHackingWarning,
                stacklevel=3,
            )
        return verdict.hacking

    # ------------------------------------------------------------------ checkpoints
    def _trainer_state(self) -> dict[str, Any]:
        scaler = getattr(self.accelerator, "scaler", None)
        return {
            "_class_name": type(self).__name__,
            "global_step": self.global_step,
            "nan_streak": self.nan_streak,
            "skipped_steps": self.skipped_steps,
            "overflow_steps": self.overflow_steps,
            "eval_history": self.eval_history,
            "config_changes": self.config_changes,
            "num_processes": self.accelerator.num_processes,
            "scaler": scaler.state_dict() if scaler is not None else None,
            "config": self.config.to_dict(),
        }

    def save_checkpoint(self) -> Path:
        """Save a resumable checkpoint. Every process must call this (it ends with a barrier)."""
        acc = self.accelerator
        directory = checkpoint_dir(self.output_dir, self.global_step)
        # one writer per machine: each node can resume from its local disk, shared disks get identical files
        write = acc.is_local_main_process
        save_checkpoint(
            directory,
            lora_state=self.model.adapter_state_dict(),
            optimizer_state=self.optimizer.state_dict(),
            trainer_state=self._trainer_state(),
            write=write,
        )
        if write:
            prune_checkpoints(self.output_dir, self.config.checkpoints_total_limit)
        acc.wait_for_everyone()
        return directory

    def _resume(self, resume_from: str) -> None:
        acc = self.accelerator
        directory = resolve_resume(self.output_dir, resume_from)
        if directory is None:
            if acc.is_main_process:
                warnings.warn(
                    f"resume_from='latest' but {self.output_dir / 'checkpoints'} has no checkpoint; starting fresh.",
                    UserWarning,
                    stacklevel=3,
                )
            return
        adapter_state, optimizer_state, state = load_checkpoint(directory)
        saved_class = state.get("_class_name")
        if saved_class and saved_class != type(self).__name__:
            raise ConfigError(
                f"cannot resume from {directory}: it was written by {saved_class}, not {type(self).__name__}. "
                "Resume with the method that wrote it, or start a new run in another output folder."
            )
        changes = check_resume_config(
            state.get("config", {}),
            self.config.to_dict(),
            checkpoint=str(directory),
            allow_change=self.config.allow_config_change,
        )
        try:
            self.model.load_adapter_state_dict(adapter_state)
            self.optimizer.load_state_dict(optimizer_state)
        except (ModelLoadError, RuntimeError, ValueError, KeyError) as exc:
            raise ConfigError(
                f"cannot resume from {directory}: its adapter/optimiser state does not fit this model and adapter "
                f"({exc}). Resume with the model and adapter options the checkpoint was saved with."
            ) from None
        scaler = getattr(acc, "scaler", None)
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        self.global_step = int(state["global_step"])
        self.nan_streak = int(state.get("nan_streak", 0))
        self.skipped_steps = int(state.get("skipped_steps", 0))
        self.overflow_steps = int(state.get("overflow_steps", 0))
        self.eval_history = list(state.get("eval_history", []))
        self.config_changes = list(state.get("config_changes", []))
        if changes:
            self.config_changes.append(change_record(self.global_step, str(directory), changes))
            if acc.is_main_process:
                warnings.warn(
                    f"resuming {directory} with a changed config (allow_config_change): "
                    + "; ".join(c.describe() for c in changes)
                    + ". The run no longer equals an uninterrupted one; the change is recorded in its metadata.",
                    UserWarning,
                    stacklevel=3,
                )
        if int(state.get("num_processes", acc.num_processes)) != acc.num_processes and acc.is_main_process:
            warnings.warn(
                f"resuming a run saved with {state['num_processes']} processes on {acc.num_processes}: "
                "the data order after this step differs from the uninterrupted run.",
                UserWarning,
                stacklevel=3,
            )
        acc.wait_for_everyone()

    # ------------------------------------------------------------------ final artifact
    def artifact_meta(self) -> ArtifactMeta:
        """The artifact metadata (what trained it, how), written as ``clinalign_meta.json``."""
        from clinalign import __version__

        return ArtifactMeta(
            trainer=type(self).__name__,
            method=self.method_name() or None,
            clinalign_version=__version__,
            base_model=self.model.name_or_path,
            training_critics=self.training_critics,
            training_critic_identities=critic_identities(self.reward_fn),
            rewards=self.reward_fn.describe() if self.reward_fn is not None else [],
            class_names=self.class_names,
            steps=self.global_step,
            config_changes=self.config_changes,
            config=self.config.to_dict(),
            **self.artifact_fields(),
        )

    def metadata(self) -> dict[str, Any]:
        """:meth:`artifact_meta` as a JSON-able dict."""
        return self.artifact_meta().to_dict()

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write the final artifact plus ``clinalign_meta.json`` and a model card. Every process must call this."""
        from clinalign.training.model_card import write_model_card

        directory = Path(directory)
        main = self.accelerator.is_main_process
        self.save_artifact(directory)
        if main:
            meta = self.artifact_meta()
            meta.save(directory)
            if self.model.has_lora:  # the card describes a LoRA (how to load it, its rank and targets)
                write_model_card(directory, meta.to_dict(), eval_history=self.eval_history)
        self.accelerator.wait_for_everyone()
        return directory


def _grid(images: torch.Tensor, columns: int | None = None):
    """[N,3,H,W] in [0,1] -> one PIL image, ``columns`` per row (default: all in one row up to 8)."""
    from PIL import Image

    n, _, h, w = images.shape
    columns = columns or min(n, 8)
    rows = (n + columns - 1) // columns
    canvas = torch.zeros(3, rows * h, columns * w)
    for i in range(n):
        r, c = divmod(i, columns)
        canvas[:, r * h : (r + 1) * h, c * w : (c + 1) * w] = images[i].detach().cpu()
    array = (canvas.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return Image.fromarray(array)


__all__ = [
    "META_NAME",
    "LossOutput",
    "RewardHackingWarning",
    "TrainBatch",
    "TrainOutput",
    "Trainer",
    "TrainingDivergedError",
    "composite_rewards",
    "critic_identities",
    "critic_names",
    "lr_factor",
    "probe_classes",
    "warm_text_caches",
]
