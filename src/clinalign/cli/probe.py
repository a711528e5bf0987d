"""``clinalign probe``: train and inspect DD linear probes."""

from __future__ import annotations

from pathlib import Path

import typer

from clinalign.cli._choices import Dtype
from clinalign.data.images import DEFAULT_MAX_IMAGE_PIXELS

probe_app = typer.Typer(help="Linear probes on frozen critic embeddings (the DD reward and CAS's DD).")


def _records(manifest: Path, image_root: Path | None, split: str | None, encoding: str = "utf-8") -> list:
    """Manifest rows (split from the split.json beside the manifest when there is one), filtered to ``split``."""
    from clinalign.data.manifest import read_manifest
    from clinalign.errors import DataError
    from clinalign.protocols.commands import records_with_split

    records = records_with_split(read_manifest(manifest, image_root=image_root, encoding=encoding), manifest)
    if split is None:
        return records
    chosen = [r for r in records if r.split == split]
    if not chosen:
        raise DataError(f"{manifest}: the manifest has no rows with split '{split}'.")
    return chosen


@probe_app.command("train")
def train(
    critic: str = typer.Option(..., help="Critic: hub id, local directory, or 'open_clip:<model>'."),
    manifest: Path = typer.Option(..., help="CSV/JSONL with image,label (optional split, patient_id, id)."),
    out: Path = typer.Option(..., help="Output directory for probe.safetensors + probe_config.json."),
    split: str | None = typer.Option("train", help="Manifest split to train on ('' for all rows)."),
    val_split: str | None = typer.Option(
        None, help="Manifest split used for validation (default: hold out --val-fraction of the training rows)."
    ),
    val_fraction: float = typer.Option(0.1, help="Fraction held out by patient when no --val-split is given."),
    image_root: Path | None = typer.Option(None, help="Folder relative image paths resolve against."),
    epochs: int = typer.Option(50, help="Training epochs (paper: 50)."),
    lr: float = typer.Option(1e-3, help="Adam learning rate (paper: 1e-3)."),
    batch_size: int = typer.Option(256, help="Probe training batch size (paper: 256)."),
    embed_batch_size: int = typer.Option(32, help="Images per critic forward pass."),
    seed: int = typer.Option(0, help="Seed for the split and the probe."),
    device: str | None = typer.Option(None, help="cpu, cuda, cuda:N (default: cuda when available)."),
    dtype: Dtype = typer.Option(Dtype.fp32, help="Critic weights dtype."),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Empty --out first (a folder holding a finished probe is refused without it)."
    ),
    allow_pickle: bool = typer.Option(
        False, "--allow-pickle", help="Let a trusted *local* critic load pickle weights (.bin); never hub ids."
    ),
    max_image_pixels: int = typer.Option(
        DEFAULT_MAX_IMAGE_PIXELS, help="Refuse images with more pixels (decompression bombs); 0: no limit."
    ),
    encoding: str = typer.Option("utf-8", help="Text encoding of the manifest."),
    embedding_cache: Path | None = typer.Option(
        None,
        "--embedding-cache",
        help="Embedding store shared with other runs (score-cas, evaluate, quickstart); default OUT/cache.",
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
    protocol: str | None = typer.Option(
        None, help="craft-paper: no validation hold-out, 50 epochs, Adam 1e-3, batch 256; split from split.json."
    ),
) -> None:
    """Embed real labelled images with a critic and fit its DD probe.

    Example:

        clinalign probe train --critic google/medsiglip-448 --manifest train.csv --out probes/medsiglip
    """
    from clinalign.cli._output import claim, pixel_limit
    from clinalign.critics import load_critic
    from clinalign.errors import ConfigError
    from clinalign.probe_training import split_for_validation, train_probe
    from clinalign.utils.outdir import check_output_path, existing_entries

    if protocol is not None:
        from clinalign.protocols.commands import probe_settings

        given = {"val_fraction": val_fraction, "epochs": epochs, "lr": lr, "batch_size": batch_size}
        defaults = {"val_fraction": 0.1, "epochs": 50, "lr": 1e-3, "batch_size": 256}
        settings = probe_settings(protocol, given, defaults)
        val_fraction, epochs, lr, batch_size = (settings[k] for k in ("val_fraction", "epochs", "lr", "batch_size"))
    if not 0 <= val_fraction < 1:
        raise ConfigError(f"--val-fraction must be in [0, 1), got {val_fraction}.")
    check_output_path(out)
    pixel_limit(max_image_pixels)
    train_records = _records(manifest, image_root, split or None, encoding)
    if val_split:
        val_records = _records(manifest, image_root, val_split, encoding)
    else:
        train_records, val_records = split_for_validation(train_records, val_fraction=val_fraction, seed=seed)
    # an interrupted run left only its embedding cache: continuing reuses it; a finished probe is not overwritten
    interrupted = set(existing_entries(out)) <= {"cache"}
    claim(out, command="probe train", overwrite=overwrite, resume=interrupted)
    model = load_critic(critic, device=device, dtype=dtype.value, allow_pickle=allow_pickle)
    result = train_probe(
        model,
        train_records,
        out,
        val_records=val_records,
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
        embed_batch_size=embed_batch_size,
        seed=seed,
        progress=progress,
        embedding_cache=embedding_cache,
    )
    val = f"{result.val_accuracy:.3f} on {result.n_val} images" if result.val_accuracy is not None else "n/a"
    typer.echo(f"critic:         {model.name}")
    typer.echo(f"classes:        {', '.join(result.probe.class_names)}")
    typer.echo(f"train accuracy: {result.train_accuracy:.3f} on {result.n_train} images")
    typer.echo(f"val accuracy:   {val}")
    typer.echo(f"saved to:       {result.out_dir}")


@probe_app.command("show")
def show(directory: Path = typer.Argument(..., help="A probe directory.")) -> None:
    """Print a saved probe's classes, critic and training metrics."""
    from clinalign.probe import LinearProbe

    probe = LinearProbe.load(directory)
    typer.echo(f"critic:  {probe.critic_name}")
    typer.echo(f"dim:     {probe.embed_dim}")
    typer.echo(f"classes: {', '.join(probe.class_names)}")
    for key, value in sorted(probe.metrics.items()):
        typer.echo(f"{key}: {value:g}")


def register(app: typer.Typer) -> None:
    app.add_typer(probe_app, name="probe")
