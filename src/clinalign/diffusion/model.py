"""One object hiding the diffusers plumbing: load, encode prompts, predict noise, encode/decode images, LoRA."""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from clinalign.diffusion.adapters import (
    LoraAdapter,
    TextualInversionAdapter,
    adapters_disabled,
    textual_inversion_files,
)
from clinalign.diffusion.lora import ADAPTER_NAME, LoraSpec
from clinalign.errors import ConfigError, ModelLoadError
from clinalign.utils.torch_utils import resolve_dtype


def stable_diffusion_scheduler(prediction_type: str = "epsilon"):
    """The DDIM scheduler Stable Diffusion 1.x/2.x ship with (scaled-linear betas, 1000 train steps)."""
    from diffusers import DDIMScheduler

    return DDIMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        prediction_type=prediction_type,
    )


def stable_diffusion_pipeline(vae, text_encoder, tokenizer, unet, *, prediction_type: str = "epsilon"):
    """A ``StableDiffusionPipeline`` from its components, with :func:`stable_diffusion_scheduler` and no
    safety checker: how the tiny test pipelines and the toy base are assembled before ``save_pretrained``."""
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=stable_diffusion_scheduler(prediction_type),
        safety_checker=None,
        feature_extractor=None,
        image_encoder=None,
        requires_safety_checker=False,
    )


