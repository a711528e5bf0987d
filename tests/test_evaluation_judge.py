"""`clinalign evaluate judge` against the loopback OpenAI-compatible server: audit, ranking, repair, resume."""

from __future__ import annotations

import csv
import json
import re

import pytest
from scoring_helpers import CHECKLISTS, write_checklists, write_generated_set, write_real_set

from clinalign.cli import main
from clinalign.enrich.testing import LoopbackServer, ScriptedResponse, chat_completion


def _text(body) -> str:
    # the request's own user turn (repair turns append the model's reply and a plain-text correction)
    parts = body["messages"][1]["content"]
    return " ".join(p.get("text", "") for p in parts if isinstance(p, dict)) if isinstance(parts, list) else parts


class Judge:
    """Audit: every attribute passes except 'Texture'; the very first reply leaves one out (a repair turn).
    Rank: the letters in the order offered."""

    def __init__(self) -> None:
        self.broke_once = False

    def __call__(self, body, number) -> ScriptedResponse:
        system = body["messages"][0]["content"]
        text = _text(body)
        if "audit" in system:
            attributes = re.findall(r"^- ([^:]+):", text, flags=re.MULTILINE)
            verdicts = [{"attribute": a, "passed": a != "Texture", "reason": "visible"} for a in attributes]
            if not self.broke_once:
                self.broke_once = True
                verdicts = verdicts[:-1]
            reply = {"verdicts": verdicts}
        else:
            letters = re.search(r"Images: ([A-Z, ]+) \(in that order\)", text).group(1).split(", ")
            reply = {"ranking": letters, "reason": "first is best"}
        return ScriptedResponse(body=chat_completion(json.dumps(reply)))


def _run(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
        raise SystemExit(0)
    captured = capsys.readouterr()
    return int(exit_info.value.code or 0), captured.out, captured.err


def test_judge_audit_and_rank_with_repair_and_resume(tmp_path, capsys, monkeypatch):
    real = write_real_set(tmp_path, n_per_class=2)
    checklists = write_checklists(tmp_path / "checklists.json")
    sets = {name: write_generated_set(tmp_path / name, real, seed=s) for s, name in enumerate(("craft", "lora", "zs"))}
    monkeypatch.setenv("CLINALIGN_TEST_KEY", "sk-test-secret")
    out = tmp_path / "judge"
    with LoopbackServer(Judge()) as server:
        argv = ["evaluate", "judge", *[f"--method={m}={p}" for m, p in sets.items()], "--checklists", str(checklists)]
        argv += ["--model", "loopback", "--base-url", server.url, "--api-key-env", "CLINALIGN_TEST_KEY"]
        argv += ["--n-boot", "50", "--out", str(out), "--concurrency", "4"]
        code, stdout, err = _run(argv, capsys)
        assert code == 0, err
        n_images = 3 * 6
        n_cases = 6
        # one repair turn on top of one request per image and per case
        assert len(server.requests) == n_images + n_cases + 1
        assert "estimated cost" in stdout
        # resume: nothing left to ask
        code, _, err = _run(argv, capsys)
        assert code == 0, err
        assert len(server.requests) == n_images + n_cases + 1

    with open(out / "judge.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        assert float(row["pass_rate"]) == (0.0 if row["attribute"] == "Texture" else 1.0)
    summary = json.loads((out / "judge.json").read_text())
    # per method: Texture fails for red_lesion and white_patch (4 attributes each), target has 3 attributes
    n_attr = {label: len(text.split(";")) for label, text in CHECKLISTS.items()}
    expected = 1 - 2 / (2 * n_attr["red_lesion"] + 2 * n_attr["white_patch"] + 2 * n_attr["target"]) * 2
    for rate in summary["audit"]["pass_rate_per_method"].values():
        assert rate == pytest.approx(expected)
    # the ranking takes the offered order: top-1 is whichever method got letter A in each case
    records = [json.loads(line) for line in (out / "judge_rank.jsonl").read_text().splitlines()]
    firsts = [r["letters"]["A"] for r in records]
    for result in summary["rank"]["results"]:
        assert result["top1_rate"] == pytest.approx(firsts.count(result["method"]) / n_cases)
    assert "sk-test-secret" not in (out / "judge.json").read_text()
    assert server.url not in (out / "judge.json").read_text()


def test_judge_audit_needs_checklists(tmp_path, capsys):
    real = write_real_set(tmp_path, n_per_class=1)
    gen = write_generated_set(tmp_path / "craft", real)
    code, _, err = _run(
        ["evaluate", "judge", "--method", f"craft={gen}", "--task", "audit", "--model", "m", "--out", str(tmp_path)],
        capsys,
    )
    assert code == 2 and "--checklists" in err
