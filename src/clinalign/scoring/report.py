"""The CAS evaluation run behind ``clinalign score-cas``: score sets, analyse the tail, write the report.

:func:`evaluate_cas` reads the real test set and one or more generated sets (methods, and seeds of a
method), scores them all with one evaluator and probe, and writes to ``config.out``:

- ``per_image.csv`` / ``real_per_image.csv``: every primitive and CAS per image;
- ``summary.json``: the config, how CAS was computed, τ, per-method results with bootstrap CIs,
  notes and leakage warnings;
- ``tables.md`` (+ ``tables.tex``, ``tables.json``, ``table_*.csv``): method, tail and per-class tables;
- ``ecdf.png``, ``primitives.png``, ``lowest_cas.png``: the plots;
- ``score_config.json``: the config that produced all of it;
- an "Evaluation beyond CAS" section in ``tables.md`` and ``summary.json`` for every ``clinalign evaluate``
  check found in ``evaluation/<check>/`` (run the checks with ``--out OUT/evaluation/<check>``);
- ``cache/``: the evaluator's image embeddings (a :class:`~clinalign.critics.cache.EmbeddingStore`, keyed by
  image content), so a rerun (after an interruption, or with other metric options) encodes no image twice;
  ``embedding_cache`` points at a store shared with other runs instead.
"""

from __future__ import annotations

import csv
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator

from clinalign import __version__
from clinalign.critics.cache import EmbeddingStore, file_sha256
from clinalign.errors import ConfigError
from clinalign.evaluation.report import collect_results, evaluation_markdown
from clinalign.scoring.scorer import NO_REFERENCE_NOTE, CASScorer, CASScores, describe_cas
from clinalign.scoring.sets import (
    EvaluationLeakageWarning,
    GeneratedSet,
    ImageSet,
    check_leakage,
    check_methods,
    generated_image_path,
    read_checklists,
    read_real_set,
    scan_generated_set,
)
from clinalign.scoring.tables import Table, comparison_table, per_class_table, tail_table
from clinalign.scoring.tail import TailAnalysis, average_tails, tail_analysis
from clinalign.utils.distributed import Ranks
from clinalign.utils.io import atomic_open, atomic_write_text, write_json

CONFIG_NAME = "score_config.json"
# where `score-cas` looks for `clinalign evaluate` results to include (OUT/evaluation/<check>/<check>.json)
EVALUATION_DIR = "evaluation"


