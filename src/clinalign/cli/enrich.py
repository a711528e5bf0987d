"""``clinalign enrich`` and ``clinalign checklists``: parse flags, check them, call the library."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable
from enum import Enum
from pathlib import Path
from typing import Any

import typer

from clinalign.data.images import DEFAULT_MAX_IMAGE_PIXELS
from clinalign.errors import ConfigError, DataError


class ResponseFormat(str, Enum):
    """How the reply's JSON is requested from the endpoint."""

    json_schema = "json_schema"
    json_object = "json_object"
    text = "text"


class UncertainPolicy(str, Enum):
    """How CheXpert's uncertain (-1) labels are read."""

    exclude = "exclude"
    positive = "positive"
    negative = "negative"


class EnrichMode(str, Enum):
    """How requests are sent: one live request per record, the OpenAI Batch API, or request files only."""

    live = "live"
    batch = "batch"
    export = "export"


class RepairMode(str, Enum):
    """Where batch mode sends repair turns."""

    batch = "batch"
    live = "live"


class MaxTokensParam(str, Enum):
    """The request field that carries the completion token limit."""

    max_tokens = "max_tokens"
    max_completion_tokens = "max_completion_tokens"


# Files an enrichment run writes: a folder holding any of them is an earlier run of enrich (a rerun resumes it).
_ENRICH_FILES = (
    "enriched.jsonl",
    "failures.jsonl",
    "enrich_config.json",
    "preset.yaml",
    "split.json",
    "batch",
    "enriched",
)
_CHECKLIST_FILES = ("checklists.json", "checklists.yaml")
# EnrichConfig fields whose flag is spelled differently (for error messages)
_CONFIG_FLAGS = {
    "request_timeout": "--timeout",
    "price_input_per_mtok": "--price-input",
    "price_output_per_mtok": "--price-output",
}

# Dataset-specific flags: which datasets each applies to (checked so a misplaced flag is not silently ignored).
_DATASET_FLAGS: dict[str, tuple[str, ...]] = {
    "csv": ("chexpert", "fitzpatrick17k", "origa"),
    "uncertain": ("chexpert",),
    "top_conditions": ("fitzpatrick17k",),
    "image_dir": ("fitzpatrick17k", "origa"),
    "magnification": ("breakhis",),
    "manifest": ("generic",),
    "encoding": ("chexpert", "fitzpatrick17k", "origa", "generic"),
}
_LOADER_KWARG = {"csv": "csv_path"}

ENRICH_HELP = "\n\n".join(
    [
        "Write label-conditioned enriched prompts (t_ep) for a dataset with a multimodal LLM.",
        "Each image is sent with its true label as a hard constraint; the JSON reply is validated against the "
        "preset's schema and rules (repair turns show the model its errors), rendered to t_ep and appended to "
        "OUT/enriched.jsonl; failures go to OUT/failures.jsonl with a reason. Rerun the same command to resume: "
        "finished records are skipped and failures retried. The API key is read from $OPENAI_API_KEY "
        "(or --api-key-env).",
        "--mode batch sends the same requests through the OpenAI Batch API (half the price, results within 24 h): "
        "request files are split at --max-batch-requests / --max-batch-bytes, uploaded, polled and imported into "
        "OUT/enriched/part-*.jsonl with OUT/enriched/index.json; invalid or refused replies get repair turns in a "
        "follow-up batch (or live with --repair live). --mode export only writes the request files "
        "(OUT/batch/requests-*.jsonl) for any engine that reads them (e.g. vLLM run_batch); "
        "`clinalign enrich import OUTPUT.jsonl --out OUT` validates and imports its output. All state is in "
        "OUT/batch/state.sqlite: rerun the same command at any point to continue (docs/enrichment.md).",
        "Examples:",
        "  clinalign enrich --dataset chexpert --data-root data/chexpert --csv train.csv --model gpt-4o-mini "
        "--out out/cxr",
        "  clinalign enrich --dataset generic --manifest data/manifest.csv --model medgemma "
        "--base-url http://localhost:8000/v1 --concurrency 16 --out out/gen",
        "  clinalign enrich --dataset origa --data-root data/origa --model gpt-4o --dry-run",
        "  clinalign enrich --dataset chexpert --data-root data/chexpert --model gpt-4o-mini --mode batch "
        "--out out/cxr",
        "  clinalign enrich --dataset generic --manifest m.csv --model medgemma --mode export --out out/gen && "
        "clinalign enrich import vllm_output.jsonl --out out/gen",
        "  clinalign enrich --dataset breakhis --data-root data/BreaKHis_v1 --protocol craft-paper --model gpt-4o "
        "--out out/breakhis_paper",
    ]
)

