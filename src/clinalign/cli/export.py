"""``clinalign export-lora``: a thin wrapper over clinalign.diffusion.kohya and clinalign.diffusion.hub."""

from __future__ import annotations

import enum
from pathlib import Path

import typer

_HELP = """Export a trained LoRA for other tools, or publish it on the Hugging Face Hub.

--format kohya writes one .safetensors file with kohya/AUTOMATIC1111 key names \
(lora_unet_*.lora_down.weight / .lora_up.weight / .alpha) for ComfyUI and A1111; the weight updates \
are identical to the diffusers-format original. --push-to-hub uploads the LoRA folder's weights, \
clinalign_meta.json and model card (README.md), plus the kohya file when one is exported; the token \
comes from HF_TOKEN or `huggingface-cli login` and is never printed.

\b
Examples:
  clinalign export-lora runs/craft/lora --format kohya --out craft_kohya.safetensors
  clinalign export-lora runs/craft/lora --push-to-hub my-lab/cxr-craft-lora --private
"""


class ExportFormat(str, enum.Enum):
    """Export formats (the diffusers format is the LoRA folder itself)."""

    kohya = "kohya"


class ExportDtype(str, enum.Enum):
    """Weight dtypes for the exported file."""

    fp32 = "fp32"
    fp16 = "fp16"
    bf16 = "bf16"


def export_lora(
    lora_dir: Path = typer.Argument(..., metavar="LORA_DIR", help="LoRA folder written by `clinalign train`."),
    fmt: ExportFormat | None = typer.Option(None, "--format", help="Write a copy in this format (needs --out)."),
    out: Path | None = typer.Option(None, "--out", help="Output file for --format (a .safetensors name)."),
    dtype: ExportDtype = typer.Option(ExportDtype.fp32, "--dtype", help="Weight dtype of the exported file."),
    push_to_hub: str | None = typer.Option(None, "--push-to-hub", help="Upload to this Hub repo (owner/name)."),
    private: bool = typer.Option(False, "--private", help="Create the Hub repo private."),
) -> None:
    from clinalign.utils.torch_utils import resolve_dtype

    if fmt is None and push_to_hub is None:
        raise typer.BadParameter("nothing to do: give --format kohya --out FILE and/or --push-to-hub REPO_ID.")
    if fmt is not None and out is None:
        raise typer.BadParameter(f"--format {fmt.value} writes a file: add --out FILE.safetensors.")
    if out is not None and fmt is None:
        raise typer.BadParameter("--out needs --format (e.g. --format kohya).")
    exported: list[Path] = []
    if fmt is ExportFormat.kohya and out is not None:
        from clinalign.diffusion.kohya import export_kohya

        exported.append(export_kohya(lora_dir, out, dtype=resolve_dtype(dtype.value)))
        typer.echo(f"kohya LoRA written to {out}")
    if push_to_hub is not None:
        from clinalign.diffusion.hub import push_lora_to_hub

        upload = push_lora_to_hub(lora_dir, push_to_hub, extra_files=exported, private=private)
        typer.echo(f"uploaded {', '.join(upload.files)} to https://huggingface.co/{upload.repo_id}")


def register(app: typer.Typer) -> None:
    app.command("export-lora", help=_HELP)(export_lora)
