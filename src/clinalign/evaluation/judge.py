"""``judge``: a multimodal LLM as a second opinion, through the enrichment client (same endpoint flags,
strict JSON schema, repair turns, retries, resume, cost estimate).

- **audit**: per generated image and checklist attribute of its class, pass/fail with a short reason ->
  pass rates per method, class and attribute;
- **rank**: per case (a held-out prompt every method generated for), the methods' images anonymised
  as A, B, C, ... in random order, a strict ranking out; the rankings are un-blinded and aggregated like a
  human preference study (top-1 rates, Bradley–Terry scores with bootstrap CIs).

Each finished request is appended to ``judge_audit.jsonl`` / ``judge_rank.jsonl``; a rerun skips what is
already there, so an interrupted judge resumes without paying twice.
"""

from __future__ import annotations

import asyncio
import string
import warnings
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from clinalign.enrich.client import ChatClient, RequestFailed, ask_validated, image_data_url, response_format_param
from clinalign.enrich.config import EnrichConfig
from clinalign.enrich.pricing import Usage, cost_line
from clinalign.errors import ConfigError, DataError
from clinalign.evaluation.common import CheckResult, figure, save_figure, write_result, write_rows
from clinalign.evaluation.functional import bradley_terry_ci, top1_rates
from clinalign.evaluation.inputs import MethodImages, read_methods
from clinalign.evaluation.preference import shared_cases
from clinalign.utils.io import append_jsonl, read_jsonl

AUDIT_LOG = "judge_audit.jsonl"
RANK_LOG = "judge_rank.jsonl"

AUDIT_SYSTEM = (
    "You audit synthetic medical images against a clinical checklist. For every attribute listed, decide "
    "whether the image visibly satisfies it. Judge only what is visible; do not diagnose. Answer with JSON only."
)
RANK_SYSTEM = (
    "You compare synthetic medical images generated for the same clinical description. Rank all images "
    "from best to worst match to the description (clinical findings first, then realism). No ties. "
    "Answer with JSON only."
)


