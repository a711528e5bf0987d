"""Independent image encoders for the evaluation checks: DINOv2 (vision only) through transformers, or any critic.

The memorization check measures nearest-neighbour distances in an encoder that neither trained nor scores
the generator. Its default is DINOv2 (``facebook/dinov2-small``, 22M parameters, 384-d CLS embedding;
``facebook/dinov2-base`` is the 768-d alternative), a self-supervised model whose embedding space
retrieves near-duplicates well. :func:`load_encoder` accepts a hub id or a local directory of any
transformers vision backbone exposing ``pooler_output`` (DINOv2, ViT, ...) and, for anything else, a
critic (``load_critic``: CLIP, SigLIP, PLIP, ``open_clip:...``).
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

import torch

from clinalign.errors import ConfigError

DEFAULT_ENCODER = "facebook/dinov2-small"
# vision-only backbones loaded as an ImageEncoder; every other model type goes through load_critic
VISION_MODEL_TYPES = ("dinov2", "dinov2_with_registers", "vit", "vit_msn", "deit")
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


class ImageEncoder:
    """A frozen vision backbone from transformers with the image side of the critic interface.

    ``encode_images(images [N,3,H,W] in [0,1]) -> L2-normalised float32 [N,D]``: images are resized to
    ``image_size`` (bilinear), normalised with the processor's mean/std, and embedded as the backbone's
    ``pooler_output`` (for DINOv2: the layer-normed CLS token). ``name``, ``image_size``, ``embed_dim``,
    ``device`` and ``fingerprint`` (a hash of the weights) are what the embedding helpers read.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        *,
        name: str,
        image_size: int,
        mean: tuple[float, ...] = _IMAGENET_MEAN,
        std: tuple[float, ...] = _IMAGENET_STD,
    ) -> None:
        self.model = model.eval().requires_grad_(False)
        self.name = name
        self.image_size = int(image_size)
        self.embed_dim = int(model.config.hidden_size)
        parameter = next(model.parameters())
        self.device = parameter.device
        self.dtype = parameter.dtype
        self._mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        self._std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
        self._fingerprint: str | None = None

    @property
    def fingerprint(self) -> str:
        if self._fingerprint is None:
            digest = hashlib.sha256()
            for key, tensor in sorted(self.model.state_dict().items()):
                digest.update(f"{key}:{tuple(tensor.shape)}".encode())
                digest.update(tensor.detach().flatten()[:4096].to("cpu", torch.float32).numpy().tobytes())
            self._fingerprint = digest.hexdigest()[:16]
        return self._fingerprint

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """Images [N,3,H,W] in [0,1] -> normalised pixel values [N,3,S,S] (S = ``image_size``)."""
        if images.dim() != 4 or images.shape[1] not in (1, 3):
            raise ConfigError(f"images must be [N,3,H,W] in [0,1], got shape {list(images.shape)}.")
        images = images.float()
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        if tuple(images.shape[-2:]) != (self.image_size, self.image_size):
            images = torch.nn.functional.interpolate(
                images, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False, antialias=True
            )
        return (images - self._mean) / self._std

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        pixels = self.preprocess(images.cpu()).to(self.device, self.dtype)
        output = self.model(pixel_values=pixels)
        pooled = output.pooler_output if getattr(output, "pooler_output", None) is not None else None
        if pooled is None:
            pooled = output.last_hidden_state[:, 0]
        return torch.nn.functional.normalize(pooled.float(), dim=-1)

    def __repr__(self) -> str:
        return f"ImageEncoder(name={self.name!r}, embed_dim={self.embed_dim}, image_size={self.image_size})"


def _not_loadable(name: str, exc: BaseException) -> ConfigError:
    local = os.path.isdir(os.path.expanduser(name))
    hint = (
        f"the folder has no loadable transformers model ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})"
        if local
        else "its weights are not in the local Hugging Face cache and cannot be downloaded now (offline?)"
    )
    return ConfigError(
        f"cannot load the encoder {name!r}: {hint}. Download it once where there is internet "
        f"(`huggingface-cli download {name if not local else DEFAULT_ENCODER}`, or "
        f"`python -c \"from transformers import AutoModel; AutoModel.from_pretrained('{DEFAULT_ENCODER}')\"`) "
        "and rerun, or point --encoder at a local copy (a folder with config.json and the weights), at any "
        "critic (e.g. --encoder google/siglip-base-patch16-224), or skip the encoder part with --encoder none."
    )


def load_encoder(name: str, *, device: str | None = None, dtype: str = "fp32") -> Any:
    """An image encoder by hub id or local directory: a vision backbone (DINOv2, ViT) as an
    :class:`ImageEncoder`, anything else as a critic (``open_clip:...`` too). A model that cannot be
    loaded (not cached while offline, a folder without weights) is a :class:`ConfigError` saying how to
    get it."""
    if name.startswith("open_clip:"):
        from clinalign.critics import load_critic

        return load_critic(name, device=device, dtype=dtype)
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(os.path.expanduser(name))
    except (OSError, ValueError) as exc:
        raise _not_loadable(name, exc) from None
    if config.model_type not in VISION_MODEL_TYPES:
        from clinalign.critics import load_critic

        return load_critic(name, device=device, dtype=dtype)
    import transformers
    from transformers import AutoModel

    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    if dtype not in dtypes:
        raise ConfigError(f"dtype must be one of {list(dtypes)}, got {dtype!r}.")
    try:
        key = "dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype"
        model = AutoModel.from_pretrained(os.path.expanduser(name), use_safetensors=True, **{key: dtypes[dtype]})
    except (OSError, ValueError) as exc:
        raise _not_loadable(name, exc) from None
    size, mean, std = _processor_settings(name, config)
    target = torch.device(device) if device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return ImageEncoder(model.to(target), name=name, image_size=size, mean=mean, std=std)


def _height(size: Any) -> int | None:
    """``height`` of a processor size (a dict, or transformers 5's ``SizeDict``)."""
    value = size.get("height") if isinstance(size, dict) else getattr(size, "height", None)
    return int(value) if value else None


def _processor_settings(name: str, config: Any) -> tuple[int, tuple[float, ...], tuple[float, ...]]:
    """Input side and normalisation from the model's image processor (its crop size), else the config."""
    from transformers import AutoImageProcessor

    size = int(getattr(config, "image_size", 224))
    mean, std = _IMAGENET_MEAN, _IMAGENET_STD
    try:
        processor = AutoImageProcessor.from_pretrained(os.path.expanduser(name))
    except (OSError, ValueError):  # no preprocessor_config.json: the config's size, ImageNet statistics
        return size, mean, std
    crop = _height(getattr(processor, "crop_size", None)) if getattr(processor, "do_center_crop", False) else None
    size = int(crop or _height(getattr(processor, "size", None)) or size)
    mean = tuple(getattr(processor, "image_mean", None) or mean)
    std = tuple(getattr(processor, "image_std", None) or std)
    return size, mean, std


__all__ = ["DEFAULT_ENCODER", "ImageEncoder", "load_encoder"]
