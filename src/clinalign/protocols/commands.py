"""What ``--protocol NAME`` does in each command, as library functions the CLI calls once each."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clinalign.data.records import Record
from clinalign.data.subsets import SplitManifest, find_split_manifest
from clinalign.errors import ConfigError, DataError
from clinalign.protocols.base import Protocol, get_protocol
from clinalign.protocols.prepare import PreparedData, loader_options, prepare_records


@dataclass
class ProtocolRecords:
    """The inputs of an enrich run under a protocol: its preset, records (split set) and ``split.json``."""

    protocol: Protocol
    preset: str
    prepared: PreparedData
    loaded_summary: str


def protocol_preset(protocol: str, dataset: str | None, preset: str | None = None) -> str:
    """The preset name a protocol uses for ``dataset`` (``--preset`` may not contradict it)."""
    chosen = get_protocol(protocol)
    if dataset is None:
        raise ConfigError(f"--protocol {protocol} needs --dataset NAME (one of {sorted(chosen.datasets)}).")
    name = chosen.for_dataset(dataset).preset
    if preset is not None and preset != name:
        raise ConfigError(
            f"--preset {preset} contradicts --protocol {protocol}, which uses the preset {name!r} for {dataset}. "
            "Drop one of the two (a YAML copy of the protocol preset can be passed with --preset and no --protocol)."
        )
    return name


def protocol_records(
    protocol: str,
    dataset: str,
    data_root: str | os.PathLike[str] | None,
    options: dict[str, Any],
    *,
    seed: int = 0,
    classes: Sequence[str] | None = None,
    per_class: int | None = None,
    shots: int | None = None,
    split_file: str | os.PathLike[str] | None = None,
) -> ProtocolRecords:
    """Load ``dataset`` with the protocol's loader options (``options`` are the user's) and apply its design."""
    from clinalign.data import load_dataset

    chosen = get_protocol(protocol)
    merged = loader_options(chosen, dataset, options)
    loaded = load_dataset(dataset, data_root, **merged)
    prepared = prepare_records(
        loaded.records,
        chosen,
        dataset,
        data_root=data_root,
        seed=seed,
        classes=classes,
        per_class=per_class,
        shots=shots,
        split_file=split_file,
    )
    return ProtocolRecords(chosen, chosen.for_dataset(dataset).preset, prepared, loaded.summary())


def probe_settings(protocol: str, given: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """``probe train`` settings under a protocol: its values, unless the user set a different one (an error)."""
    fixed = get_protocol(protocol).probe
    wanted = {
        "val_fraction": fixed.val_fraction,
        "epochs": fixed.epochs,
        "lr": fixed.lr,
        "batch_size": fixed.batch_size,
    }
    out = dict(given)
    for key, value in wanted.items():
        user = given.get(key)
        if user is not None and user != defaults.get(key) and user != value:
            raise ConfigError(
                f"--{key.replace('_', '-')} {user} contradicts --protocol {protocol} ({value}). Drop the flag or "
                "drop --protocol."
            )
        out[key] = value
    return out


def records_with_split(records: Sequence[Record], manifest: str | os.PathLike[str]) -> list[Record]:
    """Records with their split from the ``split.json`` beside ``manifest`` (unchanged when there is none)."""
    path = find_split_manifest(manifest)
    if path is None:
        return list(records)
    return SplitManifest.read(path).assign(records, source=str(path))


def check_real_split(real: str | os.PathLike[str], split: str) -> Path | None:
    """Check that the rows of ``real`` in ``split`` are exactly the ids ``split.json`` beside it lists.

    Returns the split.json path (None when there is none beside ``real``).
    """
    from clinalign.data.manifest import manifest_rows

    path = find_split_manifest(real)
    if path is None:
        return None
    listed = set(SplitManifest.read(path).ids.get(split, []))
    rows = [row for _, row in manifest_rows(Path(real))]
    present = {str(row.get("id")) for row in rows if row.get("split") == split}
    if present != listed:
        extra, absent = sorted(present - listed), sorted(listed - present)
        raise DataError(
            f"{real}: its '{split}' rows differ from {path} ({len(extra)} not in split.json, first "
            f"{extra[:1]}; {len(absent)} missing, first {absent[:1]}). Score against the enrich output the "
            "split.json was written with."
        )
    return path


def scoring_settings(
    protocol: str, real: str | os.PathLike[str], *, real_split: str | None, dd_mode: str, tau_quantile: float
) -> dict[str, Any]:
    """``score-cas`` settings under a protocol (real split, DD mode, τ quantile), checked against split.json.

    A flag set to a value other than the protocol's (and other than the command's default) is an
    error. When a ``split.json`` lies beside ``real``, its test ids must be exactly the real rows scored.
    """
    fixed = get_protocol(protocol).scoring
    for flag, user, default, value in (
        ("--real-split", real_split, None, fixed.real_split),
        ("--dd-mode", dd_mode, "accuracy", fixed.dd_mode),
        ("--tau-quantile", tau_quantile, 0.25, fixed.tau_quantile),
    ):
        if user is not None and user != default and user != value:
            raise ConfigError(f"{flag} {user} contradicts --protocol {protocol} ({value}). Drop the flag.")
    check_real_split(real, fixed.real_split)
    return {"real_split": fixed.real_split, "dd_mode": fixed.dd_mode, "tau_quantile": fixed.tau_quantile}