class ScoreCASConfig(BaseModel):
    """Everything one CAS evaluation needs; saved as ``score_config.json`` beside its outputs."""

    model_config = ConfigDict(extra="forbid")

    # --- data
    methods: dict[str, list[str]] = Field(
        description="Method name -> generated sets (directories written by `clinalign generate`, or their "
        "manifest.jsonl); several sets under one name are seeds of that method."
    )
    real: str = Field(description="Real test manifest (generic CSV/JSONL with t_ep, or an enriched JSONL).")
    real_split: str | None = Field(None, description="Only use real rows with this split (default: all rows).")
    image_root: str | None = Field(None, description="Folder relative real image paths resolve against.")
    checklists: str | None = Field(
        None, description="JSON/YAML mapping class name -> checklist text t_c (rows may carry their own)."
    )
    # --- models
    evaluator: str = Field(description="Evaluator critic (hub id, local dir or open_clip:<name>); not the trainer's.")
    evaluator_backend: str = Field("auto", description="Critic backend: auto, transformers or open_clip.")
    probe: str = Field(description="Probe directory fitted on the evaluator's embeddings of real training images.")
    device: str | None = Field(None, description="cpu, cuda, cuda:N (default: cuda when available).")
    dtype: str = Field("fp32", description="Evaluator weights dtype: fp32, bf16, fp16.")
    batch_size: int = Field(32, ge=1, description="Images per evaluator forward pass.")
    chunk_rows: int = Field(
        4096,
        ge=1,
        description="Manifest rows read, embedded and scored at a time (rounded up to a multiple of batch_size); "
        "bounds memory for large sets.",
    )
    # --- metric
    dd_mode: Literal["accuracy", "probability"] = Field(
        "accuracy", description="DD per image: 1/0 probe correctness (accuracy) or p(label) (probability)."
    )
    tau_quantile: float = Field(0.25, gt=0, lt=1, description="τ = this quantile of the real images' CAS.")
    n_boot: int = Field(1000, ge=2, description="Bootstrap resamples for confidence intervals.")
    ci_level: float = Field(0.95, gt=0, lt=1, description="Confidence level of the intervals.")
    seed: int = Field(0, description="Seed of the bootstrap.")
    # --- outputs
    n_lowest: int = Field(8, ge=0, description="Lowest-CAS images per method in lowest_cas.png (0: no grid).")
    plot_kind: Literal["violin", "box"] = Field("violin", description="Per-primitive plot style.")
    cache: bool = Field(
        True,
        description="Keep evaluator image embeddings in an on-disk store (OUT/cache, or `embedding_cache`) so "
        "images already embedded with this evaluator are not encoded again.",
    )
    embedding_cache: str | None = Field(
        None,
        description="Folder of an embedding store shared with other runs and commands (probe train, evaluate, "
        "quickstart); default OUT/cache.",
    )
    out: str = Field(description="Output directory.")

    @field_validator("methods")
    @classmethod
    def _non_empty(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        return check_methods(value)


@dataclass
class RunResult:
    """One scored generated set (one seed of one method)."""

    method: str
    run: str
    image_set: GeneratedSet
    scores: CASScores
    leakage: str | None = None


@dataclass
class CASReport:
    """What :func:`evaluate_cas` computed and wrote.

    Attributes:
        real: per-image scores of the real test images (the reference distribution).
        runs: every scored generated set, grouped by method.
        tails: per-method tail analysis (images pooled over the method's seeds).
        run_tails: per-method tail analysis of each run (seed) on its own, in ``runs`` order.
        real_tail: the real set against its own τ (fraction below is ``q`` by construction).
        tables: the method, tail and per-class tables.
        cas_definition: how CAS was computed (primitives, DD mode).
        notes: caveats every reader must see (e.g. CAS without SFS).
        leakage: evaluation-leakage warnings (evaluator == training critic).
        out_dir / files: where everything was written.
    """

    real: CASScores
    runs: dict[str, list[RunResult]]
    tails: dict[str, TailAnalysis]
    real_tail: TailAnalysis
    tables: dict[str, Table]
    cas_definition: str
    notes: list[str]
    leakage: list[str]
    evaluator: dict[str, str]
    out_dir: Path
    files: dict[str, Path] = field(default_factory=dict)
    run_tails: dict[str, list[TailAnalysis]] = field(default_factory=dict)

    @property
    def tau(self) -> float:
        return self.real_tail.tau

    def method_scores(self, method: str) -> CASScores:
        """All images of a method, pooled over its seeds (the run's own scores when it has one run)."""
        group = self.runs[method]
        return group[0].scores if len(group) == 1 else CASScores.concat([r.scores for r in group])

    def console_table(self) -> str:
        """A short fixed-width summary for the terminal."""
        header = f"{'method':<24} {'n':>6} {'VDC':>7} {'CCS':>7} {'DD':>7} {'SFS':>7} {'CAS':>7} {'<τ':>7} {'P10':>7}"
        lines = [header, "-" * len(header)]

        def fmt(value: float | None) -> str:
            return f"{'–':>7}" if value is None else f"{value:7.3f}"

        rows = [("real (reference)", self.real, self.real_tail)]
        rows += [(m, self.method_scores(m), self.tails[m]) for m in self.runs]
        for name, scores, tail in rows:
            means = scores.means()
            cells = " ".join(fmt(means[k]) for k in ("vdc", "ccs", "dd", "sfs", "cas"))
            lines.append(f"{name[:24]:<24} {len(scores):>6} {cells} {fmt(tail.frac_below)} {fmt(tail.p10)}")
        lines.append(f"τ = {self.tau:.4f} ({self.real_tail.q:g}-quantile of real CAS); {self.cas_definition}")
        lines += [f"note: {n}" for n in self.notes]
        lines += [f"WARNING: {w}" for w in self.leakage]
        return "\n".join(lines)


# ---------------------------------------------------------------------- loading


def _load_evaluator(config: ScoreCASConfig):
    from clinalign.critics import load_critic

    return load_critic(config.evaluator, backend=config.evaluator_backend, device=config.device, dtype=config.dtype)


def _load_batch(paths: list[Path], size: int) -> torch.Tensor:
    from clinalign.data.images import load_image, pil_to_tensor

    return torch.stack([pil_to_tensor(load_image(p), size) for p in paths])


# ---------------------------------------------------------------------- scoring


def _score_set(
    scorer: CASScorer,
    image_set: ImageSet,
    embeddings: torch.Tensor,
    *,
    use_sfs: bool,
    extra: dict[str, Any],
    ranks: Ranks,
    offset: int = 0,
) -> CASScores:
    """Score a set (or a chunk of one starting at position ``offset``) from its evaluator embeddings, in
    batches dealt to the ranks; every rank gets all rows.

    The texts are encoded (and cached by the evaluator) in one call before the rows are dealt, and the
    batches are the same whatever the number of processes, so the numbers are too.
    """
    scorer.reset()
    n = len(image_set)
    scorer.evaluator.encode_texts(list(dict.fromkeys([*image_set.prompts, *image_set.checklists])))
    columns = {**{k: [v] * n for k, v in extra.items()}, "ref_id": image_set.ref_ids or [""] * n}
    for index in _my_batches(n, scorer.batch_size, ranks):
        picked = index.tolist()
        references = None
        if use_sfs and image_set.ref_ids is not None:
            references = scorer.cached_references([image_set.ref_ids[i] for i in picked])
        scorer.update_from_embeddings(
            embeddings[index],
            [image_set.prompts[i] for i in picked],
            [image_set.checklists[i] for i in picked],
            [image_set.labels[i] for i in picked],
            references,
            ids=[image_set.ids[i] for i in picked],
            extra={k: [v[i] for i in picked] for k, v in columns.items()},
            indices=index + offset,
        )
    scores = scorer.compute(sync=ranks.distributed)
    scorer.reset()
    return scores


def _score_streamed(
    scorer: CASScorer,
    image_set: GeneratedSet,
    store: EmbeddingStore | None,
    *,
    chunk_rows: int,
    use_sfs: bool,
    extra: dict[str, Any],
    ranks: Ranks,
    progress: bool,
    desc: str,
) -> CASScores:
    """Read, embed and score a generated set ``chunk_rows`` rows at a time; only the per-image results grow.

    Chunks are a whole number of batches, so the batches (and the numbers) equal an unchunked run's.
    """
    from tqdm.auto import tqdm

    size = -(-max(chunk_rows, 1) // scorer.batch_size) * scorer.batch_size
    parts: list[CASScores] = []
    with tqdm(total=len(image_set), desc=desc, unit="img", disable=not progress or not ranks.is_main) as bar:
        for start, chunk in image_set.chunks(size):
            embeddings = _cached_embeddings(scorer, chunk.paths, store, progress=False, desc=desc, ranks=ranks)
            parts.append(_score_set(scorer, chunk, embeddings, use_sfs=use_sfs, extra=extra, ranks=ranks, offset=start))
            bar.update(len(chunk))
    return parts[0] if len(parts) == 1 else CASScores.concat(parts)


def _my_batches(n: int, batch_size: int, ranks: Ranks) -> list[np.ndarray]:
    """Positions of this rank's batches: ``range(n)`` cut into batches of ``batch_size``, dealt in turn."""
    starts = range(ranks.process_index * batch_size, n, batch_size * ranks.num_processes)
    return [np.arange(start, min(start + batch_size, n)) for start in starts]


def _cached_embeddings(
    scorer: CASScorer,
    paths: list[Path],
    store: EmbeddingStore | None,
    *,
    progress: bool,
    desc: str,
    ranks: Ranks,
) -> torch.Tensor:
    """Evaluator embeddings of image files; images the store already holds (same bytes, same evaluator)
    are read back instead of encoded, so a repeated or interrupted evaluation skips the encoder."""
    if store is None:
        return _embed_files(scorer, paths, progress=progress, desc=desc, ranks=ranks)
    keys = [file_sha256(p) for p in paths]
    missing: dict[str, Path] = {}
    for key, path, row in zip(keys, paths, store.lookup(keys), strict=True):
        if row < 0 and key not in missing:
            missing[key] = path
    if missing:
        new = _embed_files(scorer, list(missing.values()), progress=progress, desc=desc, ranks=ranks)
        if ranks.is_main:
            store.add(list(missing), new)
        ranks.barrier()  # every rank reads the rows the main process just appended
    return store.get(keys)


def _embedding_store(config: ScoreCASConfig, evaluator: Any) -> EmbeddingStore | None:
    if not config.cache:
        return None
    root = Path(config.embedding_cache) if config.embedding_cache else Path(config.out) / "cache"
    try:
        return EmbeddingStore(root, evaluator)
    except ConfigError:  # a custom critic without a weights fingerprint: embed without caching
        return None


def evaluate_cas(
    config: ScoreCASConfig,
    *,
    evaluator: Any = None,
    probe: Any = None,
    progress: bool = True,
    ranks: Ranks | None = None,
) -> CASReport:
    """Score the real and generated sets in ``config`` and write the report to ``config.out``.

    ``evaluator`` / ``probe`` may be passed already loaded (they then override ``config.evaluator`` /
    ``config.probe`` for loading, though the config is still saved as given).

    With ``ranks`` of several processes (``accelerate launch -m clinalign score-cas``) every rank calls
    this: the images are embedded in batches dealt to the ranks, the per-image rows are gathered by
    :meth:`CASScorer.compute`, and the main process writes the report, equal to a single-process run.
    """
    ranks = ranks or Ranks()
    if (evaluator is None) != (probe is None):
        raise ConfigError("pass both evaluator and probe, or neither (then they load from the config).")
    # read and validate every input before the evaluator loads, so bad rows fail in seconds; the
    # probe-evaluator match is checked by CASScorer once both are there
    if probe is None:
        from clinalign.probe import LinearProbe

        probe = LinearProbe.load(config.probe)
    classes = list(probe.class_names)
    checklists = read_checklists(config.checklists) if config.checklists else None
    real = read_real_set(
        config.real, checklists=checklists, known_labels=classes, split=config.real_split, image_root=config.image_root
    )
    real_ids = set(real.ids)
    sets: dict[str, list[GeneratedSet]] = {}
    for method, paths in config.methods.items():
        sets[method] = []
        for path in paths:
            # validated row by row now, read again chunk by chunk while scoring: no set is held in memory
            image_set = scan_generated_set(
                path,
                name=method,
                checklists=checklists,
                known_labels=classes,
                reference_ids=real_ids,
                reference_source=real.source,
            )
            sets[method].append(image_set)
    del real_ids

    if evaluator is None:
        evaluator = _load_evaluator(config)
    scorer = CASScorer(evaluator, probe, dd_mode=config.dd_mode, batch_size=config.batch_size)
    store = _embedding_store(config, evaluator)
    notes: list[str] = []
    leakage: list[str] = []
    for group in sets.values():
        for image_set in group:
            message = check_leakage(evaluator, image_set)
            if message and message not in leakage:
                leakage.append(message)
                warnings.warn(message, EvaluationLeakageWarning, stacklevel=2)
    without_refs = [f"{s.name} ({s.source})" for group in sets.values() for s in group if not s.ref_complete]
    use_sfs = not without_refs
    if not use_sfs:
        notes.append(
            f"{NO_REFERENCE_NOTE}. Sets without ref_id: {', '.join(without_refs)}; the real images are scored "
            "the same way so τ is comparable."
        )

    # the real images are embedded once: as the reference distribution and as SFS references
    real_embeddings = _cached_embeddings(
        scorer,
        real.paths,
        store,
        progress=progress,
        desc="embedding real images",
        ranks=ranks,
    )
    scorer.cache_references(real.ids, real_embeddings)
    real_scores = scorer.update_from_embeddings(
        real_embeddings,
        real.prompts,
        real.checklists,
        real.labels,
        real_embeddings if use_sfs else None,
        ids=real.ids,
    )
    scorer.reset()

    runs: dict[str, list[RunResult]] = {}
    for method, group in sets.items():
        runs[method] = []
        for index, image_set in enumerate(group):
            run = f"seed {image_set.seed}" if image_set.seed is not None else f"run {index}"
            if any(r.run == run for r in runs[method]):
                run = f"{run} ({image_set.source.parent.name})"
            scores = _score_streamed(
                scorer,
                image_set,
                store,
                chunk_rows=config.chunk_rows,
                use_sfs=use_sfs,
                extra={"method": method, "run": run, "seed": "" if image_set.seed is None else image_set.seed},
                ranks=ranks,
                progress=progress,
                desc=f"scoring {method} {run}",
            )
            runs[method].append(RunResult(method, run, image_set, scores, check_leakage(evaluator, image_set)))

    common = {"q": config.tau_quantile, "n_boot": config.n_boot, "seed": config.seed, "ci_level": config.ci_level}
    real_tail = tail_analysis(real_scores.cas, real_scores.cas, **common)
    tails = {
        method: tail_analysis(np.concatenate([r.scores.cas for r in group]), real_scores.cas, **common)
        for method, group in runs.items()
    }
    run_tails = {
        method: [tail_analysis(r.scores.cas, real_scores.cas, **common) for r in group]
        for method, group in runs.items()
    }
    results = {method: [r.scores for r in group] for method, group in runs.items()}
    tables = {
        "methods": comparison_table(results),
        "tail": tail_table(tails, real=real_tail),
        "per_class": per_class_table(results),
    }
    report = CASReport(
        real=real_scores,
        runs=runs,
        tails=tails,
        real_tail=real_tail,
        tables=tables,
        cas_definition=describe_cas(real_scores.primitives, config.dd_mode),
        notes=notes,
        leakage=leakage,
        evaluator={"name": evaluator.name, "fingerprint": _fingerprint(evaluator)},
        out_dir=Path(config.out),
        run_tails=run_tails,
    )
    if ranks.is_main:
        write_report(report, config)
    ranks.barrier()  # the report is complete on disk when any rank returns
    return report


def _fingerprint(critic: Any) -> str:
    try:
        return str(critic.fingerprint)
    except Exception:  # a custom Critic without weights to hash
        return ""


def _embed_files(scorer: CASScorer, paths: list[Path], *, progress: bool, desc: str, ranks: Ranks) -> torch.Tensor:
    """Evaluator embeddings [N,D] of image files; each rank embeds its batches, every rank gets them all."""
    from tqdm.auto import tqdm

    chunks: list[tuple[int, torch.Tensor]] = []
    size = scorer.evaluator.image_size
    mine = _my_batches(len(paths), scorer.batch_size, ranks)
    with tqdm(total=sum(len(b) for b in mine), desc=desc, unit="img", disable=not progress or not ranks.is_main) as bar:
        for index in mine:
            batch = [paths[i] for i in index.tolist()]
            chunks.append((int(index[0]), scorer.embed_images(_load_batch(batch, size))))
            bar.update(len(batch))
    if ranks.distributed:
        chunks = [chunk for rank_chunks in ranks.gather(chunks) for chunk in rank_chunks]
    chunks.sort(key=lambda item: item[0])
    return torch.cat([tensor for _, tensor in chunks]) if chunks else torch.zeros(0, scorer.evaluator.embed_dim)


# ---------------------------------------------------------------------- writing


_COLUMN_ORDER = ("method", "run", "seed", "id", "ref_id", "label", "predicted", "vdc", "ccs", "dd", "sfs", "cas")


def _write_rows(path: Path, parts: list[CASScores], tau: float) -> Path:
    """Write the per-image rows of ``parts`` (with ``below_tau``) one at a time, never all in memory."""
    present: list[str] = []
    for part in parts:  # every row of one CASScores has the same columns
        first = next(part.iter_rows(), None)
        present += [k for k in (*first, "below_tau") if k not in present] if first is not None else []
    columns = [c for c in _COLUMN_ORDER if c in present] + [c for c in present if c not in _COLUMN_ORDER]
    with atomic_open(path, "w") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        for part in parts:
            for row in part.iter_rows():
                row["below_tau"] = int(row["cas"] < tau)
                writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return path


def write_report(report: CASReport, config: ScoreCASConfig) -> dict[str, Path]:
    """Write every output file of ``report`` into ``config.out``; returns name -> path."""
    from clinalign.scoring.plots import plot_ecdf, plot_lowest, plot_primitives

    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    files = report.files
    tau = report.tau
    generated = [run.scores for group in report.runs.values() for run in group]
    files["per_image"] = _write_rows(out / "per_image.csv", generated, tau)
    files["real_per_image"] = _write_rows(out / "real_per_image.csv", [report.real], tau)

    summary = {
        "_class_name": "CASReport",
        "_clinalign_version": __version__,
        "evaluator": report.evaluator,
        "probe": config.probe,
        "cas_definition": report.cas_definition,
        "cas_primitives": list(report.real.primitives),
        "dd_mode": config.dd_mode,
        "sfs_available": report.real.has_references,
        "tau": tau,
        "tau_quantile": config.tau_quantile,
        "real": {"n": len(report.real), "means": report.real.means(), "tail": report.real_tail.to_dict()},
        "methods": {
            method: {
                "n_images": sum(len(r.scores) for r in group),
                "n_runs": len(group),
                "runs": [
                    {
                        "run": r.run,
                        "source": str(r.image_set.source),
                        "seed": r.image_set.seed,
                        "n": len(r.scores),
                        "means": r.scores.means(),
                        "training_meta": str(r.image_set.meta_path) if r.image_set.meta_path else None,
                        "leakage": r.leakage,
                        "tail": report.run_tails[method][i].to_dict() if report.run_tails else None,
                    }
                    for i, r in enumerate(group)
                ],
                "tail": report.tails[method].to_dict(),
                "tail_per_seed": average_tails(report.run_tails[method]) if report.run_tails else None,
            }
            for method, group in report.runs.items()
        },
        "tables": {name: table.to_dict() for name, table in report.tables.items()},
        "notes": report.notes,
        "leakage": report.leakage,
    }
    # checks run with `clinalign evaluate <check> --out OUT/evaluation/<check>` join the report
    evaluation = collect_results(out / EVALUATION_DIR)
    if evaluation:
        summary["evaluation"] = {
            check: {k: v for k, v in result.items() if k != "config"} for check, result in evaluation.items()
        }
    files["summary"] = out / "summary.json"
    write_json(files["summary"], summary)

    intro = [
        "# CAS evaluation",
        "",
        f"- evaluator: `{report.evaluator['name']}`",
        f"- {report.cas_definition}",
        f"- τ = {tau:.4f} ({config.tau_quantile:g}-quantile of the CAS of {len(report.real)} real test images)",
    ]
    intro += [f"- **note:** {n}" for n in report.notes]
    intro += [f"- **WARNING:** {w}" for w in report.leakage]
    markdown = "\n".join(intro) + "\n\n" + "\n".join(t.to_markdown() for t in report.tables.values())
    if evaluation:
        markdown += "\n" + evaluation_markdown(evaluation)
    files["tables_md"] = out / "tables.md"
    atomic_write_text(files["tables_md"], markdown)
    files["tables_tex"] = out / "tables.tex"
    atomic_write_text(files["tables_tex"], "\n".join(t.to_latex() for t in report.tables.values()))
    files["tables_json"] = out / "tables.json"
    write_json(files["tables_json"], {name: t.to_dict() for name, t in report.tables.items()})
    for name, table in report.tables.items():
        files[f"table_{name}_csv"] = out / f"table_{name}.csv"
        atomic_write_text(files[f"table_{name}_csv"], table.to_csv())

    pooled = {m: report.method_scores(m) for m in report.runs}
    files["ecdf"] = plot_ecdf(
        {m: s.cas for m, s in pooled.items()}, report.real.cas, tau, out / "ecdf.png", q=config.tau_quantile
    )
    files["primitives"] = plot_primitives(pooled, out / "primitives.png", real=report.real, kind=config.plot_kind)
    if config.n_lowest > 0:
        lowest = {}
        for method, group in report.runs.items():
            items = []
            for r in group:
                for i in np.argsort(r.scores.cas, kind="stable")[: config.n_lowest]:
                    label, predicted = r.scores.labels[i], r.scores.predicted[i]
                    items.append(
                        (
                            generated_image_path(r.image_set.source, r.scores.ids[i]),  # type: ignore[index]
                            float(r.scores.cas[i]),
                            label if label == predicted else f"{label} (probe: {predicted})",
                        )
                    )
            items.sort(key=lambda item: item[1])
            lowest[method] = items[: config.n_lowest]
        files["lowest"] = plot_lowest(lowest, out / "lowest_cas.png")
    files["config"] = out / CONFIG_NAME
    write_json(files["config"], {"_clinalign_version": __version__, **config.model_dump()})
    return files
