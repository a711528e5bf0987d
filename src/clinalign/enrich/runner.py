"""Running enrichment over records: resumable, concurrent, one fsynced JSONL line per finished record.

Layout of ``out_dir``::

    enriched.jsonl       one validated record per line (fields, t_ep, t_c, model, preset, prompt hash, usage)
    failures.jsonl       one line per record that failed (reason, detail, last raw reply)
    enrich_config.json   the run's settings (no endpoint URL, no key) + preset name/version/hash
    preset.yaml          the preset used, as YAML (a custom preset can start from it)

A rerun reads both JSONL files, skips records already in ``enriched.jsonl`` and retries the rest
(failures included unless ``retry_failures`` is off). Lines are appended and fsynced one record at a
time, so Ctrl-C or a crash loses at most the requests in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from clinalign.data.records import Record
from clinalign.enrich.budgets import fit_prompt, text_budgets
from clinalign.enrich.client import (
    ChatClient,
    EndpointError,
    RequestFailed,
    ask_validated,
    image_data_url,
    resolve_api_key,
    response_format_param,
)
from clinalign.enrich.config import EnrichConfig
from clinalign.enrich.presets import Preset
from clinalign.enrich.pricing import Usage, cost_line
from clinalign.enrich.render import TokenBudget, TokenCounter, clip_token_count, token_counter_from_tokenizer
from clinalign.errors import ConfigError, DataError
from clinalign.utils.io import append_jsonl, atomic_write_text, write_json
from clinalign.utils.jsonl import repair_jsonl

logger = logging.getLogger("clinalign.enrich")

ENRICHED_FILE = "enriched.jsonl"
FAILURES_FILE = "failures.jsonl"
CONFIG_FILE = "enrich_config.json"
PRESET_FILE = "preset.yaml"
_RAW_LIMIT = 4000  # characters of the last raw reply kept in failures.jsonl


@dataclass
class EnrichResult:
    """What a run did.

    Attributes:
        out_dir: the output folder.
        total: records given to the run.
        already_done: records found in ``enriched.jsonl`` before the run (skipped).
        succeeded: records enriched by this run.
        failed: records that failed in this run (see ``failures_by_reason``).
        failures_by_reason: reason code -> count, this run.
        per_label: label -> {"done": in enriched.jsonl now, "failed": failing now, "total": given}.
        unreadable_images: paths of images that could not be read (also in failures.jsonl).
        usage: token usage of this run (repair turns included).
        retries: transient-error retries; repairs: repair turns.
        elapsed: wall-clock seconds of this run.
        cost: the usage / estimated-cost line.
    """

    out_dir: Path
    total: int
    already_done: int
    succeeded: int
    failed: int
    failures_by_reason: dict[str, int]
    per_label: dict[str, dict[str, int]]
    unreadable_images: list[str]
    usage: Usage
    retries: int
    repairs: int
    elapsed: float
    cost: str
    trimmed: dict[str, int] = field(default_factory=dict)

    @property
    def enriched_path(self) -> Path:
        return self.out_dir / ENRICHED_FILE

    @property
    def failures_path(self) -> Path:
        return self.out_dir / FAILURES_FILE

    def summary_table(self) -> str:
        """A plain-text table: per label done / failed / total, then totals, reasons, usage and cost."""
        width = max([len("label"), len("total"), *(len(k) for k in self.per_label)])
        lines = [f"{'label':<{width}}  {'done':>6}  {'failed':>6}  {'total':>6}"]
        lines.append("-" * len(lines[0]))
        sums = Counter()
        for label in sorted(self.per_label):
            row = self.per_label[label]
            sums.update(row)
            lines.append(f"{label:<{width}}  {row['done']:>6}  {row['failed']:>6}  {row['total']:>6}")
        lines.append("-" * len(lines[0]))
        lines.append(f"{'total':<{width}}  {sums['done']:>6}  {sums['failed']:>6}  {sums['total']:>6}")
        rate = self.succeeded / self.elapsed if self.elapsed > 0 else 0.0
        lines.append(
            f"This run: {self.succeeded} enriched, {self.failed} failed, {self.already_done} already done; "
            f"{self.retries} retries, {self.repairs} repair turns; {self.elapsed:.1f} s ({rate:.2f} records/s)."
        )
        if self.failures_by_reason:
            reasons = ", ".join(f"{k}: {v}" for k, v in sorted(self.failures_by_reason.items()))
            lines.append(f"Failures by reason: {reasons} (details in {self.failures_path}; rerun to retry them).")
        if self.unreadable_images:
            shown = ", ".join(self.unreadable_images[:5])
            more = f" and {len(self.unreadable_images) - 5} more" if len(self.unreadable_images) > 5 else ""
            lines.append(f"Unreadable images: {shown}{more}.")
        if self.trimmed:
            shown = ", ".join(f"{k}: {v}" for k, v in sorted(self.trimmed.items()))
            lines.append(f"Trimmed to fit token limits (text: limit that forced it: count): {shown}.")
        lines.append(self.cost)
        return "\n".join(lines)


def _redact(text: str | None, secret: str | None) -> str | None:
    if text is None or not secret or len(secret) < 4:
        return text
    return text.replace(secret, "***")


def _repair_jsonl(path: Path) -> list[dict[str, Any]]:
    """Read a JSONL file this module appends to; a torn last line (a crash mid-write) is cut off with a warning.

    Appending after a partial line would glue the next record onto it and corrupt the middle of the file.
    """
    rows, dropped = repair_jsonl(path)
    if dropped:
        logger.warning(
            "%s ended with a torn line (an interrupted write): dropped %d row; that record is redone on this run.",
            path,
            dropped,
        )
    return rows


def _json_line(row: Mapping[str, Any]) -> str:
    import json

    return json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n"


def enriched_row(
    record: Record,
    preset: Preset,
    fields: Mapping[str, Any],
    t_ep: str,
    t_c: str | None,
    *,
    model: str,
    usage: Mapping[str, Any] | None = None,
    repairs: int = 0,
) -> dict[str, Any]:
    """One ``enriched.jsonl`` row: the record, the validated fields, ``t_ep``/``t_c`` and provenance."""
    return {
        **record.to_dict(),
        "fields": dict(fields),
        "t_ep": t_ep,
        "t_c": t_c,
        # the keys DraftKTrainer's train_data dicts use
        "prompt": t_ep,
        "checklist": t_c,
        "model": model,
        "preset": preset.name,
        "preset_version": preset.version,
        "prompt_hash": preset.prompt_hash,
        "usage": dict(usage or {}),
        "repairs": repairs,
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def finished_row(
    record: Record,
    preset: Preset,
    output: Any,
    prompt_budget: TokenBudget,
    checklist_texts: Mapping[str, str | None],
    *,
    model: str,
    usage: Usage,
    repairs: int,
) -> tuple[dict[str, Any], str | None]:
    """The enriched row of a validated reply (live and batch share it), and the trim it needed (or None)."""
    fields = output.model_dump(mode="json")
    t_ep, trimmed_by = fit_prompt(preset, fields, record.label, prompt_budget)
    row = enriched_row(
        record,
        preset,
        fields,
        t_ep,
        checklist_texts.get(record.label),
        model=model,
        usage=usage.to_dict(),
        repairs=repairs,
    )
    return row, None if trimmed_by is None else f"t_ep: {trimmed_by.describe()}"


def build_messages(preset: Preset, record: Record, image_url: str) -> list[dict[str, Any]]:
    """System prompt (label as hard constraint) + user turn with the instruction and the image."""
    return [
        {"role": "system", "content": preset.system_prompt(record.label)},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": preset.user_prompt(record.label)},
                {"type": "image_url", "image_url": {"url": image_url}},
            ],
        },
    ]


def build_request(preset: Preset, record: Record, config: EnrichConfig, image_url: str) -> dict[str, Any]:
    """The exact chat-completions request body sent for ``record``."""
    body: dict[str, Any] = {
        "model": config.model,
        "messages": build_messages(preset, record, image_url),
        "temperature": config.temperature,
        config.max_tokens_param: config.max_tokens,
    }
    response_format = response_format_param(config, f"{preset.name}_output", preset.json_schema(record.label))
    if response_format is not None:
        body["response_format"] = response_format
    return body


def _token_counter(config: EnrichConfig) -> TokenCounter:
    return token_counter_from_tokenizer(config.tokenizer) if config.tokenizer else clip_token_count


def _check_labels(labels: Sequence[str], preset: Preset) -> Preset:
    if preset.classes is not None:
        unknown = [label for label in labels if label not in preset.classes]
        if unknown:
            raise ConfigError(
                f"labels {unknown} are not classes of preset '{preset.name}' ({preset.classes}). Filter the "
                "dataset, use --preset generic, or write a YAML preset that lists these classes."
            )
        return preset
    return preset.with_classes(labels)


def prepare(records: Iterable[Record], preset: Preset, config: EnrichConfig) -> tuple[list[Record], Preset]:
    """Check the records against the preset and bind dataset classes to presets without a class list.

    Returns the records to consider (``config.limit`` applied), as a list, and the preset to use.
    """
    records = list(records)
    if not records:
        raise DataError("no records to enrich: the dataset is empty after filtering.")
    seen: set[str] = set()
    for record in records:
        if record.id in seen:
            raise DataError(f"duplicate record id {record.id!r}: ids must be unique to resume runs safely.")
        seen.add(record.id)
    records = list(records[: config.limit] if config.limit else records)
    return records, _check_labels(sorted({r.label for r in records}), preset)


def _index(records: Iterable[Record], limit: int | None) -> dict[str, str]:
    """id -> label of the records a run considers (the first ``limit``), read once; a repeated id is an error."""
    given: dict[str, str] = {}
    beyond: set[str] = set()  # ids past the limit (checked for duplicates too)
    interned: dict[str, str] = {}
    for record in records:
        if record.id in given or record.id in beyond:
            raise DataError(f"duplicate record id {record.id!r}: ids must be unique to resume runs safely.")
        if not limit or len(given) < limit:
            given[record.id] = interned.setdefault(record.label, record.label)
        else:
            beyond.add(record.id)
    if not given:
        raise DataError("no records to enrich: the dataset is empty after filtering.")
    return given


def dry_run(records: Iterable[Record], preset: Preset, config: EnrichConfig) -> str:
    """The system prompt, schema and first request exactly as they would be sent (image data elided).

    ``records`` is read once as a stream (only ids and labels are kept, for the checks).
    """
    import json

    firsts: list[Record] = []

    def keep_first() -> Iterator[Record]:
        for record in records:
            if not firsts:
                firsts.append(record)
            yield record

    given = _index(keep_first(), config.limit)
    preset = _check_labels(sorted(set(given.values())), preset)
    first, n = firsts[0], len(given)
    try:
        url = image_data_url(first.image, max_side=config.max_image_side, quality=config.jpeg_quality)
        shown_url = f"{url[:40]}...<{len(url)} characters of base64 JPEG, longer side <= {config.max_image_side}px>"
    except DataError as exc:
        shown_url = f"<image unreadable: {exc}>"
    request = build_request(preset, first, config, shown_url)
    endpoint = config.base_url or "https://api.openai.com/v1"
    parts = [
        f"Dry run: {n} records, preset '{preset.name}' v{preset.version} "
        f"(prompt hash {preset.prompt_hash}), model '{config.model}' at {endpoint}/chat/completions; nothing is sent.",
        f"\n=== System prompt (record {first.id!r}, label {first.label!r}) ===\n{request['messages'][0]['content']}",
        f"\n=== Output schema (response_format={config.response_format}) ===\n"
        + json.dumps(preset.json_schema(first.label), indent=2),
        "\n=== First request body ===\n" + json.dumps(request, indent=2, ensure_ascii=False),
    ]
    checklist = preset.render_checklist(first.label)
    if checklist:
        parts.append(f"\n=== Checklist t_c for {first.label!r} ===\n{checklist}")
    return "\n".join(parts)


class _Run:
    """State of one run: outputs, counters, the shared client."""

    def __init__(
        self,
        preset: Preset,
        config: EnrichConfig,
        out_dir: Path,
        client: ChatClient,
        secret: str,
        checklist_texts: dict[str, str | None],
        prompt_budget: TokenBudget,
    ) -> None:
        self.preset = preset
        self.config = config
        self.out_dir = out_dir
        self.client = client
        self.secret = secret
        self.checklist_texts = checklist_texts
        self.prompt_budget = prompt_budget
        self.trimmed: Counter[str] = Counter()
        self.write_lock = asyncio.Lock()
        self.pending_writes: set[asyncio.Future[None]] = set()
        self.usage = Usage()
        self.succeeded = 0
        self.failed: Counter[str] = Counter()
        self.repairs = 0
        self.unreadable: list[str] = []
        self.bar: Any = None
        self.response_formats: dict[str, dict[str, Any] | None] = {}  # per label: schema generation is not free

    async def _append(self, name: str, row: dict[str, Any]) -> None:
        # one writer at a time, off the event loop: fsync must not stall the requests in flight
        async with self.write_lock:
            write = asyncio.ensure_future(asyncio.to_thread(append_jsonl, self.out_dir / name, row))
            self.pending_writes.add(write)
            write.add_done_callback(self.pending_writes.discard)
            # shielded: on Ctrl-C a line being written is finished (and awaited in aenrich), never torn
            await asyncio.shield(write)

    async def _fail(self, record: Record, reason: str, detail: str, raw: str | None, usage: Usage) -> None:
        self.usage.add(usage)
        row = {
            "id": record.id,
            "image": str(record.image),
            "label": record.label,
            "reason": reason,
            "detail": _redact(detail, self.secret),
            "raw": _redact(raw[:_RAW_LIMIT] if raw else raw, self.secret),
            "model": self.config.model,
            "preset": self.preset.name,
            "prompt_hash": self.preset.prompt_hash,
            "usage": usage.to_dict(),
            "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        await self._append(FAILURES_FILE, row)
        self.failed[reason] += 1
        logger.info("record %s failed: %s: %s", record.id, reason, row["detail"])

    async def process(self, record: Record) -> None:
        config = self.config
        try:
            url = await asyncio.to_thread(
                image_data_url, record.image, max_side=config.max_image_side, quality=config.jpeg_quality
            )
        except DataError as exc:
            self.unreadable.append(str(record.image))
            await self._fail(record, "image_unreadable", str(exc), None, Usage())
            return
        messages = build_messages(self.preset, record, url)
        response_format = self.response_formats.get(record.label)
        if record.label not in self.response_formats:
            schema = self.preset.json_schema(record.label)
            response_format = response_format_param(config, f"{self.preset.name}_output", schema)
            self.response_formats[record.label] = response_format
        try:
            answer = await ask_validated(
                self.client,
                messages,
                validate=lambda data: self.preset.validate(data, record.label),
                response_format=response_format,
                max_repairs=config.max_repairs,
            )
        except RequestFailed as exc:
            await self._fail(record, exc.reason, exc.detail, exc.raw, exc.usage)
            return
        self.usage.add(answer.usage)
        self.repairs += answer.repairs
        row, trimmed = finished_row(
            record,
            self.preset,
            answer.output,
            self.prompt_budget,
            self.checklist_texts,
            model=config.model,
            usage=answer.usage,
            repairs=answer.repairs,
        )
        if trimmed is not None:
            self.trimmed[trimmed] += 1
        await self._append(ENRICHED_FILE, row)
        self.succeeded += 1

    async def worker(self, pending: Iterator[Record]) -> None:
        # the workers share one iterator: next() never awaits, so no two workers take the same record
        for record in pending:
            await self.process(record)
            if self.bar is not None:
                self.bar.update(1)
                self.bar.set_postfix(ok=self.succeeded, failed=sum(self.failed.values()), refresh=False)


def _compact_failures(out_dir: Path, done: set[str]) -> dict[str, dict[str, Any]]:
    """Rewrite failures.jsonl with the latest failure per record that is still not done."""
    path = out_dir / FAILURES_FILE
    if not path.is_file():
        return {}
    latest: dict[str, dict[str, Any]] = {}
    for row in _repair_jsonl(path):
        if "id" in row:
            latest[str(row["id"])] = row
    current = {k: v for k, v in latest.items() if k not in done}
    atomic_write_text(path, "".join(_json_line(r) for r in current.values()))
    return current


def _done_ids(out_dir: Path, preset: Preset) -> set[str]:
    rows = _repair_jsonl(out_dir / ENRICHED_FILE)
    others = sorted({str(r.get("preset")) for r in rows if r.get("preset") != preset.name})
    if others:
        raise ConfigError(
            f"{out_dir / ENRICHED_FILE} holds records enriched with preset(s) {others}, not '{preset.name}'. "
            "Use a new --out folder for a different preset."
        )
    stale = sum(1 for r in rows if r.get("prompt_hash") != preset.prompt_hash)
    if stale:
        logger.warning(
            "%d records in %s were enriched with a different prompt or schema (hash differs from %s); they are "
            "kept as they are. Use a new --out folder to redo them with the current preset.",
            stale,
            out_dir / ENRICHED_FILE,
            preset.prompt_hash,
        )
    return {str(r["id"]) for r in rows if "id" in r}


def run_texts(
    preset: Preset,
    config: EnrichConfig,
    counter: TokenCounter,
    labels: Sequence[str],
    checklists: Mapping[str, Mapping[str, str]] | None,
) -> tuple[TokenBudget, dict[str, str | None], Counter[str]]:
    """The t_ep budget, each label's fitted checklist t_c and the checklist trims (live and batch share it)."""
    prompt_budget, checklist_budget = text_budgets(preset, config, counter)
    checklist_texts: dict[str, str | None] = {}
    checklist_trims: Counter[str] = Counter()
    for label in labels:
        source = (checklists or {}).get(label)
        fitted = preset.fit_checklist(
            label, source, token_counter=checklist_budget.count, max_tokens=checklist_budget.max_tokens
        )
        checklist_texts[label] = None if fitted is None else fitted.text
        if fitted is not None and not fitted.fits:
            logger.warning("t_c of %r exceeds %s even cut to one attribute", label, checklist_budget.describe())
        if fitted is not None and fitted.changed:
            full = preset.fit_checklist(label, source, token_counter=lambda _: 0, max_tokens=10**9)
            binding = checklist_budget.binding(full.text) if full is not None else None
            checklist_trims[f"t_c: {binding.describe() if binding else checklist_budget.describe()}"] += 1
            logger.info("t_c of %r trimmed to fit (%s): %s", label, checklist_budget.describe(), fitted.changed)
    missing = [label for label, text in checklist_texts.items() if text is None]
    if missing:
        logger.warning(
            "no class checklist for %s: t_c is left empty for them. Generate them with "
            "`clinalign checklists --generate` or add them to a custom preset.",
            missing,
        )
    return prompt_budget, checklist_texts, checklist_trims


