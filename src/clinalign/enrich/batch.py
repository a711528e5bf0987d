"""Enrichment at scale: the OpenAI Batch API (``--mode batch``) and request files for any engine (``--mode export``).

Both modes write the same request JSONL: one line per record, ``{"custom_id", "method", "url", "body"}``, where
``body`` is exactly the chat-completions request live mode sends (same messages, same strict JSON-schema
``response_format``) and ``custom_id`` is ``rec-<sha256(id)[:24]>-<round>`` (round 0 for the first request, then one
per repair turn or retry). Replies are checked by :func:`clinalign.enrich.client.judge_reply` and rendered by
:func:`clinalign.enrich.runner.finished_row`, the code live mode uses.

Layout of ``out_dir`` (besides ``enrich_config.json`` and ``preset.yaml``)::

    batch/state.sqlite            per-record status, request files, file and batch ids (see batch_state.py)
    batch/requests-00000.jsonl    request file of job 0 (split at max_requests / max_bytes)
    batch/output-00000.jsonl      its downloaded output file (and error-00000.jsonl)
    enriched/part-00000.jsonl     validated rows, one part per imported output
    enriched/index.json           the parts, read as one set by every command
    failures.jsonl                records that failed for good, with a reason (rewritten at the end of a run)

Every state change is a SQLite transaction and every file is written atomically, so the command can be
killed and rerun at any point: an uploaded file or created batch is found again (by its id, or by name and
metadata when the id was not saved yet) instead of being made twice, and a reply is imported once.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from clinalign.data.enriched import ENRICHED_FILE, PARTS_DIR, part_name, write_index
from clinalign.data.records import Record
from clinalign.enrich.batch_state import (
    BatchState,
    custom_id,
    custom_id_base,
    record_from_json,
    split_custom_id,
)
from clinalign.enrich.client import (
    InvalidReply,
    RequestFailed,
    image_data_url,
    judge_reply,
    repair_messages,
    reply_from_body,
    resolve_api_key,
)
from clinalign.enrich.config import EnrichConfig
from clinalign.enrich.presets import Preset
from clinalign.enrich.pricing import Usage, cost_line
from clinalign.enrich.render import TokenBudget, TokenCounter
from clinalign.enrich.runner import (
    FAILURES_FILE,
    EnrichResult,
    _token_counter,
    build_request,
    finished_row,
    run_texts,
    write_run_files,
)
from clinalign.errors import ConfigError, DataError
from clinalign.utils.io import atomic_open

logger = logging.getLogger("clinalign.enrich")

BATCH_ENDPOINT = "/v1/chat/completions"
_TERMINAL = ("completed", "expired", "cancelled", "failed")
_RAW_LIMIT = 4000
_IMAGE_MARK = "<clinalign:image-data-url>"


@dataclass
class BatchOptions:
    """Limits and polling of batch/export enrichment (defaults: the OpenAI Batch API's published limits).

    Attributes:
        max_requests: requests per batch (request file); larger jobs are split (OpenAI: 50,000).
        max_bytes: bytes per request file (OpenAI: 200 MB); a single request above it fails ``request_too_large``.
        poll_initial: first wait between status checks, in seconds; doubles up to ``poll_max``.
        poll_max: longest wait between status checks.
        wait: poll until every batch is done; False submits, saves the ids and returns (rerun to continue).
        repair: ``batch`` sends repair turns as a follow-up batch; ``live`` sends them as live requests.
        max_expiries: times a record may be left unanswered by an expired/cancelled batch before it fails.
    """

    max_requests: int = 50_000
    max_bytes: int = 200 * 1024 * 1024
    poll_initial: float = 10.0
    poll_max: float = 300.0
    wait: bool = True
    repair: Literal["batch", "live"] = "batch"
    max_expiries: int = 3

    def __post_init__(self) -> None:
        if self.max_requests < 1 or self.max_bytes < 1024:
            raise ConfigError("--max-batch-requests must be >= 1 and --max-batch-bytes >= 1024.")


class OpenAIBatchAPI:
    """Files and Batches through the ``openai`` SDK (sync client; the SDK retries transient errors)."""

    def __init__(self, config: EnrichConfig, api_key: str) -> None:
        import openai

        self._client = openai.OpenAI(
            api_key=api_key, base_url=config.base_url, timeout=max(config.request_timeout, 120.0), max_retries=5
        )

    def find_upload(self, filename: str, size: int) -> str | None:
        for item in self._client.files.list(purpose="batch"):
            if item.filename == filename and int(item.bytes or 0) == size:
                return str(item.id)
        return None

    def upload(self, path: Path, filename: str) -> str:
        with open(path, "rb") as handle:
            return str(self._client.files.create(file=(filename, handle), purpose="batch").id)

    def find_batch(self, input_file_id: str) -> str | None:
        for seen, item in enumerate(self._client.batches.list(limit=100)):
            if item.input_file_id == input_file_id:
                return str(item.id)
            if seen >= 1000:
                break
        return None

    def create(self, input_file_id: str, metadata: dict[str, str]) -> str:
        batch = self._client.batches.create(
            input_file_id=input_file_id, endpoint=BATCH_ENDPOINT, completion_window="24h", metadata=metadata
        )
        return str(batch.id)

    def retrieve(self, batch_id: str) -> dict[str, Any]:
        batch = self._client.batches.retrieve(batch_id)
        counts = batch.request_counts
        return {
            "status": batch.status,
            "output_file_id": batch.output_file_id,
            "error_file_id": batch.error_file_id,
            "total": counts.total if counts else 0,
            "completed": counts.completed if counts else 0,
            "failed": counts.failed if counts else 0,
        }

    def download(self, file_id: str, path: Path) -> None:
        with (
            self._client.files.with_streaming_response.content(file_id) as response,
            atomic_open(path, "wb", encoding=None) as handle,
        ):
            for chunk in response.iter_bytes():
                handle.write(chunk)

    def close(self) -> None:
        self._client.close()


class _Counts:
    def __init__(self) -> None:
        self.usage = Usage()
        self.succeeded = 0
        self.failed: Counter[str] = Counter()
        self.repairs = 0
        self.retries = 0
        self.trimmed: Counter[str] = Counter()
        self.stale = 0


def _fingerprint(records: Iterable[Record], limit: int | None) -> Iterator[Record]:
    for n, record in enumerate(records):
        if limit is not None and n >= limit:
            return
        yield record


class BatchRun:
    """One batch/export/import invocation over an output folder (resumes what the folder holds)."""

    def __init__(
        self,
        preset: Preset,
        config: EnrichConfig,
        out_dir: str | os.PathLike[str],
        *,
        options: BatchOptions | None = None,
        checklists: Mapping[str, Mapping[str, str]] | None = None,
        token_counter: TokenCounter | None = None,
        sleep: Callable[[float], None] = time.sleep,
        report: Callable[[str], None] | None = None,
    ) -> None:
        self.preset = preset
        self.config = config
        self.out = Path(out_dir)
        self.options = options or BatchOptions()
        self.checklists = checklists
        self.counter = token_counter or _token_counter(config)
        self.sleep = sleep
        self.report = report or (lambda message: logger.warning("%s", message))
        self.counts = _Counts()
        self.started = time.perf_counter()
        self.state: BatchState | None = None
        self.prompt_budget: TokenBudget | None = None
        self.checklist_texts: dict[str, str | None] = {}
        self.checklist_trims: Counter[str] = Counter()
        self._templates: dict[str, str] = {}
        self.api: Any = None
        self.secret: str | None = None
        self.already_done = 0

    # ------------------------------------------------------------------ setup
    def open(self, records: Iterable[Record] | None) -> BatchState:
        """Open (or create) the state; ingest ``records`` on the first run, check them against it on reruns."""
        self.out.mkdir(parents=True, exist_ok=True)
        if (self.out / ENRICHED_FILE).is_file():
            raise ConfigError(
                f"{self.out} holds a live enrichment ({ENRICHED_FILE}); batch/export results go to part files. "
                "Use a new --out folder for --mode batch/export."
            )
        state = self.state = BatchState(self.out)
        if records is not None:
            self._ingest(state, records)
        elif state.count() == 0:
            raise DataError(
                f"{self.out} holds no exported requests: run `clinalign enrich --mode export --out {self.out} ...` "
                "first, then import the engine's output into the same folder."
            )
        labels = state.labels()
        self._check_labels(labels)
        if self.preset.classes is None:
            self.preset = self.preset.with_classes(labels)
        saved_hash = state.get("prompt_hash")
        if saved_hash is None:
            state.set("prompt_hash", self.preset.prompt_hash)
        elif saved_hash != self.preset.prompt_hash:
            raise ConfigError(
                f"{self.out} was started with another preset or prompt (hash {saved_hash}, now "
                f"{self.preset.prompt_hash}). Use a new --out folder for a different preset."
            )
        self.prompt_budget, self.checklist_texts, self.checklist_trims = run_texts(
            self.preset, self.config, self.counter, labels, self.checklists
        )
        saved_texts = state.get("checklist_texts")
        if records is not None or saved_texts is None:
            state.set("checklist_texts", json.dumps(self.checklist_texts, sort_keys=True))
        else:  # importing: the t_c fitted when the requests were written (a --checklists file included)
            self.checklist_texts = json.loads(saved_texts)
        self._drop_unfinished_parts()
        self.already_done = state.count("validated")
        return state

    def _check_labels(self, labels: list[str]) -> None:
        if self.preset.classes is None:
            return
        unknown = [label for label in labels if label not in self.preset.classes]
        if unknown:
            raise ConfigError(
                f"labels {unknown} are not classes of preset '{self.preset.name}' ({self.preset.classes}). Filter "
                "the dataset, use --preset generic, or write a YAML preset that lists these classes."
            )

    def _ingest(self, state: BatchState, records: Iterable[Record]) -> None:
        import hashlib

        digest = hashlib.sha256()
        ingested = state.get("input_sha256") is not None
        with state.transaction() as db:
            for seq, record in enumerate(_fingerprint(records, self.config.limit)):
                digest.update(f"{record.id}\0{record.label}\0{record.image}\n".encode())
                if ingested:
                    continue
                try:
                    db.execute(
                        "INSERT INTO records (seq, id, custom_id, label, record) VALUES (?, ?, ?, ?, ?)",
                        (seq, record.id, custom_id_base(record.id), record.label, json.dumps(record.to_dict())),
                    )
                except sqlite3.IntegrityError:
                    if db.execute("SELECT 1 FROM records WHERE id = ?", (record.id,)).fetchone():
                        raise DataError(
                            f"duplicate record id {record.id!r}: ids must be unique to resume runs safely."
                        ) from None
                    raise DataError(
                        f"record id {record.id!r} hashes to the custom_id of another record; rename one of them."
                    ) from None
            if not ingested:
                if state.count() == 0:
                    raise DataError("no records to enrich: the dataset is empty after filtering.")
                self._check_labels(state.labels())  # inside the transaction: refused input leaves no state
                state.set("input_sha256", digest.hexdigest())
                state.set("run_token", uuid.uuid4().hex[:12])
        if ingested and state.get("input_sha256") != digest.hexdigest():
            raise ConfigError(
                f"the records given differ from those {self.out} was started with (ids, labels or images changed). "
                "Rerun with the same dataset options, or use a new --out folder."
            )

    def _drop_unfinished_parts(self) -> None:
        """Part files whose import transaction never committed are removed (their replies are imported again)."""
        state = self._state
        parts_dir = self.out / PARTS_DIR
        with state.transaction() as db:
            for (name,) in db.execute("SELECT name FROM parts WHERE state = 'writing'").fetchall():
                with contextlib.suppress(FileNotFoundError):
                    (parts_dir / name).unlink()
                db.execute("DELETE FROM parts WHERE name = ?", (name,))
        self._write_index()

    def _write_index(self) -> None:
        parts_dir = self.out / PARTS_DIR
        parts_dir.mkdir(parents=True, exist_ok=True)
        write_index(parts_dir, self._state.done_parts())

    @property
    def _state(self) -> BatchState:
        if self.state is None:  # pragma: no cover - open() first
            raise RuntimeError("BatchRun.open() was not called")
        return self.state

    def _write_run_files(self, mode: str) -> None:
        write_run_files(self.out, self.preset, self.config, mode=mode)

    # ------------------------------------------------------------------ request files
    def _request_line(self, row: Any) -> str:
        record = record_from_json(row["record"])
        url = image_data_url(record.image, max_side=self.config.max_image_side, quality=self.config.jpeg_quality)
        cid = custom_id(row["custom_id"], int(row["round"]))
        head = json.dumps({"custom_id": cid, "method": "POST", "url": BATCH_ENDPOINT}, ensure_ascii=False)[:-1]
        if row["extra"]:
            body = build_request(self.preset, record, self.config, url)
            body["messages"] = body["messages"] + json.loads(row["extra"])
            return f'{head}, "body": {json.dumps(body, ensure_ascii=False)}}}\n'
        # build_request depends on the record only through its label and image: render it once per label
        # (schema and prompts cost ~3 ms) and put each record's image into the serialised body
        template = self._templates.get(record.label)
        if template is None:
            body = build_request(self.preset, record, self.config, _IMAGE_MARK)
            template = self._templates[record.label] = json.dumps(body, ensure_ascii=False)
        body_text = template.replace(json.dumps(_IMAGE_MARK), json.dumps(url), 1)
        return f'{head}, "body": {body_text}}}\n'

    def write_jobs(self) -> list[int]:
        """Write request files for every pending record, split at the limits; returns the new job numbers."""
        state = self._state
        made: list[int] = []
        pending = state.iter_records("status = 'pending'")
        carry: tuple[Any, str] | None = None
        exhausted = False
        while not exhausted:
            job = state.next_job_number()
            path = state.dir / f"requests-{job:05d}.jsonl"
            seqs: list[int] = []
            failures: list[tuple[int, str, str]] = []
            size = 0
            rounds: Counter[int] = Counter()
            with atomic_open(path, "w") as handle:
                while True:
                    if carry is not None:
                        row, line = carry
                        carry = None
                    else:
                        row = next(pending, None)
                        if row is None:
                            exhausted = True
                            break
                        try:
                            line = self._request_line(row)
                        except DataError as exc:
                            failures.append((row["seq"], "image_unreadable", str(exc)))
                            continue
                    nbytes = len(line.encode("utf-8"))
                    if nbytes > self.options.max_bytes:
                        failures.append(
                            (
                                row["seq"],
                                "request_too_large",
                                f"the request is {nbytes:,} bytes, above --max-batch-bytes "
                                f"{self.options.max_bytes:,}; lower --max-image-side",
                            )
                        )
                        continue
                    if seqs and (len(seqs) >= self.options.max_requests or size + nbytes > self.options.max_bytes):
                        carry = (row, line)
                        break
                    handle.write(line)
                    seqs.append(int(row["seq"]))
                    rounds[int(row["round"])] += 1
                    size += nbytes
            with state.transaction() as db:
                for seq, reason, detail in failures:
                    db.execute(
                        "UPDATE records SET status = 'failed', reason = ?, detail = ? WHERE seq = ?",
                        (reason, detail, seq),
                    )
                    self.counts.failed[reason] += 1
                if seqs:
                    db.execute(
                        "INSERT INTO jobs (job, round, path, requests, bytes, state) VALUES (?, ?, ?, ?, ?, 'written')",
                        (job, max(rounds), path.name, len(seqs), size),
                    )
                    db.executemany(
                        "UPDATE records SET status = 'submitted', job = ? WHERE seq = ?", ((job, s) for s in seqs)
                    )
            if seqs:
                made.append(job)
            else:
                path.unlink(missing_ok=True)
        return made

    # ------------------------------------------------------------------ importing replies
    def _fail_row(self, db: Any, row: Any, reason: str, detail: str, raw: str | None, usage: Usage) -> None:
        db.execute(
            "UPDATE records SET status = 'failed', reason = ?, detail = ?, raw = ?, usage = ? WHERE seq = ?",
            (reason, detail, (raw or "")[:_RAW_LIMIT] or None, json.dumps(usage.to_dict()), row["seq"]),
        )
        self.counts.failed[reason] += 1

    def _again(self, db: Any, row: Any, *, extra: list[dict[str, Any]] | None = None, **bump: int) -> None:
        """Back to pending with the next round (a fresh custom_id), optionally with repair turns appended."""
        messages = json.loads(row["extra"]) if row["extra"] else []
        messages += extra or []
        sets = ", ".join(f"{k} = {k} + ?" for k in bump)
        db.execute(
            f"UPDATE records SET status = 'pending', job = NULL, round = round + 1, extra = ?"
            f"{', ' + sets if sets else ''} WHERE seq = ?",
            (json.dumps(messages) if messages else None, *bump.values(), row["seq"]),
        )

    def _usage_of(self, row: Any) -> Usage:
        saved = json.loads(row["usage"]) if row["usage"] else {}
        return Usage(
            prompt_tokens=int(saved.get("prompt_tokens", 0)),
            completion_tokens=int(saved.get("completion_tokens", 0)),
            requests=int(saved.get("requests", 0)),
        )

    def _take_reply(self, db: Any, row: Any, body: Any, handle: Any, part: str) -> None:
        """Judge one reply exactly as live mode does; validated rows go to the part file being written."""
        try:
            reply = reply_from_body(body)
        except ValueError as exc:
            self._take_error(db, row, "bad_response", f"the reply is not a chat completion ({exc})")
            return
        usage = self._usage_of(row)
        usage.add(reply.usage)
        self.counts.usage.add(reply.usage)
        reply.usage = usage
        db.execute("UPDATE records SET usage = ? WHERE seq = ?", (json.dumps(usage.to_dict()), row["seq"]))
        record = record_from_json(row["record"])
        label = record.label
        repairs = int(row["repairs"])
        try:
            output = judge_reply(
                reply, lambda data: self.preset.validate(data, label), max_tokens=self.config.max_tokens
            )
        except InvalidReply as exc:
            if repairs < self.config.max_repairs:
                self.counts.repairs += 1
                self._again(db, row, extra=repair_messages(reply.text, exc.problems), repairs=1)
            else:
                detail = f"still invalid after {repairs} repair turn(s):\n{exc.problems}"
                self._fail_row(db, row, exc.reason, detail, reply.text, usage)
            return
        except RequestFailed as exc:
            # batch only: a refused reply is asked again (fresh request) while repair turns remain
            if exc.reason == "refusal" and repairs < self.config.max_repairs:
                self.counts.repairs += 1
                self._again(db, row, repairs=1)
            else:
                self._fail_row(db, row, exc.reason, exc.detail, exc.raw, usage)
            return
        enriched, trimmed = finished_row(
            record,
            self.preset,
            output,
            self.prompt_budget,  # type: ignore[arg-type]
            self.checklist_texts,
            model=self.config.model,
            usage=usage,
            repairs=repairs,
        )
        if trimmed is not None:
            self.counts.trimmed[trimmed] += 1
        handle.write(json.dumps(enriched, ensure_ascii=False, sort_keys=True) + "\n")
        db.execute(
            "UPDATE records SET status = 'validated', part = ?, reason = NULL, detail = NULL, raw = NULL WHERE seq = ?",
            (part, row["seq"]),
        )
        self.counts.succeeded += 1

    def _take_error(self, db: Any, row: Any, reason: str, detail: str) -> None:
        if int(row["retries"]) < self.config.max_retries:
            self.counts.retries += 1
            self._again(db, row, retries=1)
        else:
            self._fail_row(
                db, row, reason, f"{detail} (gave up after {int(row['retries']) + 1} attempts)", None, Usage()
            )

    def _take_expired(self, db: Any, row: Any, why: str, status: str | None = None) -> None:
        if int(row["expiries"]) + 1 >= self.options.max_expiries:
            reason = "expired" if status in (None, "expired", "completed") else f"batch_{status}"
            detail = f"{why} {int(row['expiries']) + 1} times"
            self._fail_row(db, row, reason, detail, None, self._usage_of(row))
        else:
            self._again(db, row, expiries=1)

    def import_lines(
        self, lines: Iterable[tuple[str, int, Any]], *, job: int | None = None, job_status: str | None = None
    ) -> None:
        """Import output lines ``(source, line number, parsed line)`` in one transaction plus one part file.

        ``job`` given: records of that job left without a reply are re-queued (expired/cancelled batch) or fail.
        """
        state = self._state
        parts_dir = self.out / PARTS_DIR
        name = part_name(state.next_part_number())
        with state.transaction() as db:
            db.execute("INSERT INTO parts (name, state) VALUES (?, 'writing')", (name,))
        rows = 0
        with state.transaction() as db:
            with atomic_open(parts_dir / name, "w") as handle:
                for source, number, line in lines:
                    where = f"{source}, line {number}"
                    if not isinstance(line, dict) or not isinstance(line.get("custom_id"), str):
                        raise DataError(f"{where}: not a batch output line (no custom_id). Pass the engine's output.")
                    parsed = split_custom_id(line["custom_id"])
                    row = state.by_base(parsed[0]) if parsed else None
                    if row is None:
                        raise DataError(
                            f"{where}: custom_id {line['custom_id']!r} is not a request written to {self.out}. Import "
                            "the output of this folder's request files."
                        )
                    if row["status"] != "submitted" or int(row["round"]) != parsed[1]:  # type: ignore[index]
                        self.counts.stale += 1  # already imported, or a reply to an older round
                        continue
                    response, error = line.get("response"), line.get("error")
                    if error:
                        code = str(error.get("code", "")) if isinstance(error, dict) else ""
                        message = str(error.get("message", error)) if isinstance(error, dict) else str(error)
                        if code == "batch_expired":
                            self._take_expired(db, row, "the batch expired before this request ran")
                        else:
                            self._take_error(db, row, "batch_error", f"{code or 'error'}: {message[:300]}")
                        continue
                    if not isinstance(response, dict) or not isinstance(response.get("body"), dict):
                        raise DataError(f"{where}: no 'response.body' and no 'error'. Is this a batch output file?")
                    status = int(response.get("status_code", 200))
                    if status != 200:
                        text = json.dumps(response["body"])[:300]
                        self._take_error(db, row, "batch_error", f"HTTP {status}: {text}")
                        continue
                    before = self.counts.succeeded
                    self._take_reply(db, row, response["body"], handle, name)
                    rows += self.counts.succeeded - before
                if job is not None:
                    why = f"batch {job_status or 'ended'} without a reply for this request:"
                    for row in db.execute(
                        "SELECT * FROM records WHERE job = ? AND status = 'submitted'", (job,)
                    ).fetchall():
                        self._take_expired(db, row, why.rstrip(":"), job_status)
                    db.execute("UPDATE jobs SET state = 'imported' WHERE job = ?", (job,))
            db.execute("UPDATE parts SET state = 'done', rows = ? WHERE name = ?", (rows, name))
        if rows == 0:
            (parts_dir / name).unlink(missing_ok=True)
        self._write_index()

    # ------------------------------------------------------------------ the Batch API
    def _advance(self, job: Any) -> bool:
        """Move one job as far as it goes without waiting; True when it is imported."""
        state, api = self._state, self.api
        number = int(job["job"])
        path = state.dir / str(job["path"])
        filename = f"clinalign-{state.get('run_token')}-{path.name}"
        if job["state"] == "written":
            file_id = api.find_upload(filename, path.stat().st_size) or api.upload(path, filename)
            state.update_job(number, state="uploaded", input_file_id=file_id)
            self.after_upload(number)
            job = state.jobs("job = ?", (number,))[0]
        if job["state"] == "uploaded":
            batch_id = api.find_batch(job["input_file_id"]) or api.create(
                job["input_file_id"], {"clinalign_run": str(state.get("run_token")), "clinalign_job": str(number)}
            )
            state.update_job(number, state="created", batch_id=batch_id)
            self.report(f"job {number}: batch {batch_id} created ({job['requests']} requests)")
            job = state.jobs("job = ?", (number,))[0]
        if job["state"] == "created":
            info = api.retrieve(job["batch_id"])
            if info["status"] not in _TERMINAL:
                self.report(
                    f"job {number}: batch {job['batch_id']} {info['status']}, "
                    f"{info['completed']}/{info['total'] or '?'} done, {info['failed']} failed"
                )
                return False
            self.report(f"job {number}: batch {job['batch_id']} {info['status']}; downloading")
            state.update_job(
                number,
                state="finished",
                batch_status=info["status"],
                output_file_id=info["output_file_id"],
                error_file_id=info["error_file_id"],
            )
            job = state.jobs("job = ?", (number,))[0]
        if job["state"] == "finished":
            files = []
            for kind in ("output", "error"):
                file_id = job[f"{kind}_file_id"]
                if file_id:
                    target = state.dir / f"{kind}-{number:05d}.jsonl"
                    api.download(file_id, target)
                    files.append(target)
            self.import_lines(_read_output_files(files), job=number, job_status=job["batch_status"])
        return True

    def after_upload(self, job: int) -> None:
        """Called once a request file is uploaded and its id saved (tests raise here to simulate a kill)."""

    def run_batches(self) -> bool:
        """Submit, poll and import until every record is validated or failed; False when not waiting."""
        state = self._state
        delay = self.options.poll_initial
        while True:
            open_jobs = state.jobs("state != 'imported'")
            if not open_jobs:
                if state.count("pending") == 0:
                    return True
                if self.options.repair == "live" and self._only_followups():
                    self._repair_live()
                    continue
                self.write_jobs()
                delay = self.options.poll_initial
                continue
            progressed = False
            waiting = False
            for job in open_jobs:
                if self._advance(job):
                    progressed = True
                else:
                    waiting = True
            if waiting and not progressed:
                if not self.options.wait:
                    return False
                self.report(f"next status check in {delay:.0f} s (Ctrl-C is safe: rerun the command to continue)")
                self.sleep(delay)
                delay = min(delay * 2, self.options.poll_max)

    def _only_followups(self) -> bool:
        """True when every pending record is a follow-up (repair or retry), not a first request."""
        first = self._state.db.execute("SELECT COUNT(*) FROM records WHERE status = 'pending' AND round = 0")
        return int(first.fetchone()[0]) == 0

    def _repair_live(self) -> None:
        """Send the pending follow-up requests live (``--repair live``), with live mode's own retries and repairs."""
        import asyncio

        from clinalign.enrich.client import ChatClient, ask_validated, response_format_param

        state = self._state

        async def go() -> None:
            client = ChatClient(self.config, self.secret or resolve_api_key(self.config))
            try:
                rows = list(state.iter_records("status = 'pending'"))
                name = part_name(state.next_part_number())
                with state.transaction() as db:
                    db.execute("INSERT INTO parts (name, state) VALUES (?, 'writing')", (name,))
                written = 0
                with state.transaction() as db, atomic_open(self.out / PARTS_DIR / name, "w") as handle:
                    for row in rows:
                        record = record_from_json(row["record"])
                        try:
                            url = image_data_url(
                                record.image, max_side=self.config.max_image_side, quality=self.config.jpeg_quality
                            )
                        except DataError as exc:
                            self._fail_row(db, row, "image_unreadable", str(exc), None, self._usage_of(row))
                            continue
                        body = build_request(self.preset, record, self.config, url)
                        messages = body["messages"] + (json.loads(row["extra"]) if row["extra"] else [])
                        schema = self.preset.json_schema(record.label)
                        try:
                            answer = await ask_validated(
                                client,
                                messages,
                                validate=lambda data, label=record.label: self.preset.validate(data, label),
                                response_format=response_format_param(
                                    self.config, f"{self.preset.name}_output", schema
                                ),
                                max_repairs=max(self.config.max_repairs - int(row["repairs"]), 0),
                            )
                        except RequestFailed as exc:
                            usage = self._usage_of(row)
                            usage.add(exc.usage)
                            self.counts.usage.add(exc.usage)
                            self._fail_row(db, row, exc.reason, exc.detail, exc.raw, usage)
                            continue
                        usage = self._usage_of(row)
                        usage.add(answer.usage)
                        self.counts.usage.add(answer.usage)
                        enriched, trimmed = finished_row(
                            record,
                            self.preset,
                            answer.output,
                            self.prompt_budget,  # type: ignore[arg-type]
                            self.checklist_texts,
                            model=self.config.model,
                            usage=usage,
                            repairs=int(row["repairs"]) + answer.repairs,
                        )
                        if trimmed is not None:
                            self.counts.trimmed[trimmed] += 1
                        handle.write(json.dumps(enriched, ensure_ascii=False, sort_keys=True) + "\n")
                        db.execute(
                            "UPDATE records SET status = 'validated', part = ? WHERE seq = ?", (name, row["seq"])
                        )
                        self.counts.succeeded += 1
                        written += 1
                    db.execute("UPDATE parts SET state = 'done', rows = ? WHERE name = ?", (written, name))
            finally:
                await client.aclose()

        asyncio.run(go())
        self._write_index()

    # ------------------------------------------------------------------ results
    def write_failures(self) -> None:
        """Rewrite ``failures.jsonl`` from the state: one line per record that failed for good (atomic)."""
        with atomic_open(self.out / FAILURES_FILE, "w") as handle:
            for row in self._state.iter_records("status = 'failed'"):
                record = json.loads(row["record"])
                line = {
                    "id": record["id"],
                    "image": record["image"],
                    "label": record["label"],
                    "reason": row["reason"],
                    "detail": row["detail"],
                    "raw": row["raw"],
                    "model": self.config.model,
                    "preset": self.preset.name,
                    "prompt_hash": self.preset.prompt_hash,
                    "usage": json.loads(row["usage"]) if row["usage"] else {},
                    "custom_id": row["custom_id"],
                }
                handle.write(json.dumps(line, ensure_ascii=False, sort_keys=True) + "\n")

    def result(self) -> EnrichResult:
        state = self._state
        self.write_failures()
        failed = Counter(
            {
                str(r[0]): int(r[1])
                for r in state.db.execute(
                    "SELECT reason, COUNT(*) FROM records WHERE status = 'failed' GROUP BY reason"
                )
            }
        )
        unreadable = [
            json.loads(r["record"])["image"]
            for r in state.db.execute("SELECT record FROM records WHERE reason = 'image_unreadable' LIMIT 1000")
        ]
        return EnrichResult(
            out_dir=self.out,
            total=state.count(),
            already_done=self.already_done,
            succeeded=self.counts.succeeded,
            failed=sum(self.counts.failed.values()),
            failures_by_reason=dict(failed),
            per_label=state.per_label(),
            unreadable_images=unreadable,
            usage=self.counts.usage,
            retries=self.counts.retries,
            repairs=self.counts.repairs,
            elapsed=time.perf_counter() - self.started,
            cost=cost_line(
                self.counts.usage,
                self.config.model,
                self.config.price_input_per_mtok,
                self.config.price_output_per_mtok,
                batch=True,
            ),
            trimmed=dict(self.counts.trimmed + self.checklist_trims),
        )

    def status_counts(self) -> dict[str, int]:
        rows = self._state.db.execute("SELECT status, COUNT(*) FROM records GROUP BY status")
        return {str(r[0]): int(r[1]) for r in rows}

    def close(self) -> None:
        if self.api is not None:
            with contextlib.suppress(Exception):
                self.api.close()
        if self.state is not None:
            self.state.close()


def _read_output_files(files: Iterable[Path]) -> Iterator[tuple[str, int, Any]]:
    """Stream ``(file, line number, parsed JSON)`` of batch output files; a malformed line names its place."""
    for path in files:
        with open(path, encoding="utf-8") as handle:
            for number, text in enumerate(handle, start=1):
                if not text.strip():
                    continue
                try:
                    yield str(path), number, json.loads(text)
                except json.JSONDecodeError as exc:
                    raise DataError(
                        f"{path}, line {number}: not valid JSON ({exc.msg}). Pass the engine's output JSONL unchanged."
                    ) from None


def enrich_batch(
    records: Iterable[Record],
    preset: Preset,
    config: EnrichConfig,
    out_dir: str | os.PathLike[str],
    *,
    options: BatchOptions | None = None,
    checklists: Mapping[str, Mapping[str, str]] | None = None,
    token_counter: TokenCounter | None = None,
    api: Any = None,
    sleep: Callable[[float], None] = time.sleep,
    report: Callable[[str], None] | None = None,
    run_class: type[BatchRun] = BatchRun,
) -> EnrichResult:
    """Enrich ``records`` through the OpenAI Batch API into ``out_dir``, resuming whatever the folder holds.

    ``records`` is streamed once into ``out_dir/batch/state.sqlite``; memory does not grow with their number.
    Returns when every record is validated or failed (or, with ``options.wait`` off, once the batches are
    submitted: rerun to continue). The API key is read from the environment and never written.
    """
    run = run_class(
        preset,
        config,
        out_dir,
        options=options,
        checklists=checklists,
        token_counter=token_counter,
        sleep=sleep,
        report=report,
    )
    try:
        run.open(records)
        run._write_run_files("batch")
        run.secret = resolve_api_key(config)
        run.api = api or OpenAIBatchAPI(config, run.secret)
        run.run_batches()
        return run.result()
    finally:
        run.close()


def export_requests(
    records: Iterable[Record],
    preset: Preset,
    config: EnrichConfig,
    out_dir: str | os.PathLike[str],
    *,
    options: BatchOptions | None = None,
    checklists: Mapping[str, Mapping[str, str]] | None = None,
    token_counter: TokenCounter | None = None,
) -> tuple[list[Path], dict[str, int]]:
    """Write request files for every record not yet validated, failed or awaiting import (``--mode export``).

    Returns the request files written by this call and the record counts per status. The first call writes
    every record; after ``clinalign enrich import``, a rerun writes the follow-up requests (repair turns).
    """
    run = BatchRun(preset, config, out_dir, options=options, checklists=checklists, token_counter=token_counter)
    try:
        state = run.open(records)
        run._write_run_files("export")
        jobs = run.write_jobs()
        with state.transaction() as db:  # export jobs are not uploaded: they are done once written
            db.executemany("UPDATE jobs SET state = 'imported' WHERE job = ?", ((j,) for j in jobs))
        run.write_failures()
        return [state.dir / f"requests-{j:05d}.jsonl" for j in jobs], run.status_counts()
    finally:
        run.close()


def load_saved_run(out_dir: str | os.PathLike[str]) -> tuple[Preset, EnrichConfig]:
    """The preset and settings an export folder was written with (``preset.yaml``, ``enrich_config.json``)."""
    from clinalign.enrich.presets import load_preset_file
    from clinalign.enrich.runner import CONFIG_FILE, PRESET_FILE
    from clinalign.utils.io import read_json

    out = Path(out_dir)
    if not (out / CONFIG_FILE).is_file() or not (out / PRESET_FILE).is_file():
        raise DataError(
            f"{out}: not an export folder (no {CONFIG_FILE} / {PRESET_FILE}). Pass the --out folder of "
            "`clinalign enrich --mode export`."
        )
    saved = read_json(out / CONFIG_FILE)
    known = set(EnrichConfig.model_fields)
    config = EnrichConfig(**{k: v for k, v in saved.items() if k in known}, progress=False)
    return load_preset_file(out / PRESET_FILE), config


def import_output(
    output_files: Iterable[str | os.PathLike[str]],
    preset: Preset,
    config: EnrichConfig,
    out_dir: str | os.PathLike[str],
    *,
    checklists: Mapping[str, Mapping[str, str]] | None = None,
    token_counter: TokenCounter | None = None,
) -> tuple[EnrichResult, dict[str, int]]:
    """Import an engine's batch output JSONL (e.g. vLLM ``run_batch``) into an export folder.

    Every line is judged with live mode's validation; a line already imported is skipped, so importing the same
    file twice changes nothing. A malformed line is a :class:`~clinalign.errors.DataError` naming file and line,
    and nothing of that file is kept.
    """
    files = [Path(p) for p in output_files]
    for path in files:
        if not path.is_file():
            raise DataError(f"{path}: file not found. Pass the output JSONL the engine wrote.")
    run = BatchRun(preset, config, out_dir, checklists=checklists, token_counter=token_counter)
    try:
        run.open(None)
        run.import_lines(_read_output_files(files))
        return run.result(), run.status_counts()
    finally:
        run.close()


__all__ = [
    "BatchOptions",
    "BatchRun",
    "OpenAIBatchAPI",
    "enrich_batch",
    "export_requests",
    "import_output",
    "load_saved_run",
]
