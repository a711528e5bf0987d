"""Preference pairs for Diffusion-DPO: generate N seed-varied samples per prompt, rank them with a judge.

>>> make_preference_pairs(model, prompts, "runs/pairs", judge=build_rewards(["ccs"], critic=...)[0], n_per_prompt=4)
>>> make_preference_pairs(model, prompts, "runs/pairs", judge=MLLMJudge(EnrichConfig(model="gpt-4o-mini")))

Samples go to ``OUT/samples`` (``clinalign generate``'s layout, resumable); each prompt's best and worst
sample under the judge become one pair in ``OUT/pairs.jsonl`` (``prompt``, ``chosen``, ``rejected``
relative to the file, ``label``, ``id``, the judge's name and its scores or ranking), the format
:class:`~clinalign.training.dpo.DiffusionDPOTrainer` reads.

Two kinds of judge:

- a reward (``name`` + ``__call__(images, batch) -> [B]``, higher = preferred): best vs worst score;
  prompts whose samples tie are skipped;
- :class:`MLLMJudge`: a multimodal LLM ranks each prompt's samples, shown blinded as A, B, ... in a
  seeded random order, through the client ``clinalign evaluate judge`` uses (same endpoint settings,
  strict JSON schema for a strict ranking, repair turns, retries, cost estimate); best vs worst of
  that ranking. Each answer is appended to ``OUT/judge_rank.jsonl``, so a rerun asks only for the
  prompts not yet judged.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from clinalign.errors import ConfigError, DataError

PAIRS_NAME = "pairs.jsonl"
#: the MLLM judge's answers, one JSON line per judged prompt (resume log)
JUDGE_LOG = "judge_rank.jsonl"


@dataclass
class MLLMJudge:
    """Rank each prompt's samples with a multimodal LLM (the ``evaluate judge`` ranking client).

    Attributes:
        endpoint: model, endpoint and reliability settings (an :class:`~clinalign.enrich.EnrichConfig`).
        api_key: the key; default read from the environment variable ``endpoint.api_key_env``. Never written.
        seed: seed of the blinded order the samples are shown in (per prompt: mixed with its index).
        usage: tokens spent by the last :meth:`rank` call (for the cost estimate).
        failures: prompts whose request failed in the last call (``key: reason``); a rerun retries them.
    """

    endpoint: Any
    api_key: str | None = field(default=None, repr=False)
    seed: int = 0
    usage: Any = None
    failures: list[str] = field(default_factory=list)

    name = "mllm"

    @property
    def label(self) -> str:
        return f"mllm:{self.endpoint.model}"

    def cost(self) -> str:
        """The cost line of the last :meth:`rank` call (tokens, and USD when prices are set)."""
        from clinalign.enrich.pricing import Usage, cost_line

        endpoint = self.endpoint
        return cost_line(
            self.usage or Usage(), endpoint.model, endpoint.price_input_per_mtok, endpoint.price_output_per_mtok
        )

    def rank(self, cases: dict[str, tuple[str, list[Path]]], log: Path) -> dict[str, list[int]]:
        """``{key: (prompt, sample paths)}`` -> ``{key: sample positions, best first}`` for every judged key.

        Keys already in ``log`` are not asked again; failed requests are left out (see ``failures``).
        """
        import asyncio

        from clinalign.enrich.client import ChatClient, resolve_api_key
        from clinalign.enrich.pricing import Usage
        from clinalign.evaluation.inputs import MethodImages
        from clinalign.evaluation.judge import JudgeConfig, judged_keys, rank_jobs, run_jobs
        from clinalign.utils.io import read_jsonl
        from clinalign.utils.seeding import mix_seeds

        self.usage, self.failures = Usage(), []
        done = judged_keys(log) if log.is_file() else set()
        jobs = []
        for number, (key, (prompt, paths)) in enumerate(cases.items()):
            if key in done:
                continue
            # each sample is one "method" of a single-case ranking, so the evaluate-judge job builder
            # (instructions, blinded letters, image parts, schema, validator) is reused as it is
            candidates = {
                f"sample_{i}": MethodImages(name=f"sample_{i}", sets=[], paths=[path], labels=[""], prompts=[prompt],
                                            ref_ids=[key], ids=[key], sources=[str(path)])
                for i, path in enumerate(paths)
            }  # fmt: skip
            config = JudgeConfig(
                methods={name: [str(group.paths[0])] for name, group in candidates.items()},
                task="rank",
                seed=mix_seeds(self.seed, number),
                endpoint=self.endpoint,
                out=str(log.parent),
            )
            (job,) = rank_jobs(candidates, config, set())
            job["record"] = {**job["record"], "key": key, "case": key}
            jobs.append(job)
        if jobs:
            api_key = self.api_key if self.api_key is not None else resolve_api_key(self.endpoint)

            async def run() -> None:
                client = ChatClient(self.endpoint, api_key)
                try:
                    self.failures = await run_jobs(jobs, client, self.endpoint, log, self.usage)
                finally:
                    await client.aclose()

            asyncio.run(run())
        rankings: dict[str, list[int]] = {}
        for record in read_jsonl(log) if log.is_file() else []:
            if record["key"] in cases:
                letters = record["letters"]
                rankings[record["key"]] = [
                    int(letters[letter].removeprefix("sample_")) for letter in record["reply"]["ranking"]
                ]
        return rankings


def _score_images(judge: Any, files: list[Path], rows: list[dict[str, Any]], class_names: list[str] | None):
    from clinalign.data import load_image
    from clinalign.data.images import pil_to_tensor
    from clinalign.rewards import RewardBatch

    images = torch.stack([pil_to_tensor(load_image(f).convert("RGB")) for f in files])
    labels = []
    for row in rows:
        label = row.get("label")
        if class_names is not None and label is not None and str(label) in class_names:
            labels.append(class_names.index(str(label)))
        else:
            labels.append(0)
    batch = RewardBatch(
        prompts=[str(r["prompt"]) for r in rows],
        checklists=[str(r.get("checklist") or "") for r in rows],
        labels=torch.tensor(labels, dtype=torch.long),
    )
    with torch.no_grad():
        values = judge(images, batch)
    # a CompositeReward returns its weighted total with the components
    return [float(v) for v in getattr(values, "total", values)]


def make_preference_pairs(
    model: Any,
    prompts: Sequence[Any],
    out_dir: str | os.PathLike[str],
    *,
    judge: Any,
    n_per_prompt: int = 4,
    seed: int = 0,
    resolution: int = 512,
    num_inference_steps: int = 50,
    guidance_scale: float = 7.5,
    eta: float = 0.0,
    batch_size: int = 8,
    class_names: list[str] | None = None,
    progress_bar: bool = True,
) -> Path:
    """Generate, judge and pair; returns the pairs JSONL path.

    Args:
        model: the :class:`~clinalign.diffusion.DiffusionModel` to sample from.
        prompts: :class:`~clinalign.diffusion.PromptRow` rows (``checklist`` needed by a CCS judge).
        out_dir: output folder.
        judge: a reward object (``name`` + ``__call__(images, batch) -> [B]``, higher = preferred), a
            :class:`~clinalign.rewards.CompositeReward` (its total decides), or an :class:`MLLMJudge` (its
            ``usage``/``failures``/``cost()`` describe the requests afterwards).
        n_per_prompt: samples per prompt (at least 2).
        class_names: the class list labels index into (needed by a DD judge).
    """
    from clinalign.diffusion import generate_to_dir
    from clinalign.utils.io import atomic_write_text, read_jsonl

    if n_per_prompt < 2:
        raise ConfigError(f"n_per_prompt must be at least 2 to form a pair, got {n_per_prompt}.")
    if isinstance(judge, MLLMJudge) and n_per_prompt > 26:
        raise ConfigError(
            f"the MLLM judge labels samples A..Z, so n_per_prompt must be at most 26, got {n_per_prompt}."
        )
    if getattr(judge, "name", None) == "sfs":
        raise ConfigError("the 'sfs' reward needs a real reference image per sample; judge with vdc, ccs or dd.")
    if getattr(judge, "name", None) == "ccs":
        missing = [i for i, p in enumerate(prompts, start=1) if not getattr(p, "checklist", None)]
        if missing:
            raise DataError(
                f"prompt rows {missing[:5]} have no checklist, which the 'ccs' judge needs: give the prompts "
                "file a 'checklist' (or 't_c') field, or pass --checklists."
            )
    if isinstance(judge, MLLMJudge) and judge.api_key is None:
        from clinalign.enrich.client import resolve_api_key

        judge.api_key = resolve_api_key(judge.endpoint)  # fail before generating, not after
    out = Path(out_dir)
    samples = out / "samples"
    manifest = generate_to_dir(
        model, prompts, samples, n_per_prompt=n_per_prompt, seed=seed, resolution=resolution,
        num_inference_steps=num_inference_steps, guidance_scale=guidance_scale, eta=eta, batch_size=batch_size,
        progress_bar=progress_bar,
    )  # fmt: skip
    by_prompt: dict[int, list[dict[str, Any]]] = {}
    for row in read_jsonl(manifest):
        by_prompt.setdefault(int(row["prompt_index"]), []).append(row)
    import json

    groups = {index: sorted(rows, key=lambda r: int(r["sample_index"])) for index, rows in sorted(by_prompt.items())}
    lines = []
    if isinstance(judge, MLLMJudge):
        cases = {
            f"prompt{index:06d}": (str(rows[0]["prompt"]), [samples / r["file"] for r in rows])
            for index, rows in groups.items()
        }
        rankings = judge.rank(cases, out / JUDGE_LOG)
        for index, rows in groups.items():
            order = rankings.get(f"prompt{index:06d}")
            if order is None:
                continue  # the request failed; a rerun asks again
            best, worst = rows[order[0]], rows[order[-1]]
            record = {
                "id": f"prompt{index:06d}",
                "prompt": best["prompt"],
                "label": best.get("label"),
                "chosen": f"samples/{best['file']}",
                "rejected": f"samples/{worst['file']}",
                "ranking": [f"samples/{rows[i]['file']}" for i in order],
                "judge": judge.label,
            }
            lines.append(json.dumps(record, sort_keys=True))
    else:
        for index, rows in groups.items():
            scores = _score_images(judge, [samples / r["file"] for r in rows], rows, class_names)
            best = max(range(len(rows)), key=lambda i: scores[i])
            worst = min(range(len(rows)), key=lambda i: scores[i])
            if scores[best] == scores[worst]:
                continue
            lines.append(
                json.dumps(
                    {
                        "id": f"prompt{index:06d}",
                        "prompt": rows[best]["prompt"],
                        "label": rows[best].get("label"),
                        "chosen": f"samples/{rows[best]['file']}",
                        "rejected": f"samples/{rows[worst]['file']}",
                        "chosen_score": scores[best],
                        "rejected_score": scores[worst],
                        "judge": f"reward:{getattr(judge, 'name', type(judge).__name__)}",
                    },
                    sort_keys=True,
                )
            )
    path = out / PAIRS_NAME
    atomic_write_text(path, "".join(line + "\n" for line in lines))
    return path
