"""`clinalign pairs --judge mllm:<model>` against the loopback OpenAI-compatible server: the MLLM ranks each
prompt's blinded samples through the `evaluate judge` client; pairs are best vs worst of its ranking."""

from __future__ import annotations

import base64
import io
import json
import re
import threading

import pytest
from PIL import Image
from test_train_support import tiny_sd_path, toy_rows

from clinalign.cli import main
from clinalign.enrich.testing import LoopbackServer, ScriptedResponse, chat_completion


def _brightness(image: Image.Image) -> float:
    from clinalign.data.images import pil_to_tensor

    return float(pil_to_tensor(image.convert("RGB")).mean())


class BrightnessJudge:
    """Ranks the offered images brightest first (decoding the data URLs it is sent). The very first reply
    leaves a letter out, which the client must repair with another turn."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.broke_once = False
        self.prompts: list[str] = []

    def __call__(self, body, number) -> ScriptedResponse:
        parts = body["messages"][1]["content"]
        text = " ".join(p.get("text", "") for p in parts if p.get("type") == "text")
        letters = re.search(r"Images: ([A-Z, ]+) \(in that order\)", text).group(1).split(", ")
        urls = [p["image_url"]["url"] for p in parts if p.get("type") == "image_url"]
        values = [_brightness(Image.open(io.BytesIO(base64.b64decode(u.split(",", 1)[1])))) for u in urls]
        ranking = [letter for _, letter in sorted(zip(values, letters, strict=True), reverse=True)]
        with self.lock:
            self.prompts.append(re.search(r'Description: "([^"]*)"', text).group(1))
            if not self.broke_once:
                self.broke_once = True
                ranking = ranking[:-1]
        return ScriptedResponse(body=chat_completion(json.dumps({"ranking": ranking, "reason": "brighter"})))


def _run(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
        raise SystemExit(0)  # main returns normally on success
    captured = capsys.readouterr()
    return int(exit_info.value.code or 0), captured.out, captured.err


def test_pairs_with_an_mllm_judge_rank_repair_and_resume(tmp_path, capsys, monkeypatch):
    from clinalign.data import load_image
    from clinalign.training.dpo import load_pairs

    prompts = tmp_path / "prompts.jsonl"
    rows = toy_rows(3)
    prompts.write_text("".join(json.dumps({"prompt": r["prompt"], "label": r["label"]}) + "\n" for r in rows))
    monkeypatch.setenv("CLINALIGN_TEST_KEY", "sk-test-secret")
    out = tmp_path / "pairs"
    judge = BrightnessJudge()
    with LoopbackServer(judge) as server:
        argv = ["pairs", "--model", str(tiny_sd_path()), "--prompts", str(prompts), "--judge", "mllm:loopback",
                "--base-url", server.url, "--api-key-env", "CLINALIGN_TEST_KEY", "--n-per-prompt", "4",
                "--resolution", "16", "--steps", "2", "--device", "cpu", "--no-progress", "--out", str(out),
                "--concurrency", "2", "--price-input", "1", "--price-output", "2"]  # fmt: skip
        code, stdout, err = _run(argv, capsys)
        assert code == 0, err
        # one request per prompt, plus one repair turn for the reply that left a letter out
        assert len(server.requests) == 3 + 1
        # 4 calls of 100 prompt + 50 completion tokens (the loopback's usage) at $1 / $2 per 1M tokens
        assert "400 prompt + 200 completion tokens; estimated cost: $0.0008" in stdout, stdout
        first = (out / "pairs.jsonl").read_text()
        code, _, err = _run(argv, capsys)  # resume: everything is judged already
        assert code == 0, err
        assert len(server.requests) == 3 + 1
        assert (out / "pairs.jsonl").read_text() == first

    assert sorted(set(judge.prompts)) == sorted(r["prompt"] for r in rows)
    pairs = [json.loads(line) for line in first.splitlines()]
    assert len(pairs) == 3
    for pair in pairs:
        assert pair["judge"] == "mllm:loopback" and len(pair["ranking"]) == 4
        # the judge ranked brightest first: chosen is the brightest of the prompt's samples, rejected the darkest
        values = {f: _brightness(load_image(out / f)) for f in pair["ranking"]}
        assert pair["chosen"] == pair["ranking"][0] == max(values, key=values.get)
        assert pair["rejected"] == pair["ranking"][-1] == min(values, key=values.get)
        assert len(set(values.values())) == 4  # the seeds really gave four different samples
    assert [p.prompt for p in load_pairs(out / "pairs.jsonl")] == [p["prompt"] for p in pairs]
    for path in out.rglob("*"):  # the key reaches no output file
        if path.is_file() and path.suffix in (".json", ".jsonl", ".yaml", ".txt"):
            assert "sk-test-secret" not in path.read_text()


def test_pairs_mllm_judge_needs_a_key_or_endpoint(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("CLINALIGN_MISSING_KEY", raising=False)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a chest x-ray\n")
    argv = ["pairs", "--model", str(tiny_sd_path()), "--prompts", str(prompts), "--judge", "mllm:gpt-4o-mini",
            "--api-key-env", "CLINALIGN_MISSING_KEY", "--resolution", "16", "--steps", "1", "--device", "cpu",
            "--no-progress", "--out", str(tmp_path / "out")]  # fmt: skip
    code, _, err = _run(argv, capsys)
    assert code == 2 and "CLINALIGN_MISSING_KEY" in err
    assert not (tmp_path / "out" / "samples").exists()  # refused before generating anything
    code, _, err = _run([*argv[:6], "mllm", *argv[7:]], capsys)
    assert code == 2 and "mllm:<model>" in err
    code, _, err = _run([*argv[:6], "reward:vdc", *argv[7:]], capsys)
    assert code == 2 and "--critic" in err
