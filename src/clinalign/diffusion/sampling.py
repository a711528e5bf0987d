"""Differentiable DDIM/DDPM-style sampling with gradients truncated to the last K steps (DRaFT-K).

The first T−K denoising steps run under ``torch.no_grad()``; the last K keep the autograd graph, with
each UNet call gradient-checkpointed (only its inputs are saved; activations are recomputed in the
backward pass), and the VAE decode also runs with gradients. Memory for backward therefore depends on
K, not on T. The step maths is diffusers' own ``DDIMScheduler.step``, so for the same seed a plain
``StableDiffusionPipeline`` (with a DDIM scheduler and the same ``eta``) produces the same images.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch
from torch.utils.checkpoint import checkpoint

from clinalign.diffusion.model import DiffusionModel
from clinalign.errors import ConfigError

Generator = torch.Generator | list[torch.Generator] | None


@dataclass
class SampleOutput:
    """Result of :func:`sample`.

    Attributes:
        images: decoded samples, float32 [B,3,H,W] in [0,1]; carries gradients into the LoRA weights
            when ``k > 0`` and grad mode was on.
        latents: final latents [B,C,H/f,W/f] (before decoding).
        grad_unet_calls: UNet calls that ran with gradients (K when grad mode was on; CFG batches the
            conditional and unconditional branch into one call).
        no_grad_unet_calls: UNet calls under ``no_grad`` (T−K).
    """

    images: torch.Tensor
    latents: torch.Tensor
    grad_unet_calls: int
    no_grad_unet_calls: int


def _randn(shape: tuple[int, ...], generator: Generator, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Gaussian noise of ``shape``, drawn the way :func:`sample` documents for ``generator``.

    A list of n generators with n < B splits the batch into n equal consecutive groups and draws each
    group's noise from its generator in one call, exactly what n separate calls of B/n samples with one
    generator each would draw (this is how DRaFT-K batches its M trajectories, see ``repeats_in_batch``).
    """
    from diffusers.utils.torch_utils import randn_tensor

    if isinstance(generator, list) and 1 < len(generator) < shape[0]:
        group = (shape[0] // len(generator), *shape[1:])
        return torch.cat([randn_tensor(group, generator=g, device=device, dtype=dtype) for g in generator])
    return randn_tensor(shape, generator=generator, device=device, dtype=dtype)


def _checkpointed(fn, *args):
    # use_reentrant=False: works with inputs that do not require grad (the first grad step's latents)
    # and keeps autocast state for the recomputation.
    return checkpoint(fn, *args, use_reentrant=False)


def sample(
    model: DiffusionModel,
    prompt_embeds: torch.Tensor,
    *,
    height: int,
    width: int,
    num_inference_steps: int = 20,
    k: int = 1,
    eta: float = 1.0,
    guidance_scale: float = 7.5,
    generator: Generator = None,
    gradient_checkpointing: bool = True,
    latents: torch.Tensor | None = None,
) -> SampleOutput:
    """Sample B images, keeping gradients through the last ``k`` steps and the VAE decode.

    Args:
        model: the diffusion model (with or without LoRA).
        prompt_embeds: conditional text embeddings [B,L,D] from :meth:`DiffusionModel.encode_prompts`.
        height: image height in pixels (a multiple of the VAE scale factor).
        width: image width in pixels (a multiple of the VAE scale factor).
        num_inference_steps: T, the number of denoising steps.
        k: how many final steps keep gradients (0 = pure inference; ``k == T`` = full backprop).
        eta: DDIM stochasticity (0 deterministic DDIM, 1 DDPM-like ancestral sampling).
        guidance_scale: classifier-free guidance scale; ``<= 1`` disables CFG. The unconditional
            branch uses the empty prompt.
        generator: torch generator for the initial noise and the step noise; or a list of them, one per
            sample, or n < B of them, one per group of B/n consecutive samples (each group then gets the
            noise a separate call of B/n samples with that generator would get).
        gradient_checkpointing: recompute UNet/VAE activations in backward instead of storing them.
        latents: optional initial noise [B,C,h,w] (drawn from ``generator`` otherwise).

    Returns:
        :class:`SampleOutput`. Outside grad mode (e.g. under ``torch.no_grad()``) nothing keeps a graph.
    """
    if num_inference_steps < 1:
        raise ConfigError(f"num_inference_steps must be >= 1, got {num_inference_steps}.")
    if not 0 <= k <= num_inference_steps:
        raise ConfigError(
            f"k must be between 0 and num_inference_steps ({num_inference_steps}), got {k}; "
            "lower k or raise num_inference_steps."
        )
    model.check_resolution(height)
    model.check_resolution(width)
    batch = prompt_embeds.shape[0]
    grouped = isinstance(generator, list) and 1 < len(generator) < batch
    if isinstance(generator, list) and 1 < len(generator) < batch and batch % len(generator) != 0:
        raise ConfigError(
            f"got {len(generator)} generators for a batch of {batch}; pass one per sample or one per group of "
            "samples (a number that divides the batch)."
        )
    scheduler = model.scheduler
    if grouped and eta > 0 and "variance_noise" not in inspect.signature(scheduler.step).parameters:
        raise ConfigError(
            f"{type(scheduler).__name__}.step takes no `variance_noise`, so one generator per group of samples "
            "cannot be honoured; pass one generator per sample or use a DDIM scheduler."
        )
    scheduler.set_timesteps(num_inference_steps, device=model.device)
    timesteps = scheduler.timesteps
    shape = (batch, model.latent_channels, height // model.vae_scale_factor, width // model.vae_scale_factor)
    if latents is None:
        latents = _randn(shape, generator, model.device, model.dtype)
    latents = latents.to(model.device, model.dtype) * scheduler.init_noise_sigma

    do_cfg = guidance_scale > 1.0
    embeds = prompt_embeds.to(model.device, model.dtype)
    if do_cfg:
        uncond = model.encode_prompts([""]).expand(batch, -1, -1)
        embeds = torch.cat([uncond, embeds])

    outer_grad = torch.is_grad_enabled()
    first_grad_step = len(timesteps) - k
    grad_calls = no_grad_calls = 0
    for i, t in enumerate(timesteps):
        with_grad = outer_grad and i >= first_grad_step
        with torch.set_grad_enabled(with_grad):
            model_in = torch.cat([latents, latents]) if do_cfg else latents
            model_in = scheduler.scale_model_input(model_in, t)
            if with_grad and gradient_checkpointing:
                noise_pred = _checkpointed(model.unet_forward, model_in, t, embeds)
            else:
                noise_pred = model.unet_forward(model_in, t, embeds)
            if do_cfg:
                uncond_pred, cond_pred = noise_pred.chunk(2)
                noise_pred = uncond_pred + guidance_scale * (cond_pred - uncond_pred)
            if grouped and eta > 0:
                # the step noise each group's own generator would draw inside scheduler.step
                noise = _randn(tuple(noise_pred.shape), generator, noise_pred.device, noise_pred.dtype)
                latents = scheduler.step(noise_pred, t, latents, eta=eta, variance_noise=noise, return_dict=False)[0]
            else:
                latents = scheduler.step(noise_pred, t, latents, eta=eta, generator=generator, return_dict=False)[0]
        if with_grad:
            grad_calls += 1
        else:
            no_grad_calls += 1

    decode_grad = outer_grad and k > 0
    with torch.set_grad_enabled(decode_grad):
        if decode_grad and gradient_checkpointing:
            images = _checkpointed(model.decode, latents)
        else:
            images = model.decode(latents)
    return SampleOutput(images=images, latents=latents, grad_unet_calls=grad_calls, no_grad_unet_calls=no_grad_calls)


def denoising_loss(
    model: DiffusionModel,
    latents: torch.Tensor,
    prompt_embeds: torch.Tensor,
    *,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The standard diffusion loss ‖target − UNet(z_t, t, c)‖² on clean latents (one UNet call, with grad).

    ``t`` is drawn uniformly from the training timesteps; the target is the noise ε for epsilon
    models and the velocity for v-prediction models (SD 2.x 768). Returns a float32 scalar.
    """
    scheduler = model.scheduler
    batch = latents.shape[0]
    noise = torch.randn(latents.shape, generator=generator, device="cpu", dtype=torch.float32).to(
        latents.device, latents.dtype
    )
    steps = int(scheduler.config.num_train_timesteps)
    timesteps = torch.randint(0, steps, (batch,), generator=generator, device="cpu").to(latents.device)
    noisy = scheduler.add_noise(latents, noise, timesteps)
    if model.prediction_type == "epsilon":
        target = noise
    elif model.prediction_type == "v_prediction":
        target = scheduler.get_velocity(latents, noise, timesteps)
    else:
        raise ConfigError(
            f"unsupported scheduler prediction_type {model.prediction_type!r}; use epsilon or v_prediction."
        )
    pred = model.unet_forward(noisy, timesteps, prompt_embeds.to(model.device, model.dtype))
    return torch.nn.functional.mse_loss(pred.float(), target.float())
