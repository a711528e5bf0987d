"""`clinalign generate` with textual-inversion tokens: the class token goes into the prompt the model sees."""

from __future__ import annotations

import json

import pytest
from PIL import Image
from test_train_support import tiny_sd_path, toy_rows

TOKENS = {"cardiomegaly": "<cardiomegaly>", "effusion": "<effusion>"}


def _run(argv: list[str], capsys) -> tuple[int, str, str]:
    from clinalign.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(argv)
        raise SystemExit(0)
    captured = capsys.readouterr()
    return int(exit_info.value.code or 0), captured.out, captured.err


@pytest.fixture(scope="module")
def ti_dir(tmp_path_factory):
    from clinalign import TextualInversionTrainer, TIConfig

    tmp = tmp_path_factory.mktemp("ti")
    config = TIConfig(
        model=str(tiny_sd_path()),
        resolution=16,
        num_inference_steps=3,
        batch_size=2,
        max_steps=2,
        output_dir=str(tmp / "run"),
        log_with="none",
        checkpoint_every=0,
        progress_bar=False,
        placeholder_tokens=TOKENS,
        initializer_token="a",
        learning_rate=5e-2,
        ti_prompt_template="an image of {token}, {prompt}",
    )
    return TextualInversionTrainer(config=config, train_data=toy_rows(4)).train().artifact_dir


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _generate(tmp_path, capsys, out, prompts, *extra):
    argv = ["generate", "--model", str(tiny_sd_path()), "--prompts", str(prompts), "--out", str(tmp_path / out),
            "--resolution", "16", "--steps", "2", "--no-progress", *extra]  # fmt: skip
    return _run(argv, capsys)


def _manifest(folder):
    return [json.loads(line) for line in (folder / "manifest.jsonl").read_text().splitlines()]


def test_generate_writes_the_class_token_into_the_model_prompt(tmp_path, capsys, ti_dir):
    rows = [{"prompt": r["prompt"], "label": r["label"], "id": r["id"]} for r in toy_rows(2)]
    prompts = _write(tmp_path / "p.jsonl", rows)
    code, _, err = _generate(tmp_path, capsys, "auto", prompts, "--textual-inversion", str(ti_dir))
    assert code == 0, err
    manifest = _manifest(tmp_path / "auto")
    # the manifest keeps the enriched prompt (what scoring reads) and records what the model saw
    assert [m["prompt"] for m in manifest] == [r["prompt"] for r in rows]
    assert [m["model_prompt"] for m in manifest] == [f"an image of {TOKENS[r['label']]}, {r['prompt']}" for r in rows]
    # the same images as writing the tokens into the prompts by hand and generating them as they are
    by_hand = _write(
        tmp_path / "hand.jsonl", [{**r, "prompt": m["model_prompt"]} for r, m in zip(rows, manifest, strict=True)]
    )
    code, _, err = _generate(tmp_path, capsys, "hand", by_hand, "--textual-inversion", str(ti_dir), "--raw-prompts")
    assert code == 0, err
    for a, b in zip(manifest, _manifest(tmp_path / "hand"), strict=True):
        assert "model_prompt" not in b
        assert (
            Image.open(tmp_path / "auto" / a["file"]).tobytes() == Image.open(tmp_path / "hand" / b["file"]).tobytes()
        )
    # and not the images of the plain prompts: the tokens changed the conditioning
    code, _, err = _generate(tmp_path, capsys, "plain", prompts, "--textual-inversion", str(ti_dir), "--raw-prompts")
    assert code == 0, err
    plain = [Image.open(tmp_path / "plain" / m["file"]).tobytes() for m in _manifest(tmp_path / "plain")]
    assert plain != [Image.open(tmp_path / "auto" / m["file"]).tobytes() for m in manifest]


def test_template_override_and_bad_rows(tmp_path, capsys, ti_dir):
    rows = [{"prompt": "x-ray", "label": "cardiomegaly"}]
    prompts = _write(tmp_path / "p.jsonl", rows)
    code, _, err = _generate(
        tmp_path, capsys, "o", prompts, "--textual-inversion", str(ti_dir), "--ti-prompt-template", "{prompt} {token}"
    )
    assert code == 0, err
    assert _manifest(tmp_path / "o")[0]["model_prompt"] == "x-ray <cardiomegaly>"
    code, _, err = _generate(
        tmp_path, capsys, "t", prompts, "--textual-inversion", str(ti_dir), "--ti-prompt-template", "{prompt}"
    )
    assert code == 2 and "has no '{token}'" in err
    # a row whose class has no token: exit 2 naming the row, before any image is written
    bad = _write(tmp_path / "bad.jsonl", [*rows, {"prompt": "x-ray", "label": "pneumonia"}])
    code, _, err = _generate(tmp_path, capsys, "bad", bad, "--textual-inversion", str(ti_dir))
    assert code == 2
    assert "prompt row 2 has label 'pneumonia'" in err and "--raw-prompts" in err
    assert not list((tmp_path / "bad").glob("images/*.png"))