CHECKLISTS_HELP = "\n\n".join(
    [
        "Print (and with --out, write) the class checklists t_c of a dataset's preset.",
        "With --generate, ask the MLLM for one checklist per class instead, validated with the same machinery as "
        "enrichment; checklists.yaml (written to --out) can be pasted into a custom preset and checklists.json "
        "passed to `clinalign enrich --checklists`.",
        "Examples:",
        "  clinalign checklists --dataset chexpert",
        "  clinalign checklists --dataset fitzpatrick17k --protocol craft-paper",
        "  clinalign checklists --dataset breakhis --generate --model gpt-4o --out out/checklists",
    ]
)


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is now (not the stream current when the handler was made)."""

    @property  # type: ignore[override]
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def _setup_logging(verbose: bool) -> None:
    logger = logging.getLogger("clinalign.enrich")
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO if verbose else logging.WARNING)


def _parse_fractions(text: str) -> dict[str, float]:
    fractions: dict[str, float] = {}
    for part in text.split(","):
        name, sep, value = part.partition("=")
        try:
            if not sep:
                raise ValueError
            fractions[name.strip()] = float(value)
        except ValueError:
            raise ConfigError(f"--split-fractions must look like 'train=0.8,val=0.1,test=0.1', got {text!r}.") from None
    return fractions


def _loader_options(dataset: str, flags: dict[str, Any]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for flag, value in flags.items():
        if value is None:
            continue
        allowed = _DATASET_FLAGS[flag]
        if dataset not in allowed:
            raise ConfigError(
                f"--{flag.replace('_', '-')} does not apply to --dataset {dataset} (only to {', '.join(allowed)})."
            )
        options[_LOADER_KWARG.get(flag, flag)] = value
    return options


def _no_records_of_split(dataset: str, split: str, available: list[str]) -> DataError:
    return DataError(
        f"no {dataset} records with split {split!r} (splits present: {available}). Pick one of those, or "
        "assign patient-level splits with --split-fractions train=0.8,val=0.1,test=0.1."
    )


def _select(
    dataset: str,
    data_root: Path | None,
    flags: dict[str, Any],
    split: str | None,
    split_fractions: str | None,
    seed: int,
    protocol: str | None,
    classes: list[str] | None,
    per_class: int | None,
    shots: int | None,
    split_file: Path | None,
) -> tuple[Iterable[Any], Any]:
    """Records to enrich and the split.json to write beside them (None when records carry no split).

    Without --protocol the dataset is read row by row (a few passes, none holding the records): the records
    come back as a re-iterable selection, not a list.
    """
    if protocol is None:
        from clinalign.data import iter_dataset
        from clinalign.data.subsets import select_streamed

        stream = iter_dataset(dataset, data_root, **_loader_options(dataset, flags))
        fractions = None if split_fractions is None else _parse_fractions(split_fractions)
        try:
            selection, manifest = select_streamed(
                stream,
                seed=seed,
                classes=classes,
                fractions=fractions,
                per_class=per_class,
                shots=shots,
                split_file=split_file,
                dataset=dataset,
            )
        finally:
            if stream.complete:  # the dataset was read to the end (a later check may still refuse it)
                typer.echo(f"{dataset}: {stream.summary()}", err=True)
        if split is None:
            return selection, manifest
        if not selection.split_counts.get(split):
            raise _no_records_of_split(dataset, split, sorted({str(s) for s in selection.split_counts}))
        return selection.only_split(split), manifest
    # --protocol: the protocol's own preparation of the records (a list)
    from clinalign.protocols.commands import protocol_records

    if split_fractions is not None:
        raise ConfigError(f"--split-fractions contradicts --protocol {protocol}, which fixes the split.")
    run = protocol_records(
        protocol,
        dataset,
        data_root,
        _loader_options(dataset, flags),
        seed=seed,
        classes=classes,
        per_class=per_class,
        shots=shots,
        split_file=split_file,
    )
    typer.echo(f"{dataset}: {run.loaded_summary}", err=True)
    typer.echo(f"protocol {protocol}: {run.prepared.summary()}", err=True)
    records, manifest = run.prepared.records, run.prepared.split
    if split is not None:
        available = sorted({str(r.split) for r in records})
        records = [r for r in records if r.split == split]
        if not records:
            raise _no_records_of_split(dataset, split, available)
    return records, manifest


def _config(**values: Any):
    from pydantic import ValidationError

    from clinalign.enrich import EnrichConfig

    try:
        return EnrichConfig(**{k: v for k, v in values.items() if v is not None})
    except ValidationError as exc:
        from clinalign.utils.validation import validation_problems

        problems = validation_problems(exc, as_flags=True, flags=_CONFIG_FLAGS).rstrip(".")
        raise ConfigError(f"invalid enrichment options: {problems}.") from None


def _scale_out(
    mode: EnrichMode,
    records: Iterable[Any],
    preset: Any,
    config: Any,
    out: Path,
    checklists: Any,
    repair: RepairMode,
    max_batch_requests: int,
    max_batch_bytes: int,
    poll_interval: float,
    poll_max: float,
    wait: bool,
) -> None:
    """``--mode batch`` and ``--mode export``."""
    from clinalign.enrich.batch import BatchOptions, enrich_batch, export_requests

    options = BatchOptions(
        max_requests=max_batch_requests,
        max_bytes=max_batch_bytes,
        poll_initial=poll_interval,
        poll_max=poll_max,
        wait=wait,
        repair=repair.value,
    )
    if mode is EnrichMode.export:
        files, counts = export_requests(records, preset, config, out, options=options, checklists=checklists)
        shown = ", ".join(f"{k}: {v}" for k, v in sorted(counts.items()))
        typer.echo(f"Records by status: {shown}.")
        if files:
            typer.echo(f"Wrote {len(files)} request file(s): " + ", ".join(str(f) for f in files) + ".")
            typer.echo(
                "Run them with any engine that reads OpenAI batch JSONL (e.g. `python -m vllm.entrypoints.openai."
                "run_batch -i FILE -o OUTPUT.jsonl --model ...`), then "
                f"`clinalign enrich import OUTPUT.jsonl --out {out}`."
            )
        else:
            typer.echo("No request to write: every record is validated, failed, or awaiting import.")
        return
    try:
        result = enrich_batch(
            records,
            preset,
            config,
            out,
            options=options,
            checklists=checklists,
            report=lambda m: typer.echo(m, err=True),
        )
    except KeyboardInterrupt:
        typer.echo(f"Interrupted: the batch state is saved in {out}; rerun the same command to continue.", err=True)
        sys.exit(130)
    typer.echo(result.summary_table())
    waiting = result.total - sum(row["done"] + row["failed"] for row in result.per_label.values())
    if waiting:
        typer.echo(f"{waiting} records are in batches still running: rerun the same command to collect them.")
    typer.echo(f"Enriched rows: {out / 'enriched' / 'index.json'} (part files read as one set).")


def _import_command(
    action: list[str], out: Path | None, dataset: str | None, model: str | None, overwrite: bool
) -> None:
    """``clinalign enrich import OUTPUT.jsonl... --out DIR``."""
    from clinalign.cli._output import claim
    from clinalign.enrich.batch import import_output, load_saved_run

    if action[0] != "import":
        raise ConfigError(
            f"unknown enrich action {action[0]!r}: the only one is `clinalign enrich import FILE --out DIR`."
        )
    if len(action) < 2 or out is None:
        raise ConfigError("usage: clinalign enrich import OUTPUT.jsonl [MORE.jsonl ...] --out EXPORT_FOLDER.")
    for flag, value in (("--dataset", dataset), ("--model", model)):
        if value is not None:
            raise ConfigError(f"{flag} does not apply to `enrich import`: the export folder's settings are used.")
    if overwrite:
        raise ConfigError("--overwrite does not apply to `enrich import` (it would delete the exported state).")
    claim(out, command="enrich", resume=True)
    preset, config = load_saved_run(out)
    result, counts = import_output([Path(a) for a in action[1:]], preset, config, out)
    typer.echo(result.summary_table())
    shown = ", ".join(f"{k}: {v}" for k, v in sorted(counts.items()))
    typer.echo(f"Records by status: {shown}.")
    if counts.get("pending"):
        typer.echo(
            f"{counts['pending']} records need a repair turn or a retry: rerun the export command to write the "
            "follow-up request file, run it, and import its output."
        )
    if counts.get("submitted"):
        typer.echo(f"{counts['submitted']} exported requests have no reply yet: import the rest of the output.")


def register(app: typer.Typer) -> None:
    @app.command("enrich", help=ENRICH_HELP)
    def enrich_command(
        action: list[str] | None = typer.Argument(
            None,
            metavar="[import OUTPUT.jsonl...]",
            help="`import FILE...`: import an engine's batch output into --out.",
        ),
        dataset: str | None = typer.Option(None, help="chexpert, fitzpatrick17k, breakhis, origa or generic."),
        data_root: Path | None = typer.Option(None, help="The dataset folder (as downloaded)."),
        csv: Path | None = typer.Option(None, help="The dataset CSV (chexpert, fitzpatrick17k, origa)."),
        manifest: Path | None = typer.Option(None, help="CSV/JSONL with image,label[,split,patient_id] (generic)."),
        image_dir: Path | None = typer.Option(
            None, help="Image folder if not under --data-root (fitzpatrick17k, origa)."
        ),
        uncertain: UncertainPolicy | None = typer.Option(None, help="CheXpert -1 labels (default: exclude)."),
        top_conditions: int | None = typer.Option(None, help="Fitzpatrick17k: keep the N most frequent conditions."),
        magnification: str | None = typer.Option(None, help="BreakHis magnification (default 100X)."),
        split: str | None = typer.Option(None, help="Enrich only records of this split (e.g. train)."),
        split_fractions: str | None = typer.Option(
            None, help="Assign seeded patient-level splits first, e.g. train=0.8,val=0.1,test=0.1."
        ),
        seed: int = typer.Option(0, help="Seed of --split-fractions."),
        preset: str | None = typer.Option(None, help="Preset name or YAML file (default: the dataset's)."),
        checklists: Path | None = typer.Option(None, help="checklists.json/.yaml from `clinalign checklists`."),
        model: str | None = typer.Option(None, help="Model name at the endpoint."),
        base_url: str | None = typer.Option(None, help="OpenAI-compatible endpoint (vLLM, Ollama, gateway)."),
        api_key_env: str = typer.Option("OPENAI_API_KEY", help="Environment variable holding the API key."),
        concurrency: int = typer.Option(8, help="Requests in flight."),
        timeout: float = typer.Option(60.0, help="Seconds per request."),
        max_retries: int = typer.Option(5, help="Retries on 429/5xx/timeouts."),
        max_repairs: int = typer.Option(2, help="Repair turns after an invalid reply."),
        response_format: ResponseFormat = typer.Option(
            ResponseFormat.json_schema, help="How the JSON reply is requested."
        ),
        max_tokens: int = typer.Option(800, help="Completion token limit per request."),
        max_tokens_param: MaxTokensParam = typer.Option(
            MaxTokensParam.max_tokens,
            help="The request field of the limit (newer OpenAI models: max_completion_tokens).",
        ),
        temperature: float = typer.Option(0.2, help="Sampling temperature."),
        max_image_side: int = typer.Option(768, help="Downscale images to this longer side."),
        max_image_pixels: int = typer.Option(
            DEFAULT_MAX_IMAGE_PIXELS,
            help="Images with more pixels fail as image_unreadable without being decoded (decompression bombs); "
            "0: no limit.",
        ),
        encoding: str | None = typer.Option(None, help="Text encoding of the manifest/CSV (default utf-8)."),
        limit: int | None = typer.Option(None, help="Enrich at most N records."),
        tokenizer: str | None = typer.Option(None, help="Tokenizer for exact t_ep token counts (default CLIP BPE)."),
        price_input: float | None = typer.Option(None, help="USD per 1M prompt tokens (cost estimate)."),
        price_output: float | None = typer.Option(None, help="USD per 1M completion tokens (cost estimate)."),
        retry_failures: bool = typer.Option(True, help="On a rerun, retry records in failures.jsonl."),
        progress: bool = typer.Option(True, help="Show a progress bar."),
        out: Path | None = typer.Option(None, help="Output folder (enriched.jsonl, failures.jsonl, config)."),
        overwrite: bool = typer.Option(
            False, "--overwrite", help="Empty --out first (a rerun into an enrichment folder resumes without it)."
        ),
        dry_run: bool = typer.Option(False, "--dry-run", help="Show prompt, schema and first request; send nothing."),
        verbose: bool = typer.Option(False, "--verbose", "-v", help="Log retries and repair turns."),
        # --- protocol and record selection (docs/protocol.md)
        protocol: str | None = typer.Option(
            None, help="Published protocol, e.g. craft-paper: its preset, classes, split; writes OUT/split.json."
        ),
        classes: list[str] | None = typer.Option(None, "--classes", help="Keep only these classes (repeatable)."),
        per_class: int | None = typer.Option(None, help="Sample N records per class in every split (seeded)."),
        shots: int | None = typer.Option(None, help="Keep K records per class of the train split (few-shot)."),
        split_file: Path | None = typer.Option(None, help="CSV id,split pinning the ids of each split."),
        critic_tokenizer: list[str] | None = typer.Option(
            None, "--critic-tokenizer", help="Tokenizer of a critic/evaluator reading t_ep and t_c (repeatable)."
        ),
        # --- enrichment at scale (docs/enrichment.md, "Batch, export and import")
        mode: EnrichMode = typer.Option(
            EnrichMode.live, help="live: one request per record; batch: OpenAI Batch API; export: request files only."
        ),
        repair: RepairMode = typer.Option(RepairMode.batch, help="Batch mode: send repair turns as a batch or live."),
        max_batch_requests: int = typer.Option(50_000, help="Requests per batch / request file (OpenAI: 50,000)."),
        max_batch_bytes: int = typer.Option(200 * 1024 * 1024, help="Bytes per request file (OpenAI: 200 MB)."),
        poll_interval: float = typer.Option(10.0, help="Batch mode: first wait between status checks (s), doubling."),
        poll_max: float = typer.Option(300.0, help="Batch mode: longest wait between status checks (s)."),
        wait: bool = typer.Option(True, help="Batch mode: poll until done (--no-wait: submit, save ids and exit)."),
    ) -> None:
        from clinalign.cli._output import claim, pixel_limit
        from clinalign.enrich import dry_run as make_dry_run
        from clinalign.enrich import enrich, get_preset
        from clinalign.enrich.checklists import load_checklists_file
        from clinalign.enrich.presets import available_presets
        from clinalign.utils.outdir import check_output_path, existing_entries

        _setup_logging(verbose)
        if action:
            _import_command(action, out, dataset, model, overwrite)
            return
        if dataset is None:
            raise ConfigError("--dataset is required (chexpert, fitzpatrick17k, breakhis, origa or generic).")
        if not dry_run and (model is None or out is None):
            raise ConfigError("--model and --out are required (or pass --dry-run to only inspect the request).")
        if out is not None:
            check_output_path(out)
        pixel_limit(max_image_pixels)
        if dataset == "generic" and manifest is None:
            raise ConfigError("--dataset generic needs --manifest FILE (a CSV or JSONL with image and label columns).")
        if protocol is not None:
            from clinalign.protocols.commands import protocol_preset

            preset = protocol_preset(protocol, dataset, preset)
        preset_name = preset or (dataset if dataset in available_presets() else "generic")
        chosen = get_preset(preset_name)
        config = _config(
            model=model or "<model>",
            base_url=base_url,
            api_key_env=api_key_env,
            concurrency=concurrency,
            request_timeout=timeout,
            max_retries=max_retries,
            max_repairs=max_repairs,
            response_format=response_format.value,
            max_tokens=max_tokens,
            max_tokens_param=max_tokens_param.value,
            temperature=temperature,
            max_image_side=max_image_side,
            limit=limit,
            tokenizer=tokenizer,
            price_input_per_mtok=price_input,
            price_output_per_mtok=price_output,
            retry_failures=retry_failures,
            progress=progress,
            critic_tokenizers=critic_tokenizer or None,
        )
        flags = {
            "csv": csv,
            "uncertain": None if uncertain is None else uncertain.value,
            "top_conditions": top_conditions,
            "image_dir": image_dir,
            "magnification": magnification,
            "manifest": manifest,
            "encoding": encoding,
        }
        records, split_manifest = _select(
            dataset, data_root, flags, split, split_fractions, seed, protocol, classes, per_class, shots, split_file
        )
        if protocol is not None and not critic_tokenizer:
            from clinalign.protocols import get_protocol

            config.critic_max_tokens = get_protocol(protocol).critic_max_tokens
        if dry_run:
            typer.echo(make_dry_run(records, chosen, config))
            return
        extra = load_checklists_file(checklists) if checklists is not None else None
        if out is None:  # pragma: no cover - checked above; keeps the type checker informed
            raise ConfigError("--out is required.")
        # enrichment resumes by design: a folder holding an earlier enrichment is continued, anything else refused
        own = any(name in _ENRICH_FILES for name in existing_entries(out))
        claim(out, command="enrich", overwrite=overwrite, resume=own)
        if split_manifest is not None:  # before the run: an interrupted run keeps its split too
            split_manifest.write(out)  # type: ignore[arg-type]
        if mode is not EnrichMode.live:
            _scale_out(
                mode,
                records,
                chosen,
                config,
                out,
                extra,
                repair,
                max_batch_requests,
                max_batch_bytes,
                poll_interval,
                poll_max,
                wait,
            )
            return
        try:
            result = enrich(records, chosen, config, out, checklists=extra)  # type: ignore[arg-type]
        except KeyboardInterrupt:
            # sys.exit, not typer.Exit: the exit code must survive the non-standalone app call in cli.main
            typer.echo(f"Interrupted: finished records are saved in {out}; rerun the same command to resume.", err=True)
            sys.exit(130)
        typer.echo(result.summary_table())
        written = [p for p in (result.enriched_path, result.failures_path) if p.is_file() and p.stat().st_size]
        if written:
            typer.echo("Wrote " + " and ".join(str(p) for p in written) + ".")
        else:
            typer.echo(f"Nothing was written to {out}.")

    @app.command("checklists", help=CHECKLISTS_HELP)
    def checklists_command(
        dataset: str | None = typer.Option(None, help="Dataset whose preset to use (chexpert, origa, ...)."),
        preset: str | None = typer.Option(None, help="Preset name or YAML file (instead of --dataset)."),
        classes: list[str] | None = typer.Option(None, "--classes", help="Classes to show/generate (repeatable)."),
        generate: bool = typer.Option(False, "--generate", help="Ask the MLLM instead of using built-in checklists."),
        model: str | None = typer.Option(None, help="Model name (with --generate)."),
        base_url: str | None = typer.Option(None, help="OpenAI-compatible endpoint (with --generate)."),
        api_key_env: str = typer.Option("OPENAI_API_KEY", help="Environment variable holding the API key."),
        response_format: ResponseFormat = typer.Option(
            ResponseFormat.json_schema, help="How the JSON reply is requested (with --generate)."
        ),
        concurrency: int = typer.Option(4, help="Requests in flight (with --generate)."),
        timeout: float = typer.Option(60.0, help="Seconds per request."),
        max_repairs: int = typer.Option(2, help="Repair turns after an invalid reply."),
        out: Path | None = typer.Option(None, help="Write checklists.json and checklists.yaml here."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Empty --out first."),
        verbose: bool = typer.Option(False, "--verbose", "-v", help="Log retries and repair turns."),
        protocol: str | None = typer.Option(None, help="Published protocol, e.g. craft-paper (with --dataset)."),
    ) -> None:
        from clinalign.cli._output import claim
        from clinalign.enrich import builtin_checklists, generate_checklists, get_preset
        from clinalign.utils.outdir import existing_entries

        _setup_logging(verbose)
        if protocol is not None:
            from clinalign.protocols.commands import protocol_preset

            dataset, preset = None, protocol_preset(protocol, dataset, preset)
        if (dataset is None) == (preset is None):
            raise ConfigError("pass exactly one of --dataset NAME or --preset NAME_OR_YAML.")
        if out is not None:
            # rewriting its own two files is what a rerun is for; a folder with anything else is refused
            own = set(existing_entries(out)) <= set(_CHECKLIST_FILES)
            claim(out, command="checklists", overwrite=overwrite, resume=own)
        chosen = get_preset(preset or dataset)  # type: ignore[arg-type]
        if generate:
            if model is None:
                raise ConfigError("--generate needs --model (and --base-url for a non-OpenAI endpoint).")
            config = _config(
                model=model,
                base_url=base_url,
                api_key_env=api_key_env,
                response_format=response_format.value,
                concurrency=concurrency,
                request_timeout=timeout,
                max_repairs=max_repairs,
                progress=False,
            )
            result = generate_checklists(chosen, classes or None, config)
        else:
            for flag, value in (("--model", model), ("--base-url", base_url)):
                if value is not None:
                    raise ConfigError(f"{flag} only applies with --generate.")
            result = builtin_checklists(chosen, classes or None)
        typer.echo(result.format(), nl=False)
        if out is not None:
            paths = result.write(out)
            typer.echo("Wrote " + " and ".join(str(p) for p in paths) + ".")
        if generate and result.failures:
            sys.exit(1)
