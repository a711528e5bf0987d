"""Stable Diffusion plumbing behind one interface: load, encode prompts, LoRA, differentiable sampling.

>>> model = load_diffusion_model("stabilityai/stable-diffusion-2-1-base", dtype="bf16")
>>> params = model.add_lora(LoraSpec(rank=8))
>>> out = sample(model, model.encode_prompts(["a chest x-ray"]), height=512, width=512, k=1)
>>> out.images   # [1,3,512,512] in [0,1], differentiable into the LoRA weights through the last step
"""

from clinalign.diffusion.generate import (
    MANIFEST_NAME,
    GenerateResult,
    PromptRow,
    RankThroughput,
    generate_images,
    generate_to_dir,
    read_prompts,
    sample_seed,
)
from clinalign.diffusion.lora import DEFAULT_TARGETS, LORA_WEIGHT_NAME, LoraSpec
from clinalign.diffusion.model import DiffusionModel, load_diffusion_model, resolve_dtype
from clinalign.diffusion.sampling import SampleOutput, denoising_loss, sample

__all__ = [
    "DEFAULT_TARGETS",
    "LORA_WEIGHT_NAME",
    "MANIFEST_NAME",
    "DiffusionModel",
    "GenerateResult",
    "LoraSpec",
    "PromptRow",
    "RankThroughput",
    "SampleOutput",
    "denoising_loss",
    "generate_images",
    "generate_to_dir",
    "load_diffusion_model",
    "read_prompts",
    "resolve_dtype",
    "sample",
    "sample_seed",
]