def write_run_files(out: Path, preset: Preset, config: EnrichConfig, **extra: Any) -> None:
    """``enrich_config.json`` (no endpoint, no key) and ``preset.yaml``, written atomically."""
    write_json(
        out / CONFIG_FILE,
        {
            **config.to_saved_dict(),
            "preset": preset.name,
            "preset_version": preset.version,
            "prompt_hash": preset.prompt_hash,
            **extra,
        },
    )
    atomic_write_text(
        out / PRESET_FILE, yaml.safe_dump(preset.spec.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
    )


async def aenrich(
    records: Iterable[Record],
    preset: Preset,
    config: EnrichConfig,
    out_dir: str | os.PathLike[str],
    *,
    checklists: Mapping[str, Mapping[str, str]] | None = None,
    token_counter: TokenCounter | None = None,
    sleep: Callable[[float], Awaitable[Any]] | None = None,
) -> EnrichResult:
    """Async form of :func:`enrich` (use it inside a running event loop)."""
    started = time.perf_counter()
    if iter(records) is records:  # a one-shot iterator cannot be read twice: hold it
        records = list(records)
    # first pass: ids (unique) and labels; the records themselves are read again for the requests
    given = _index(records, config.limit)
    labels = sorted(set(given.values()))
    preset = _check_labels(labels, preset)
    out = Path(out_dir)
    if (out / "batch" / "state.sqlite").is_file():
        raise ConfigError(
            f"{out} holds a batch/export enrichment (batch/state.sqlite): rerun it with its --mode, or use a new "
            "--out folder for live mode."
        )
    out.mkdir(parents=True, exist_ok=True)
    api_key = resolve_api_key(config)
    counter = token_counter or _token_counter(config)

    done = _done_ids(out, preset)
    previous_failures = _compact_failures(out, done)
    already_done = sum(1 for i in given if i in done)

    def wanted(record_id: str) -> bool:
        return record_id not in done and (config.retry_failures or record_id not in previous_failures)

    n_pending = sum(1 for i in given if wanted(i))
    retried = sum(1 for i in given if wanted(i) and i in previous_failures)
    pending = (r for r in itertools.islice(records, config.limit or None) if wanted(r.id))

    prompt_budget, checklist_texts, checklist_trims = run_texts(preset, config, counter, labels, checklists)
    write_run_files(out, preset, config)

    client = ChatClient(config, api_key, sleep=sleep or asyncio.sleep)
    run = _Run(preset, config, out, client, api_key, checklist_texts, prompt_budget)
    if n_pending:
        logger.info(
            "enriching %d records (%d already done, %d earlier failures retried) with %d concurrent requests",
            n_pending,
            already_done,
            retried,
            config.concurrency,
        )
    try:
        if config.progress and n_pending:
            from tqdm.auto import tqdm

            run.bar = tqdm(total=n_pending, unit="rec", desc="enrich", dynamic_ncols=True)
        tasks = [asyncio.create_task(run.worker(pending)) for _ in range(min(config.concurrency, n_pending))]
        if tasks:
            finished, unfinished = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in unfinished:
                task.cancel()
            await asyncio.gather(*unfinished, return_exceptions=True)
            for task in finished:
                if task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
    finally:
        if run.pending_writes:
            await asyncio.gather(*run.pending_writes, return_exceptions=True)
        if run.bar is not None:
            run.bar.close()
        with contextlib.suppress(Exception):
            await client.aclose()
        done_now = {str(r["id"]) for r in _repair_jsonl(out / ENRICHED_FILE) if "id" in r}
        failing = _compact_failures(out, done_now)
    if run.succeeded == 0 and run.failed:
        # every record failed and the endpoint never answered properly: say what it returned
        message = client.diagnosis()
        if message is not None:
            raise EndpointError(f"nothing was enriched: {message}")

    per_label: dict[str, dict[str, int]] = {}
    for record_id, label in given.items():
        row = per_label.setdefault(label, {"done": 0, "failed": 0, "total": 0})
        row["total"] += 1
        row["done"] += record_id in done_now
        row["failed"] += record_id in failing
    return EnrichResult(
        out_dir=out,
        total=len(given),
        already_done=already_done,
        succeeded=run.succeeded,
        failed=sum(run.failed.values()),
        failures_by_reason=dict(run.failed),
        per_label=per_label,
        unreadable_images=run.unreadable,
        usage=run.usage,
        retries=client.retries,
        repairs=run.repairs,
        elapsed=time.perf_counter() - started,
        cost=cost_line(run.usage, config.model, config.price_input_per_mtok, config.price_output_per_mtok),
        trimmed=dict(run.trimmed + checklist_trims),
    )


def enrich(
    records: Iterable[Record],
    preset: Preset,
    config: EnrichConfig,
    out_dir: str | os.PathLike[str],
    *,
    checklists: Mapping[str, Mapping[str, str]] | None = None,
    token_counter: TokenCounter | None = None,
) -> EnrichResult:
    """Enrich ``records`` with ``preset`` into ``out_dir`` (resuming what is there); see the module docstring.

    ``records`` may be any iterable; a re-iterable one (a list, a :class:`~clinalign.data.DatasetStream`)
    is read twice and never held: a first pass keeps each id and label (to check ids, count and resume),
    the second feeds the requests. A one-shot iterator is collected into a list first.

    Every record ends either in ``enriched.jsonl`` (validated, with ``t_ep``) or in ``failures.jsonl``
    (with a reason). An endpoint that rejects every request (bad key, unknown model) stops the run with
    :class:`~clinalign.enrich.client.EndpointError`; what was finished stays written.
    """
    try:
        return asyncio.run(
            aenrich(records, preset, config, out_dir, checklists=checklists, token_counter=token_counter)
        )
    except KeyboardInterrupt:
        logger.warning("interrupted: finished records are saved in %s; rerun the same command to resume.", out_dir)
        raise


__all__ = [
    "CONFIG_FILE",
    "ENRICHED_FILE",
    "FAILURES_FILE",
    "EndpointError",
    "EnrichResult",
    "aenrich",
    "build_messages",
    "build_request",
    "dry_run",
    "enrich",
    "prepare",
]
