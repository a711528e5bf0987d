"""A linear probe on frozen critic embeddings: the classifier behind the DD reward and CAS's DD.

One linear layer trained with Adam on L2-normalised embeddings of real training images (the paper's
protocol: lr 1e-3, 50 epochs, batch 256). Saved as safetensors plus a JSON config that records the
class names, the critic it was fitted in and its training metrics.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from clinalign import __version__
from clinalign.errors import ConfigError, DataError
from clinalign.utils.io import atomic_open, read_json, write_json

WEIGHTS_NAME = "probe.safetensors"
CONFIG_NAME = "probe_config.json"
_REQUIRED_KEYS = ("class_names", "embed_dim")
_KNOWN_KEYS = {*_REQUIRED_KEYS, "critic_name", "critic_fingerprint", "metrics", "_class_name", "_clinalign_version"}


def _as_tensor(values: Any, name: str, dtype: torch.dtype | None = None) -> torch.Tensor:
    if isinstance(values, torch.Tensor):
        tensor = values.detach()
    elif isinstance(values, np.ndarray):
        tensor = torch.from_numpy(values)
    else:
        try:
            tensor = torch.as_tensor(values)
        except (TypeError, ValueError) as exc:
            raise DataError(f"{name} must be a tensor or array, got {type(values).__name__}.") from exc
    return tensor.to(dtype) if dtype is not None else tensor


class LinearProbe(nn.Module):
    """Linear classifier on critic embeddings.

    Attributes:
        class_names: label names, index i is class i.
        critic_name: name of the critic whose embedding space this probe lives in (or ``None``).
        critic_fingerprint: that critic's weights fingerprint (or ``None``), so a local copy of the
            same model is recognised whatever its path.
        embed_dim: input dimension D.
        metrics: training metrics recorded by :meth:`fit` (train/val accuracy, loss).
    """

    def __init__(
        self,
        embed_dim: int,
        class_names: Sequence[str],
        *,
        critic_name: str | None = None,
        critic_fingerprint: str | None = None,
        metrics: dict[str, float] | None = None,
    ) -> None:
        super().__init__()
        names = [str(c) for c in class_names]
        if len(names) < 2:
            raise ConfigError(f"a probe needs at least 2 classes, got {len(names)}: {names}.")
        if len(set(names)) != len(names):
            raise ConfigError(f"class_names has duplicates: {names}.")
        if embed_dim < 1:
            raise ConfigError(f"embed_dim must be positive, got {embed_dim}.")
        self.linear = nn.Linear(int(embed_dim), len(names))
        self.class_names = names
        self.critic_name = critic_name
        self.critic_fingerprint = critic_fingerprint
        self.embed_dim = int(embed_dim)
        self.metrics: dict[str, float] = dict(metrics or {})

    # ------------------------------------------------------------------ inference
    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def index_of(self, label: str | int) -> int:
        """Class index for a label name (or a valid index); unknown labels raise :class:`DataError`."""
        if isinstance(label, (int, np.integer)) and not isinstance(label, bool):
            if 0 <= int(label) < self.num_classes:
                return int(label)
            raise DataError(f"label index {label} out of range for a probe with {self.num_classes} classes.")
        try:
            return self.class_names.index(str(label))
        except ValueError:
            raise DataError(
                f"label '{label}' is not one of the probe's classes {self.class_names}. Retrain the probe on "
                "data with this class, or fix the label."
            ) from None

    def encode_labels(self, labels: Sequence[str | int] | torch.Tensor | np.ndarray) -> torch.Tensor:
        """Map label names or indices to a LongTensor of class indices."""
        if isinstance(labels, (torch.Tensor, np.ndarray)):
            labels = labels.tolist()
        return torch.tensor([self.index_of(label) for label in labels], dtype=torch.long)

    def matches_critic(self, critic: Any) -> bool:
        """True when this probe lives in ``critic``'s space: same weights fingerprint, else same name.

        A probe that records neither matches any critic of the right embedding size.
        """
        if int(getattr(critic, "embed_dim", self.embed_dim)) != self.embed_dim:
            return False
        fingerprint = getattr(critic, "fingerprint", None)
        if self.critic_fingerprint is not None and fingerprint is not None:
            return self.critic_fingerprint == fingerprint
        return self.critic_name is None or self.critic_name == getattr(critic, "name", None)

    def check_critic(self, critic: Any, *, role: str = "critic") -> None:
        """Raise :class:`ConfigError` unless :meth:`matches_critic`; the message says how to fix it."""
        if int(critic.embed_dim) != self.embed_dim:
            raise ConfigError(
                f"the probe expects {self.embed_dim}-d embeddings but {role} '{critic.name}' gives "
                f"{critic.embed_dim}-d. Train a probe for it with `clinalign probe train --critic ...`."
            )
        if not self.matches_critic(critic):
            raise ConfigError(
                f"the probe was fitted on embeddings of critic '{self.critic_name}', not on the {role} "
                f"'{critic.name}'. A probe only works in its own critic's space; train one for this {role} "
                "with `clinalign probe train --critic ...`."
            )

    def _check_embeddings(self, embeddings: torch.Tensor) -> torch.Tensor:
        if embeddings.dim() != 2 or embeddings.shape[1] != self.embed_dim:
            raise DataError(
                f"probe expects embeddings of shape [N, {self.embed_dim}], got {list(embeddings.shape)}. "
                "Were they computed with the critic this probe was fitted on?"
            )
        weight = self.linear.weight
        return embeddings.to(device=weight.device, dtype=weight.dtype)

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Logits [N, C]."""
        return self.linear(self._check_embeddings(embeddings))

    def log_prob(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Log-probabilities [N, C]; differentiable with respect to ``embeddings``."""
        return torch.log_softmax(self.forward(embeddings), dim=-1)

    @torch.no_grad()
    def predict(self, embeddings: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Predicted class indices, LongTensor [N]."""
        return self.forward(_as_tensor(embeddings, "embeddings", torch.float32)).argmax(dim=-1).cpu()

    @torch.no_grad()
    def accuracy(self, embeddings: torch.Tensor | np.ndarray, labels: Sequence[str | int] | torch.Tensor) -> float:
        """Fraction of ``labels`` (names or indices) predicted correctly."""
        targets = self.encode_labels(labels)
        predictions = self.predict(embeddings)
        if len(targets) != len(predictions):
            raise DataError(f"got {len(predictions)} embeddings but {len(targets)} labels.")
        return float((predictions == targets).float().mean())

    # ------------------------------------------------------------------ training
    @classmethod
    def fit(
        cls,
        embeddings: torch.Tensor | np.ndarray,
        labels: Sequence[str | int] | torch.Tensor | np.ndarray,
        class_names: Sequence[str],
        *,
        epochs: int = 50,
        lr: float = 1e-3,
        batch_size: int = 256,
        seed: int = 0,
        critic_name: str | None = None,
        critic_fingerprint: str | None = None,
        val_embeddings: torch.Tensor | np.ndarray | None = None,
        val_labels: Sequence[str | int] | torch.Tensor | np.ndarray | None = None,
    ) -> LinearProbe:
        """Fit a probe with Adam on mini-batches (cross-entropy), deterministically for a given seed.

        ``labels`` are class names or indices into ``class_names``. Validation data, when given, is
        only evaluated (its accuracy is recorded in ``metrics``).
        """
        x = _as_tensor(embeddings, "embeddings", torch.float32)
        if x.dim() != 2 or x.shape[0] == 0:
            raise DataError(f"embeddings must have shape [N, D] with N > 0, got {list(x.shape)}.")
        if epochs < 1 or batch_size < 1 or lr <= 0:
            raise ConfigError(f"need epochs >= 1, batch_size >= 1, lr > 0; got {epochs}, {batch_size}, {lr}.")
        probe = cls(x.shape[1], class_names, critic_name=critic_name, critic_fingerprint=critic_fingerprint)
        y = probe.encode_labels(labels)
        if len(y) != len(x):
            raise DataError(f"got {len(x)} embeddings but {len(y)} labels; they must match one to one.")
        generator = torch.Generator().manual_seed(seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            probe.linear.reset_parameters()
        optimizer = torch.optim.Adam(probe.parameters(), lr=lr)
        loss = torch.tensor(float("nan"))
        for _ in range(epochs):
            order = torch.randperm(len(x), generator=generator)
            for start in range(0, len(x), batch_size):
                index = order[start : start + batch_size]
                loss = nn.functional.cross_entropy(probe.linear(x[index]), y[index])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
        probe.eval()
        probe.metrics = {
            "train_accuracy": probe.accuracy(x, y),
            "train_loss": float(loss.detach()),
            "n_train": float(len(x)),
        }
        if val_embeddings is not None and val_labels is not None:
            probe.metrics["val_accuracy"] = probe.accuracy(val_embeddings, val_labels)
            probe.metrics["n_val"] = float(len(probe.encode_labels(val_labels)))
        return probe

    # ------------------------------------------------------------------ persistence
    def config_dict(self) -> dict[str, Any]:
        return {
            "_class_name": type(self).__name__,
            "_clinalign_version": __version__,
            "class_names": list(self.class_names),
            "critic_fingerprint": self.critic_fingerprint,
            "critic_name": self.critic_name,
            "embed_dim": self.embed_dim,
            "metrics": dict(self.metrics),
        }

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write ``probe.safetensors`` and ``probe_config.json`` into ``directory``."""
        from safetensors.torch import save

        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        with atomic_open(out / WEIGHTS_NAME, "wb", encoding=None) as handle:
            handle.write(save(state))
        write_json(out / CONFIG_NAME, self.config_dict())
        return out

    @classmethod
    def load(
        cls,
        directory: str | os.PathLike[str],
        *,
        critic_name: str | None = None,
        embed_dim: int | None = None,
        critic: Any | None = None,
        map_location: str | torch.device = "cpu",
    ) -> LinearProbe:
        """Load a probe saved with :meth:`save`.

        Passing ``critic`` (checked by weights fingerprint, then name) or ``critic_name`` /
        ``embed_dim`` checks the probe belongs to that critic's space and raises
        :class:`ConfigError` when it does not.
        """
        from clinalign.utils.weights import PICKLE_SUFFIXES, PickleWeightsError, convert_hint, load_safetensors

        folder = Path(directory)
        config_path, weights_path = folder / CONFIG_NAME, folder / WEIGHTS_NAME
        if folder.is_dir() and not weights_path.is_file():
            pickled = sorted(p.name for p in folder.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES)
            if pickled:
                raise PickleWeightsError(
                    f"{folder}: the probe weights are pickle files ({', '.join(pickled)}), not {WEIGHTS_NAME}. "
                    f"{convert_hint('probe')}"
                )
        if not config_path.is_file() or not weights_path.is_file():
            raise DataError(
                f"{folder}: not a probe directory (expected {CONFIG_NAME} and {WEIGHTS_NAME}). "
                "Create one with `clinalign probe train` or LinearProbe.save()."
            )
        config = read_json(config_path)
        if not isinstance(config, dict):
            raise DataError(f"{config_path}: expected a JSON object with {list(_REQUIRED_KEYS)}.")
        missing = [k for k in _REQUIRED_KEYS if k not in config]
        if missing:
            raise DataError(f"{config_path}: missing required keys {missing}.")
        unknown = sorted(set(config) - _KNOWN_KEYS)
        if unknown:
            warnings.warn(
                f"{config_path}: ignoring unknown keys {unknown}; it may come from a newer clinalign. "
                "Upgrade clinalign to use them.",
                stacklevel=2,
            )
        dim, names = _checked_shape(config, config_path, weights_path)
        if critic is not None and int(critic.embed_dim) != dim:
            raise ConfigError(
                f"{folder}: the probe expects {dim}-d embeddings but critic '{critic.name}' gives "
                f"{critic.embed_dim}-d. Train a probe for it with `clinalign probe train --critic ...`."
            )
        if embed_dim is not None and dim != int(embed_dim):
            raise ConfigError(
                f"{folder}: the probe expects {dim}-d embeddings but the critic gives {embed_dim}-d. "
                "Train a probe for this critic with `clinalign probe train --critic ...`."
            )
        saved_critic = config.get("critic_name")
        if critic_name is not None and saved_critic is not None and saved_critic != critic_name:
            raise ConfigError(
                f"{folder}: the probe was fitted on embeddings of critic '{saved_critic}', not '{critic_name}'. "
                "A probe only works in its own critic's space; train one for this critic with "
                "`clinalign probe train --critic ...`."
            )
        # sizes are checked against the weights file's header above: nothing is allocated from the JSON alone
        probe = cls(
            dim,
            names,
            critic_name=saved_critic,
            critic_fingerprint=config.get("critic_fingerprint"),
            metrics=config.get("metrics") or {},
        )
        state = load_safetensors(weights_path, what="probe", device=str(map_location))
        try:
            probe.load_state_dict(state)
        except RuntimeError as exc:
            raise DataError(f"{weights_path}: weights do not match {config_path}: {exc}") from exc
        probe.eval()
        if critic is not None:
            try:
                probe.check_critic(critic)
            except ConfigError as exc:
                raise ConfigError(f"{folder}: {exc}") from None
        return probe

    def extra_repr(self) -> str:
        return f"classes={self.class_names}, critic={self.critic_name!r}"


def _checked_shape(config: dict[str, Any], config_path: Path, weights_path: Path) -> tuple[int, list[str]]:
    """``embed_dim`` and class names from the config, checked against the weights header (no tensor is read)."""
    from clinalign.utils.weights import safetensors_shapes

    names = config["class_names"]
    if not isinstance(names, list) or not all(isinstance(n, (str, int)) for n in names):
        raise DataError(f"{config_path}: class_names must be a list of class names, got {type(names).__name__}.")
    raw_dim = config["embed_dim"]
    if isinstance(raw_dim, bool) or not isinstance(raw_dim, int) or raw_dim < 1:
        raise DataError(f"{config_path}: embed_dim must be a positive integer, got {raw_dim!r}.")
    shapes = safetensors_shapes(weights_path, what="probe")
    expected = {"linear.weight": [len(names), raw_dim], "linear.bias": [len(names)]}
    if shapes != expected:
        raise DataError(
            f"{weights_path}: holds tensors {shapes}, but {config_path} (embed_dim {raw_dim}, {len(names)} classes) "
            f"needs {expected}. The two files do not belong together; save the probe again with LinearProbe.save()."
        )
    return raw_dim, [str(n) for n in names]