class JudgeConfig(BaseModel):
    """Settings of ``clinalign evaluate judge`` (the endpoint settings are the enrichment client's)."""

    model_config = ConfigDict(extra="forbid")

    methods: dict[str, list[str]] = Field(description="Method name -> generated sets.")
    checklists: str | None = Field(None, description="Checklists file (class -> attributes); needed by the audit.")
    task: Literal["audit", "rank", "both"] = Field("both", description="Which judge task(s) to run.")
    n_cases: int | None = Field(None, ge=1, description="Rank: cases to sample (default: all shared cases).")
    max_images: int | None = Field(None, ge=1, description="Audit: at most this many images per method.")
    seed: int = Field(0, description="Seed of the case sample and the candidate order.")
    n_boot: int = Field(1000, ge=2, description="Bootstrap resamples (over cases) for the rank aggregation.")
    endpoint: EnrichConfig = Field(description="Model, endpoint and reliability settings (the enrichment client's).")
    out: str = Field(description="Output directory.")

    @field_validator("methods")
    @classmethod
    def _non_empty(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        if not value:
            raise ValueError("give at least one generated set")
        return value


# ---------------------------------------------------------------------- checklists as attributes


def read_checklist_attributes(path: str | Path) -> dict[str, dict[str, str]]:
    """Class -> {attribute: expected finding}: :func:`clinalign.data.enriched.checklist_attributes`."""
    from clinalign.data.enriched import checklist_attributes

    return checklist_attributes(Path(path))


# ---------------------------------------------------------------------- reply schemas


class AttributeVerdict(BaseModel):
    model_config = ConfigDict(extra="forbid")

    attribute: str = Field(description="The attribute name exactly as listed.")
    passed: bool = Field(description="true when the image visibly satisfies the attribute.")
    reason: str = Field(description="At most 20 words: what in the image decided it.")


class AuditReply(BaseModel):
    model_config = ConfigDict(extra="forbid")

    verdicts: list[AttributeVerdict] = Field(description="One verdict per listed attribute, in the listed order.")

    @model_validator(mode="after")
    def _every_attribute(self, info: ValidationInfo) -> AuditReply:
        expected = (info.context or {}).get("attributes")
        names = [v.attribute.strip() for v in self.verdicts]
        if expected is not None and sorted(names) != sorted(expected):
            raise ValueError(f"give exactly one verdict for each of {expected}; got {names}")
        return self


class RankReply(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ranking: list[str] = Field(description="All image letters, best first, each exactly once.")
    reason: str = Field(description="At most 30 words on the decisive difference.")

    @model_validator(mode="after")
    def _strict_order(self, info: ValidationInfo) -> RankReply:
        letters = (info.context or {}).get("letters")
        self.ranking = [r.strip().upper() for r in self.ranking]
        if letters is not None and (sorted(self.ranking) != sorted(letters)):
            raise ValueError(f"rank every letter of {letters} exactly once (no ties); got {self.ranking}")
        return self


def _audit_validator(attributes: list[str]):
    return lambda data: AuditReply.model_validate(data, context={"attributes": attributes})


def _rank_validator(letters: list[str]):
    return lambda data: RankReply.model_validate(data, context={"letters": letters})


def _image_part(path: Path, endpoint: EnrichConfig) -> dict[str, Any]:
    url = image_data_url(path, max_side=endpoint.max_image_side, quality=endpoint.jpeg_quality)
    return {"type": "image_url", "image_url": {"url": url}}


# ---------------------------------------------------------------------- the run


async def run_jobs(
    jobs: list[dict[str, Any]], client: ChatClient, endpoint: EnrichConfig, log: Path, usage: Usage
) -> list[str]:
    """Send every job (messages, validator, schema, record) with bounded concurrency; append results to ``log``."""
    semaphore = asyncio.Semaphore(endpoint.concurrency)
    failures: list[str] = []

    async def one(job: dict[str, Any]) -> None:
        async with semaphore:
            try:
                answer = await ask_validated(
                    client,
                    job["messages"],
                    validate=job["validate"],
                    response_format=response_format_param(endpoint, job["schema_name"], job["schema"]),
                    max_repairs=endpoint.max_repairs,
                )
            except RequestFailed as exc:
                usage.add(exc.usage)
                failures.append(f"{job['record']['key']}: {exc.reason} ({exc.detail[:200]})")
                return
            usage.add(answer.usage)
            append_jsonl(log, {**job["record"], "reply": answer.output.model_dump(), "repairs": answer.repairs})

    await asyncio.gather(*(one(job) for job in jobs))
    return failures


def _audit_jobs(
    methods: dict[str, MethodImages], checklists: dict[str, dict[str, str]], config: JudgeConfig, done: set[str]
) -> list[dict[str, Any]]:
    jobs = []
    schema = AuditReply.model_json_schema()
    for name, group in methods.items():
        count = len(group) if config.max_images is None else min(config.max_images, len(group))
        for i in range(count):
            label = group.labels[i]
            if label not in checklists:
                raise DataError(
                    f"{group.sources[i]} ({group.ids[i]}): label '{label}' has no checklist in {config.checklists} "
                    f"(classes there: {sorted(checklists)})."
                )
            key = f"{name}|{group.sources[i]}|{group.ids[i]}"
            if key in done:
                continue
            attributes = checklists[label]
            lines = "\n".join(f"- {a}: {v}" for a, v in attributes.items())
            text = (
                f'Class: "{label}". Checklist attributes (name: expected finding):\n{lines}\n'
                'Return {"verdicts": [{"attribute": <name>, "passed": true|false, "reason": <=20 words}, ...]} '
                "with one verdict per attribute."
            )
            jobs.append(
                {
                    "messages": [
                        {"role": "system", "content": AUDIT_SYSTEM},
                        {
                            "role": "user",
                            "content": [{"type": "text", "text": text}, _image_part(group.paths[i], config.endpoint)],
                        },
                    ],
                    "validate": _audit_validator(list(attributes)),
                    "schema_name": "checklist_audit",
                    "schema": schema,
                    "record": {"key": key, "method": name, "id": group.ids[i], "label": label},
                }
            )
    return jobs


def rank_jobs(methods: dict[str, MethodImages], config: JudgeConfig, done: set[str]) -> list[dict[str, Any]]:
    """Blinded ranking requests: one per shared case not in ``done``, methods shuffled behind letters A, B, ...

    Used by ``evaluate judge`` and by ``clinalign pairs --judge mllm:...`` (which ranks seed samples as methods).
    """
    names = list(methods)
    if len(names) < 2:
        raise ConfigError(f"ranking compares at least 2 methods, got {len(names)}.")
    if len(names) > 26:
        raise ConfigError(f"at most 26 methods fit the letters A..Z, got {len(names)}.")
    keyed, common = shared_cases(methods)
    rng = np.random.default_rng(config.seed)
    chosen = list(rng.permutation(len(common)))
    if config.n_cases is not None:
        chosen = chosen[: config.n_cases]
    letters = list(string.ascii_uppercase[: len(names)])
    schema = RankReply.model_json_schema()
    jobs = []
    for number, index in enumerate(chosen, start=1):
        case = f"case_{number:03d}"
        order = [names[j] for j in rng.permutation(len(names))]
        if case in done:
            continue
        prompt = methods[order[0]].prompts[keyed[order[0]][common[index]]]
        content: list[dict[str, Any]] = [
            {
                "type": "text",
                "text": f'Description: "{prompt}". Images: {", ".join(letters)} (in that order). '
                'Return {"ranking": [letters best first], "reason": <=30 words}.',
            }
        ]
        for letter, method in zip(letters, order, strict=True):
            content.append({"type": "text", "text": f"Image {letter}:"})
            content.append(_image_part(methods[method].paths[keyed[method][common[index]]], config.endpoint))
        jobs.append(
            {
                "messages": [{"role": "system", "content": RANK_SYSTEM}, {"role": "user", "content": content}],
                "validate": _rank_validator(letters),
                "schema_name": "ranking",
                "schema": schema,
                "record": {"key": case, "case": case, "letters": dict(zip(letters, order, strict=True))},
            }
        )
    return jobs


def judged_keys(log: Path) -> set[str]:
    """Keys already judged; a torn last line (a run killed mid-append) is cut off with a warning, so it is redone."""
    from clinalign.utils.jsonl import repair_jsonl

    rows, dropped = repair_jsonl(log)
    if dropped:
        warnings.warn(
            f"{log}: dropped {dropped} torn last line left by an interrupted run; it is judged again.", stacklevel=2
        )
    return {str(r["key"]) for r in rows}


def evaluate_judge(config: JudgeConfig, *, api_key: str | None = None) -> CheckResult:
    """Run the checklist audit and/or the ranking; writes judge.csv/json/png (+ judge_rank.csv, judge logs).

    ``api_key`` defaults to the environment variable ``config.endpoint.api_key_env`` (never written anywhere).
    """
    from clinalign.enrich.client import resolve_api_key

    methods = read_methods(config.methods)
    checklists = None
    if config.task in ("audit", "both"):
        if config.checklists is None:
            raise ConfigError("the checklist audit needs --checklists FILE (class -> attributes).")
        checklists = read_checklist_attributes(config.checklists)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    audit_log, rank_log = out / AUDIT_LOG, out / RANK_LOG
    jobs: list[tuple[list[dict[str, Any]], Path]] = []
    if checklists is not None:
        jobs.append((_audit_jobs(methods, checklists, config, judged_keys(audit_log)), audit_log))
    if config.task in ("rank", "both"):
        jobs.append((rank_jobs(methods, config, judged_keys(rank_log)), rank_log))
    key = api_key if api_key is not None else resolve_api_key(config.endpoint)
    usage = Usage()
    failures: list[str] = []

    async def run_all() -> None:
        client = ChatClient(config.endpoint, key)
        try:
            for batch, log in jobs:
                failures.extend(await run_jobs(batch, client, config.endpoint, log, usage))
        finally:
            await client.aclose()

    if any(batch for batch, _ in jobs):
        asyncio.run(run_all())

    rows: list[dict[str, Any]] = []
    summary: dict[str, Any] = {
        "model": config.endpoint.model,
        "usage_this_run": usage.to_dict(),
        "cost": cost_line(
            usage, config.endpoint.model, config.endpoint.price_input_per_mtok, config.endpoint.price_output_per_mtok
        ),
        "failures": failures,
    }
    if checklists is not None:
        rows, summary["audit"] = _audit_tables(read_jsonl(audit_log) if audit_log.is_file() else [])
    if config.task in ("rank", "both"):
        summary["rank"] = _rank_aggregate(
            read_jsonl(rank_log) if rank_log.is_file() else [], list(methods), config, out
        )
        if not rows:
            rows = summary["rank"]["results"]
    # the endpoint is saved without its runtime fields (URL, key variable), like enrichment's config
    summary["config"] = {**config.model_dump(exclude={"endpoint"}), "endpoint": config.endpoint.to_saved_dict()}
    result = write_result(CheckResult("judge", rows, summary, out))
    result.files["png"] = _plot(summary, out / "judge.png")
    return result


def _audit_tables(records: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Pass rates per method × class × attribute (rows), per method and per method × attribute (summary)."""
    cells: dict[tuple[str, str, str], list[int]] = {}
    for record in records:
        for verdict in record["reply"]["verdicts"]:
            key = (record["method"], record["label"], verdict["attribute"])
            cells.setdefault(key, []).append(int(bool(verdict["passed"])))
    rows = [
        {"method": m, "label": c, "attribute": a, "n_images": len(v), "pass_rate": float(np.mean(v))}
        for (m, c, a), v in sorted(cells.items())
    ]
    per_method: dict[str, list[int]] = {}
    per_attribute: dict[str, dict[str, list[int]]] = {}
    for (m, _, a), v in cells.items():
        per_method.setdefault(m, []).extend(v)
        per_attribute.setdefault(m, {}).setdefault(a, []).extend(v)
    return rows, {
        "n_images": len(records),
        "pass_rate_per_method": {m: float(np.mean(v)) for m, v in per_method.items()},
        "pass_rate_per_method_attribute": {
            m: {a: float(np.mean(v)) for a, v in attrs.items()} for m, attrs in per_attribute.items()
        },
    }


def _rank_aggregate(
    records: list[dict[str, Any]], methods: list[str], config: JudgeConfig, out: Path
) -> dict[str, Any]:
    if not records:
        return {"n_cases": 0, "results": []}
    rankings = [[methods.index(r["letters"][letter]) for letter in r["reply"]["ranking"]] for r in records]
    cases = [r["case"] for r in records]
    write_rows(
        out / "judge_rankings.csv",
        [{"rater": "mllm", "case": r["case"], "ranking": ">".join(r["reply"]["ranking"])} for r in records],
    )
    top1 = top1_rates(rankings, len(methods), groups=cases, n_boot=config.n_boot, seed=config.seed)
    bt = bradley_terry_ci(rankings, len(methods), groups=cases, n_boot=config.n_boot, seed=config.seed)
    results = [
        {
            "method": m,
            "top1_rate": float(top1.estimate[i]),
            "top1_ci": [float(top1.lower[i]), float(top1.upper[i])],
            "bt_score": float(bt.estimate[i]),
            "bt_ci": [float(bt.lower[i]), float(bt.upper[i])],
        }
        for i, m in enumerate(methods)
    ]
    return {"n_cases": len(records), "results": results}


def _plot(summary: dict[str, Any], path: Path) -> Path:
    panels = [k for k in ("audit", "rank") if k in summary]
    fig = figure(4.5 * len(panels), 3.4)
    for p, kind in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), p + 1)
        if kind == "audit":
            rates = summary["audit"]["pass_rate_per_method"]
            ax.bar(list(rates), list(rates.values()))
            ax.set_ylim(0, 1)
            ax.set_title("checklist pass rate (MLLM audit)", fontsize=9)
        else:
            results = summary["rank"]["results"]
            ax.bar([r["method"] for r in results], [r["bt_score"] for r in results])
            ax.set_title("Bradley–Terry score (MLLM ranking)", fontsize=9)
    return save_figure(fig, path)