class DiffusionModel:
    """A Stable Diffusion 1.x/2.x model with frozen VAE, text encoder and UNet base weights.

    Build it with :func:`load_diffusion_model`. Attributes ``unet``, ``vae``, ``text_encoder``,
    ``tokenizer`` and ``scheduler`` (a DDIM scheduler: eta=0 is DDIM, eta=1 DDPM-like ancestral
    sampling) are the diffusers components; ``pipeline`` is the ``StableDiffusionPipeline`` holding
    them (used to load LoRA weights the way users do).

    SDXL would add a second text encoder and added time/size conditioning; those seams are
    :meth:`encode_prompts` (returns what the UNet is conditioned on) and :meth:`unet_forward`.
    """

    def __init__(self, pipeline: Any, *, name_or_path: str, device: torch.device, dtype: torch.dtype) -> None:
        from diffusers import DDIMScheduler

        self.pipeline = pipeline
        self.name_or_path = name_or_path
        self.device = device
        self.dtype = dtype
        self.unet = pipeline.unet
        self.vae = pipeline.vae
        self.text_encoder = pipeline.text_encoder
        self.tokenizer = pipeline.tokenizer
        if not isinstance(pipeline.scheduler, DDIMScheduler):
            pipeline.scheduler = DDIMScheduler.from_config(pipeline.scheduler.config)
        self.scheduler = pipeline.scheduler
        self._prompt_cache: dict[str, torch.Tensor] = {}
        #: trainable or loaded adapters by name ("lora", "textual_inversion"); see diffusion/adapters.py
        self.adapters: dict[str, Any] = {}
        #: placeholder tokens loaded for inference with :meth:`load_textual_inversion`
        self.textual_inversion_tokens: list[str] = []
        for module in (self.unet, self.vae, self.text_encoder):
            module.requires_grad_(False)
            module.eval()

    # ------------------------------------------------------------------ properties
    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def latent_channels(self) -> int:
        return int(self.unet.config.in_channels)

    @property
    def prediction_type(self) -> str:
        return str(self.scheduler.config.prediction_type)

    @property
    def has_lora(self) -> bool:
        return bool(getattr(self.unet, "peft_config", None))

    def check_resolution(self, resolution: int) -> None:
        if resolution % self.vae_scale_factor != 0:
            raise ConfigError(
                f"resolution must be a multiple of the VAE scale factor {self.vae_scale_factor}, got {resolution}."
            )

    # ------------------------------------------------------------------ text
    def _text_trainable(self) -> bool:
        return any(p.requires_grad for p in self.text_encoder.parameters())

    def _convert_prompt(self, prompt: str) -> str:
        # multi-vector textual-inversion tokens are written out in full, as StableDiffusionPipeline does
        adapter = self.adapters.get("textual_inversion")
        if adapter is not None:
            return adapter.expand_prompt(prompt)
        if self.textual_inversion_tokens:
            return self.pipeline.maybe_convert_prompt(prompt, self.tokenizer)
        return prompt

    def _run_text_encoder(self, prompts: Sequence[str]) -> torch.Tensor:
        tokens = self.tokenizer(
            [self._convert_prompt(p) for p in prompts],
            padding="max_length",
            max_length=self.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        )
        mask = None
        if getattr(self.text_encoder.config, "use_attention_mask", False):
            mask = tokens.attention_mask.to(self.device)
        return self.text_encoder(tokens.input_ids.to(self.device), attention_mask=mask)[0].to(self.dtype)

    def encode_prompts(self, prompts: Sequence[str], *, grad: bool = False) -> torch.Tensor:
        """Text-encoder hidden states [B,L,D], as StableDiffusionPipeline builds them.

        Without ``grad`` they are computed under no_grad and cached per prompt (not cached while a
        textual-inversion adapter trains, since its rows change every step). With ``grad`` the text
        encoder runs with autograd, so gradients reach trainable token embeddings.
        The empty prompt ``""`` gives the unconditional embedding used for classifier-free guidance.
        """
        if isinstance(prompts, str):
            prompts = [prompts]
        if grad:
            return self._run_text_encoder(prompts)
        with torch.no_grad():
            if self._text_trainable():
                return self._run_text_encoder(prompts)
            return self._encode_cached(prompts)

    def _encode_cached(self, prompts: Sequence[str]) -> torch.Tensor:
        missing = list(dict.fromkeys(p for p in prompts if p not in self._prompt_cache))
        if missing:
            hidden = self._run_text_encoder(missing)
            if len(self._prompt_cache) > 4096:  # bound memory on huge prompt sets
                self._prompt_cache.clear()
            for prompt, row in zip(missing, hidden, strict=True):
                self._prompt_cache[prompt] = row
        return torch.stack([self._prompt_cache[p] for p in prompts])

    # ------------------------------------------------------------------ UNet
    def unet_forward(
        self, latents: torch.Tensor, timestep: torch.Tensor | int, embeddings: torch.Tensor
    ) -> torch.Tensor:
        """One UNet call: noise (or v) prediction [B,C,h,w]."""
        return self.unet(latents, timestep, encoder_hidden_states=embeddings, return_dict=False)[0]

    # ------------------------------------------------------------------ VAE
    @torch.no_grad()
    def encode_images(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Real images float [B,3,H,W] in [0,1] -> scaled VAE latents [B,C,H/f,W/f] (sampled, no grad)."""
        pixels = (images.to(self.device, self.dtype) * 2.0 - 1.0).clamp(-1.0, 1.0)
        dist = self.vae.encode(pixels).latent_dist
        latents = dist.sample(generator=generator)
        return latents * self.vae.config.scaling_factor

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents -> images float32 [B,3,H,W] in [0,1]; differentiable (call under no_grad when not needed)."""
        pixels = self.vae.decode(latents.to(self.dtype) / self.vae.config.scaling_factor, return_dict=False)[0]
        return (pixels.float() / 2.0 + 0.5).clamp(0.0, 1.0)

    # ------------------------------------------------------------------ adapters
    def set_training(self, training: bool) -> None:
        """Train/eval mode of the parts that may hold trainable adapters (UNet, text encoder)."""
        self.unet.train(training)
        if self._text_trainable():
            self.text_encoder.train(training)

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        """The parameters of every adapter, in a stable order (LoRA first, then token embeddings)."""
        return [p for adapter in self.adapters.values() for p in adapter.parameters() if p.requires_grad]

    def adapter_state_dict(self) -> dict[str, torch.Tensor]:
        """Exact fp32 CPU copies of every trainable adapter's weights (LoRA in peft naming, TI rows prefixed)."""
        state: dict[str, torch.Tensor] = {}
        for adapter in self.adapters.values():
            if any(p.requires_grad for p in adapter.parameters()):
                state.update(adapter.state_dict())
        return state

    def load_adapter_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Inverse of :meth:`adapter_state_dict`."""
        from clinalign.diffusion.adapters import TI_STATE_PREFIX

        for adapter in self.adapters.values():
            if not any(p.requires_grad for p in adapter.parameters()):
                continue
            if adapter.name == "textual_inversion":
                adapter.load_state_dict({k: v for k, v in state.items() if k.startswith(TI_STATE_PREFIX)})
            else:
                adapter.load_state_dict({k: v for k, v in state.items() if not k.startswith(TI_STATE_PREFIX)})
        self._prompt_cache.clear()

    def adapters_disabled(self, *names: str):
        """Context manager: the named adapters (default: all) switched off, e.g. for a DPO reference pass."""
        chosen = [a for n, a in self.adapters.items() if not names or n in names]
        return adapters_disabled(chosen)

    def add_lora(self, spec: LoraSpec) -> list[torch.nn.Parameter]:
        """Inject a trainable LoRA adapter (fp32) into the UNet; returns its parameters."""
        if self.has_lora:
            raise ConfigError("this model already has a LoRA adapter; load a fresh model to add another.")
        adapter = LoraAdapter.inject(self.unet, spec)
        self.adapters["lora"] = adapter
        return adapter.parameters()

    def add_textual_inversion(
        self, placeholder_tokens: Mapping[str, str], *, initializer_token: str, num_vectors: int = 1
    ) -> list[torch.nn.Parameter]:
        """Add trainable placeholder tokens (class -> token), initialised from ``initializer_token``."""
        if "textual_inversion" in self.adapters or self.textual_inversion_tokens:
            raise ConfigError("this model already has textual-inversion tokens; load a fresh model.")
        adapter = TextualInversionAdapter(
            self.text_encoder,
            self.tokenizer,
            placeholder_tokens,
            initializer_token=initializer_token,
            num_vectors=num_vectors,
        )
        self.adapters["textual_inversion"] = adapter
        self._prompt_cache.clear()
        return adapter.parameters()

    def load_textual_inversion(self, directory: str | os.PathLike[str]) -> list[str]:
        """Load textual-inversion embeddings (a folder written by ``save_embeddings`` or diffusers TI files)
        for inference, the way ``pipe.load_textual_inversion`` does; returns the placeholder tokens."""
        from safetensors import safe_open

        files = textual_inversion_files(directory)
        tokens = []
        for file in files:
            with safe_open(str(file), framework="pt") as handle:
                keys = list(handle.keys())
            if len(keys) != 1:
                raise ModelLoadError(f"{file}: a textual-inversion file holds one token, found keys {keys[:5]}.")
            tokens.append(keys[0])
        try:
            self.pipeline.load_textual_inversion([str(f) for f in files], token=tokens)
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"could not load textual inversion from {directory}: {exc}") from exc
        self.text_encoder.requires_grad_(False)
        self.textual_inversion_tokens.extend(tokens)
        self._prompt_cache.clear()
        return tokens

    def lora_parameters(self) -> list[torch.nn.Parameter]:
        adapter = self.adapters.get("lora")
        return adapter.parameters() if adapter is not None else []

    def save_lora(
        self,
        directory: str | os.PathLike[str],
        *,
        is_main_process: bool = True,
        provenance: Mapping[str, Any] | None = None,
    ) -> Path:
        """Write the LoRA in diffusers format (``pipe.load_lora_weights(directory)`` loads it).

        The weights file's metadata records this model as the base model plus ``provenance`` (e.g. a
        trainer's ``metadata()``: training critics, rewards); see :func:`clinalign.diffusion.lora.lora_provenance`.
        """
        if not self.has_lora:
            raise ConfigError("the model has no LoRA adapter to save; call add_lora() or train first.")
        provenance = {"base_model": self.name_or_path, **(provenance or {})}
        adapter = self.adapters.get("lora") or LoraAdapter(self.unet, None)
        return adapter.save(directory, is_main_process=is_main_process, provenance=provenance)

    def load_lora(
        self, directory: str | os.PathLike[str], *, allow_pickle: bool = False, trainable: bool = False
    ) -> list[torch.nn.Parameter]:
        """Load a diffusers-format LoRA (a directory written by :meth:`save_lora`, or a hub id).

        For inference by default (frozen). ``trainable=True`` loads it as the adapter to keep training
        (fp32, gradients on; e.g. CRAFT from a TI+LoRA start) and returns its parameters.
        Safetensors only; ``allow_pickle`` lets a trusted *local* ``.bin`` LoRA load (refused for hub ids).
        """
        if trainable and self.has_lora:
            raise ConfigError("this model already has a LoRA adapter; load a fresh model to continue another.")
        from clinalign.utils.weights import check_weights_source

        path = Path(directory).expanduser()
        if _looks_like_path(str(directory)) and not path.exists():
            raise ModelLoadError(f"LoRA directory not found: {directory}. Check the path.")
        check_weights_source(directory, what="LoRA", allow_pickle=allow_pickle)
        from diffusers.utils import logging as diffusers_logging

        # diffusers warns that the text encoder has no LoRA keys; our LoRA is UNet-only by design
        verbosity = diffusers_logging.get_verbosity()
        diffusers_logging.set_verbosity_error()
        try:
            kwargs: dict[str, Any] = {"adapter_name": ADAPTER_NAME} if trainable else {}
            self.pipeline.load_lora_weights(str(directory), use_safetensors=None if allow_pickle else True, **kwargs)
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"could not load LoRA weights from {directory}: {exc}") from exc
        finally:
            diffusers_logging.set_verbosity(verbosity)
        for name, p in self.unet.named_parameters():
            if "lora_" in name:
                p.requires_grad_(False)
        self._prompt_cache.clear()
        if not trainable:
            return []
        adapter = LoraAdapter(self.unet, None)
        self.adapters["lora"] = adapter
        return adapter.make_trainable()


def _looks_like_path(name: str) -> bool:
    return name.startswith(("/", "./", "../", "~")) or os.path.isabs(name) or name.count("/") > 1 or Path(name).exists()


def load_diffusion_model(
    name_or_path: str | os.PathLike[str],
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype | str | None = None,
    revision: str | None = None,
    allow_pickle: bool = False,
) -> DiffusionModel:
    """Load a Stable Diffusion 1.x/2.x pipeline (hub id or local diffusers directory) with frozen parts.

    Args:
        name_or_path: e.g. ``"stabilityai/stable-diffusion-2-1-base"`` or a directory with ``model_index.json``.
        device: default CUDA when available, else CPU.
        dtype: weights dtype of the frozen components (``"fp32"``, ``"bf16"``, ``"fp16"``); LoRA weights
            added later stay fp32.
        revision: hub revision.
        allow_pickle: let a trusted *local* pipeline with pickle (``.bin``) weights load; refused for hub ids.
            Without it only safetensors weights load.
    """
    from diffusers import StableDiffusionPipeline

    from clinalign.utils.weights import check_weights_source

    name = str(name_or_path)
    if not name.strip():
        raise ConfigError(
            "model is empty; pass a hub id such as 'stabilityai/stable-diffusion-2-1-base' or a directory."
        )
    if _looks_like_path(name):
        local = Path(name).expanduser()
        if not local.is_dir():
            raise ModelLoadError(f"diffusion model directory not found: {name}. Check the path, or pass a hub id.")
        if not (local / "model_index.json").is_file():
            raise ModelLoadError(
                f"{name} is not a diffusers pipeline directory (no model_index.json). "
                "Save one with pipe.save_pretrained(dir)."
            )
        name = str(local)
    check_weights_source(name, what="diffusion model", allow_pickle=allow_pickle)
    torch_dtype = resolve_dtype(dtype)
    dev = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        with warnings.catch_warnings():
            # newer diffusers renamed torch_dtype to dtype; the old name still works across our range
            warnings.filterwarnings("ignore", message=".*torch_dtype.*", category=FutureWarning)
            pipe = StableDiffusionPipeline.from_pretrained(
                name,
                torch_dtype=torch_dtype,
                revision=revision,
                safety_checker=None,
                feature_extractor=None,
                requires_safety_checker=False,
                use_safetensors=None if allow_pickle else True,
            )
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"could not load the diffusion model '{name}': {exc}") from exc
    if getattr(pipe.unet.config, "addition_embed_type", None):
        raise ConfigError(f"'{name}' looks like SDXL (added conditioning); only SD 1.x/2.x is supported for now.")
    pipe.set_progress_bar_config(disable=True)
    pipe.to(dev)
    return DiffusionModel(pipe, name_or_path=str(name_or_path), device=dev, dtype=torch_dtype)
