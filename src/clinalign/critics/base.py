"""The :class:`Critic` interface shared by all vision-language backends."""

from __future__ import annotations

import hashlib
import warnings
from abc import ABC, abstractmethod
from collections.abc import Sequence

import torch

from clinalign.critics.preprocess import ImagePreprocessConfig, preprocess_images
from clinalign.errors import DataError


class TextTruncationWarning(UserWarning):
    """Some texts were longer than the critic's token limit and were truncated."""


class Critic(ABC):
    """A frozen vision-language model used as a reward or evaluation encoder.

    Subclasses implement the backend-specific hooks (``_image_features``, ``_text_features``,
    ``_token_lengths``); this base class owns input validation, differentiable preprocessing,
    L2 normalisation, the text-embedding cache and truncation warnings.

    Attributes:
        name: stable identity string, e.g. ``"transformers:google/medsiglip-448"``. Used to keep the
            training critic and the evaluator apart; equal names mean the same model.
        embed_dim: dimension D of the joint embedding space.
        max_text_tokens: the text tower's token limit (longer texts are truncated with a warning).
        preprocess_config: how pixels are resized, cropped and normalised before the image tower.
    """

    name: str
    embed_dim: int
    max_text_tokens: int
    preprocess_config: ImagePreprocessConfig

    def __init__(self, module: torch.nn.Module) -> None:
        self._module = module
        self._text_cache: dict[str, torch.Tensor] = {}
        self.image_encoder_calls = 0  # how many times the image tower ran (rewards share embeddings)
        self._fingerprint: str | None = None
        self._freeze()

    # ------------------------------------------------------------------ backend hooks
    @abstractmethod
    def _image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Unnormalised image features [B,D] from preprocessed pixels."""

    @abstractmethod
    def _text_features(self, texts: list[str]) -> torch.Tensor:
        """Unnormalised text features [N,D]; tokenisation (with truncation) happens here."""

    @abstractmethod
    def _token_lengths(self, texts: list[str]) -> list[int]:
        """Untruncated token counts, to report how many texts exceed ``max_text_tokens``."""

    def _prepare_pixels(self, images: torch.Tensor) -> torch.Tensor:
        """Differentiable preprocessing of [B,3,H,W] float32 pixels in [0,1]; backends may override."""
        return preprocess_images(images, self.preprocess_config)

    # ------------------------------------------------------------------ properties
    @property
    def module(self) -> torch.nn.Module:
        """The underlying frozen model."""
        return self._module

    @property
    def device(self) -> torch.device:
        return next(self._module.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self._module.parameters()).dtype

    @property
    def fingerprint(self) -> str:
        """Content hash of the weights (names, shapes and leading values of every tensor).

        Two critics with equal fingerprints are the same model however they were loaded (hub id
        or local copy), which is what the training-critic vs evaluator check needs.
        """
        if self._fingerprint is None:
            digest = hashlib.sha256()
            for name, tensor in sorted(self._module.state_dict().items()):
                digest.update(f"{name}:{tuple(tensor.shape)}".encode())
                head = tensor.detach().flatten()[:4096].to("cpu", torch.float32)
                digest.update(head.numpy().tobytes())
            self._fingerprint = digest.hexdigest()[:16]
        return self._fingerprint

    def identity(self) -> dict[str, str]:
        """``{"name": ..., "fingerprint": ...}``, as recorded in training metadata."""
        return {"name": self.name, "fingerprint": self.fingerprint}

    @property
    def image_size(self) -> int:
        """Side of the square image the image tower sees."""
        return self.preprocess_config.output_size

    # ------------------------------------------------------------------ public API
    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Critic:
        """Move the critic; clears the text cache (cached embeddings live on the old device)."""
        self._module.to(device=device, dtype=dtype)
        self._text_cache.clear()
        self._freeze()
        return self

    def train(self, mode: bool = True) -> Critic:
        """Critics are frozen: they never leave eval mode, whatever a wrapping trainer asks."""
        self._module.eval()
        return self

    def eval(self) -> Critic:
        self._module.eval()
        return self

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """Embed images: float [B,3,H,W] (or [B,1,H,W] grayscale) in [0,1] -> L2-normalised float32 [B,D].

        Differentiable with respect to ``images``; the critic's own parameters never get gradients.
        """
        images = self._validate_images(images)
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        pixels = self._prepare_pixels(images.to(self.device, torch.float32))
        features = self._image_features(pixels.to(self.dtype))
        self.image_encoder_calls += 1
        return torch.nn.functional.normalize(features.float(), dim=-1)

    @torch.no_grad()
    def encode_texts(self, texts: Sequence[str], *, batch_size: int = 64) -> torch.Tensor:
        """Embed texts: list of N strings -> L2-normalised float32 [N,D], no grad.

        Each distinct text is encoded once per critic and cached. Texts over ``max_text_tokens``
        are truncated, with one :class:`TextTruncationWarning` per call counting them.
        """
        if isinstance(texts, str):
            raise DataError("encode_texts expects a list of strings, got a single string; wrap it in a list.")
        texts = list(texts)
        if not texts:
            raise DataError("encode_texts got an empty list of texts; pass at least one string.")
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise DataError(f"encode_texts: item {i} is {type(text).__name__}, expected str.")
        missing = list(dict.fromkeys(t for t in texts if t not in self._text_cache))
        if missing:
            lengths = self._token_lengths(missing)
            too_long = sum(1 for n in lengths if n > self.max_text_tokens)
            if too_long:
                warnings.warn(
                    f"{too_long} of {len(missing)} new texts exceed {self.name}'s limit of "
                    f"{self.max_text_tokens} tokens and were truncated (longest: {max(lengths)} tokens). "
                    "Shorten enriched prompts/checklists or use a critic with a longer text context.",
                    TextTruncationWarning,
                    stacklevel=2,
                )
            for start in range(0, len(missing), batch_size):
                chunk = missing[start : start + batch_size]
                features = torch.nn.functional.normalize(self._text_features(chunk).float(), dim=-1)
                for text, row in zip(chunk, features, strict=True):
                    self._text_cache[text] = row
        return torch.stack([self._text_cache[t] for t in texts])

    def clear_cache(self) -> None:
        """Forget cached text embeddings."""
        self._text_cache.clear()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, embed_dim={self.embed_dim}, device={self.device})"

    # ------------------------------------------------------------------ internals
    def _freeze(self) -> None:
        self._module.eval()
        for parameter in self._module.parameters():
            parameter.requires_grad_(False)

    @staticmethod
    def _validate_images(images: torch.Tensor) -> torch.Tensor:
        if not isinstance(images, torch.Tensor):
            raise DataError(
                f"images must be a torch.Tensor [B,3,H,W] in [0,1], got {type(images).__name__}. "
                "Convert PIL images with clinalign.data.images.pil_to_tensor."
            )
        if images.dim() != 4 or images.shape[1] not in (1, 3):
            raise DataError(
                f"images must have shape [B,3,H,W] or [B,1,H,W], got {list(images.shape)}. "
                "Add a batch dimension with images.unsqueeze(0) or move channels first with permute(0,3,1,2)."
            )
        if not torch.is_floating_point(images):
            raise DataError(
                f"images must be a float tensor in [0,1], got dtype {images.dtype}. Use images.float() / 255."
            )
        if images.shape[0] == 0:
            raise DataError("images is an empty batch (B=0).")
        lo, hi = float(images.detach().amin()), float(images.detach().amax())
        if lo < -1e-3 or hi > 1.0 + 1e-3:
            hint = " They look like [-1,1] pixels: use (images + 1) / 2." if lo >= -1.001 and lo < -0.01 else ""
            raise DataError(f"images must be in [0,1], got values in [{lo:.3f}, {hi:.3f}].{hint}")
        return images


def same_model(critic: Critic, recorded: dict[str, str] | str) -> bool:
    """True when ``critic`` is the model described by ``recorded`` (an :meth:`Critic.identity` dict or a name)."""
    if isinstance(recorded, str):
        return recorded == critic.name
    if recorded.get("fingerprint") and recorded["fingerprint"] == critic.fingerprint:
        return True
    return recorded.get("name") == critic.name
