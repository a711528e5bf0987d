"""`clinalign score-cas` end to end on tiny images and a tiny evaluator; reader errors; leakage; tables."""

from __future__ import annotations

import csv
import json
import warnings

import numpy as np
import pytest
from scoring_helpers import (
    CHECKLISTS,
    train_probe_dir,
    write_checklists,
    write_generated_set,
    write_real_set,
)

from clinalign.cli import main
from clinalign.errors import DataError
from clinalign.scoring.report import ScoreCASConfig, evaluate_cas
from clinalign.scoring.sets import EvaluationLeakageWarning, read_checklists, read_generated_set, read_real_set
from clinalign.scoring.tables import MeanStd, Table, comparison_table


def _run(argv: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
        raise SystemExit(0)
    captured = capsys.readouterr()
    return int(exit_info.value.code or 0), captured.out, captured.err


@pytest.fixture(scope="module")
def world(tmp_path_factory, clip_critic):
    root = tmp_path_factory.mktemp("cas")
    real = write_real_set(root)
    checklists = write_checklists(root / "checklists.json")
    probe_dir = root / "probe"
    train_probe_dir(clip_critic, root, probe_dir)
    good = [write_generated_set(root / f"craft_s{s}", real, seed=s) for s in (0, 1)]
    bad = write_generated_set(root / "baseline_s0", real, seed=0, wrong_fraction=0.5, noise=70)
    return {"root": root, "real": real, "checklists": checklists, "probe": probe_dir, "good": good, "bad": bad}


def _base_argv(world, clip_critic_dir, out) -> list[str]:
    return [
        "score-cas",
        "--real",
        str(world["real"]),
        "--evaluator",
        str(clip_critic_dir),
        "--probe",
        str(world["probe"]),
        "--checklists",
        str(world["checklists"]),
        "--out",
        str(out),
        "--n-boot",
        "200",
        "--no-progress",
    ]


def test_score_cas_cli_end_to_end(world, tiny_clip_dir, tmp_path, capsys):
    out = tmp_path / "cas"
    argv = _base_argv(world, tiny_clip_dir, out)
    argv += ["--method", f"craft={world['good'][0]}", "--method", f"craft={world['good'][1]}"]
    argv += ["--method", f"baseline={world['bad']}"]
    code, stdout, err = _run(argv, capsys)
    assert code == 0, err
    for name in ("per_image.csv", "real_per_image.csv", "summary.json", "tables.md", "tables.tex", "ecdf.png"):
        assert (out / name).is_file(), name
    assert (out / "primitives.png").is_file() and (out / "lowest_cas.png").is_file()
    assert "real (reference)" in stdout and "craft" in stdout and "baseline" in stdout and "τ =" in stdout

    summary = json.loads((out / "summary.json").read_text())
    assert summary["cas_primitives"] == ["vdc", "ccs", "dd", "sfs"] and summary["sfs_available"] is True
    assert summary["methods"]["craft"]["n_runs"] == 2 and summary["methods"]["craft"]["n_images"] == 36
    assert [r["seed"] for r in summary["methods"]["craft"]["runs"]] == [0, 1]
    assert summary["leakage"] == []

    rows = list(csv.DictReader((out / "per_image.csv").read_text().splitlines()))
    assert {r["cas_primitives"] for r in rows} == {"vdc+ccs+dd+sfs"}
    assert len(rows) == 54 and {r["method"] for r in rows} == {"craft", "baseline"}
    # everything in the summary is recomputable from per_image.csv and real_per_image.csv
    real_rows = list(csv.DictReader((out / "real_per_image.csv").read_text().splitlines()))
    real_cas = np.array([float(r["cas"]) for r in real_rows])
    np.testing.assert_allclose([float(r["sfs"]) for r in real_rows], 1.0, atol=1e-5)
    tau = np.quantile(real_cas, 0.25)
    assert summary["tau"] == pytest.approx(tau, abs=1e-9)
    for method in ("craft", "baseline"):
        cas = np.array([float(r["cas"]) for r in rows if r["method"] == method])
        tail = summary["methods"][method]["tail"]
        assert tail["frac_below"] == pytest.approx(np.mean(cas < tau), abs=1e-12)
        assert tail["p10"] == pytest.approx(np.quantile(cas, 0.1), abs=1e-9)
        assert tail["mean"] == pytest.approx(cas.mean(), abs=1e-9)
        assert tail["n"] == cas.size
        # per seed: each run's own tail, and their average (Table 14's n = one test set)
        runs = summary["methods"][method]["runs"]
        per_run = []
        for run in runs:
            run_cas = np.array([float(r["cas"]) for r in rows if r["method"] == method and r["run"] == run["run"]])
            assert run["tail"]["frac_below"] == pytest.approx(np.mean(run_cas < tau), abs=1e-12)
            assert run["tail"]["n"] == run_cas.size
            per_run.append(np.mean(run_cas < tau))
        per_seed = summary["methods"][method]["tail_per_seed"]
        assert per_seed["n_runs"] == len(runs) and per_seed["frac_below"] == pytest.approx(np.mean(per_run))
        assert per_seed["frac_below_std"] == pytest.approx(np.std(per_run, ddof=1) if len(per_run) > 1 else 0.0)
        # per-row primitives average to CAS
        prims = np.array([[float(r[k]) for k in ("vdc", "ccs", "dd", "sfs")] for r in rows if r["method"] == method])
        np.testing.assert_allclose(prims.mean(axis=1), cas, atol=1e-9)
    # the corrupted baseline has more low-tail images and a lower DD than the clean sets
    assert summary["methods"]["baseline"]["tail"]["frac_below"] > summary["methods"]["craft"]["tail"]["frac_below"]
    # seeds: the methods table shows mean ± std over the two craft runs
    craft_row = next(r for r in summary["tables"]["methods"]["rows"] if r["method"] == "craft")
    run_cas = [r["means"]["cas"] for r in summary["methods"]["craft"]["runs"]]
    assert craft_row["cas"] == pytest.approx(np.mean(run_cas)) and craft_row["cas_std"] == pytest.approx(
        np.std(run_cas, ddof=1)
    )
    markdown = (out / "tables.md").read_text()
    assert "### CAS by method" in markdown and "### Low tail of CAS" in markdown and "±" in markdown
    assert "### CAS by method and class" in markdown and "red_lesion" in markdown
    assert r"\begin{tabular}" in (out / "tables.tex").read_text()
    assert (out / "table_tail.csv").read_text().startswith("method,tau,n,mean,mean_lo,mean_hi")
    config = json.loads((out / "score_config.json").read_text())
    assert config["methods"]["craft"] == [str(p) for p in world["good"]]


def test_score_cas_without_references_says_so(world, tiny_clip_dir, tmp_path, capsys):
    gen = write_generated_set(tmp_path / "noref", world["real"], seed=3, with_ref=False)
    out = tmp_path / "cas"
    code, stdout, err = _run([*_base_argv(world, tiny_clip_dir, out), "--generated", str(gen)], capsys)
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["cas_primitives"] == ["vdc", "ccs", "dd"] and summary["sfs_available"] is False
    assert any("SFS is absent" in n for n in summary["notes"])
    assert "SFS is absent" in stdout and "SFS is absent" in (out / "tables.md").read_text()
    assert "mean of 3 primitives" in summary["cas_definition"]
    for name in ("per_image.csv", "real_per_image.csv"):
        rows = list(csv.DictReader((out / name).read_text().splitlines()))
        assert all(r["sfs"] == "" and r["cas_primitives"] == "vdc+ccs+dd" for r in rows)


def test_leakage_warning_fires_and_is_recorded(world, tiny_clip_dir, clip_critic, tmp_path, capsys):
    lora = tmp_path / "lora"
    gen = write_generated_set(
        tmp_path / "leaky", world["real"], seed=0, training_critics=[clip_critic.name], lora_dir=lora
    )
    out = tmp_path / "cas"
    code, _, err = _run([*_base_argv(world, tiny_clip_dir, out), "--method", f"leaky={gen}"], capsys)
    assert code == 0, err
    assert "EVALUATION LEAKAGE" in err and clip_critic.name in err
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["leakage"]) == 1 and "leaky" in summary["leakage"][0]
    assert summary["methods"]["leaky"]["runs"][0]["training_meta"] == str(lora / "clinalign_meta.json")
    assert "WARNING" in (out / "tables.md").read_text()
    # the library warns with a dedicated category; a different training critic (by name or fingerprint) does not
    other = write_generated_set(
        tmp_path / "clean",
        world["real"],
        training_critics=[{"name": "transformers:google/medsiglip-448", "fingerprint": "0" * 16}],
    )
    config = ScoreCASConfig(
        methods={"leaky": [str(gen)], "clean": [str(other)]},
        real=str(world["real"]),
        checklists=str(world["checklists"]),
        evaluator=str(tiny_clip_dir),
        probe=str(world["probe"]),
        n_boot=50,
        n_lowest=0,
        out=str(tmp_path / "lib"),
    )
    with pytest.warns(EvaluationLeakageWarning, match="leaky") as record:
        report = evaluate_cas(config, progress=False)
    assert len([w for w in record if issubclass(w.category, EvaluationLeakageWarning)]) == 1
    assert [r.leakage is not None for r in report.runs["clean"]] == [False]
    # a copy of the evaluator recorded under another name is caught by its fingerprint
    copy = write_generated_set(
        tmp_path / "copy", world["real"], training_critics=[{"name": "x", "fingerprint": clip_critic.fingerprint}]
    )
    config = config.model_copy(update={"methods": {"copy": [str(copy)]}, "out": str(tmp_path / "lib2")})
    with pytest.warns(EvaluationLeakageWarning):
        evaluate_cas(config, progress=False)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda rows: rows.__setitem__(3, {**rows[3], "file": "images/missing.png"}), "line 4: image 'images/missing"),
        (lambda rows: rows.__setitem__(2, {**rows[2], "label": "melanoma"}), "line 3: label 'melanoma' is not one of"),
        (lambda rows: rows.__setitem__(1, {**rows[1], "prompt": ""}), "line 2: missing 'prompt'"),
        (lambda rows: rows.__setitem__(4, {**rows[4], "ref_id": "nope"}), "line 5: ref_id 'nope' is not an id"),
        (lambda rows: rows.clear(), "the manifest has no rows"),
    ],
)
def test_bad_generated_manifest_exits_2_naming_file_and_row(world, tiny_clip_dir, tmp_path, capsys, mutate, message):
    gen = write_generated_set(tmp_path / "gen", world["real"])
    manifest = gen / "manifest.jsonl"
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    mutate(rows)
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "cas"
    code, _, err = _run([*_base_argv(world, tiny_clip_dir, out), "--generated", str(gen)], capsys)
    assert code == 2
    assert str(manifest) in err and message in err and "Traceback" not in err
    assert not (out / "summary.json").exists()


def test_cli_flag_errors_exit_2(world, tiny_clip_dir, tmp_path, capsys):
    base = _base_argv(world, tiny_clip_dir, tmp_path / "o")
    code, _, err = _run(base, capsys)
    assert code == 2 and "nothing to score" in err
    gen = str(world["good"][0])
    code, _, err = _run([*base, "--method", "craft"], capsys)
    assert code == 2 and "--method expects NAME=DIR" in err
    code, _, err = _run([*base, "--generated", gen, "--dd-mode", "logprob"], capsys)
    assert code == 2 and "--dd-mode" in err
    code, _, err = _run([*base, "--generated", gen, "--tau-quantile", "1.5"], capsys)
    assert code == 2 and "--tau-quantile" in err
    code, _, err = _run([*base, "--generated", str(tmp_path / "nowhere")], capsys)
    assert code == 2 and "generated set not found" in err
    # a probe from another critic's space is refused, naming both critics
    from clinalign.probe import LinearProbe

    foreign = tmp_path / "foreign_probe"
    LinearProbe(16, sorted(CHECKLISTS), critic_name="transformers:google/medsiglip-448").save(foreign)
    argv = [*base, "--generated", gen]
    argv[argv.index("--probe") + 1] = str(foreign)
    code, _, err = _run(argv, capsys)
    assert code == 2 and "medsiglip-448" in err and "Traceback" not in err
    # an evaluator directory that does not exist
    argv[argv.index("--evaluator") + 1] = str(tmp_path / "no_model")
    code, _, err = _run(argv, capsys)
    assert code == 2 and "critic directory not found" in err


def test_real_set_paths_relative_to_working_dir(world, tmp_path, monkeypatch):
    """Enriched JSONL rows keep the adapter's path, often relative to where `clinalign enrich` ran."""
    write_real_set(tmp_path)
    rows = [json.loads(line) for line in (tmp_path / "real_enriched.jsonl").read_text().splitlines()]
    (tmp_path / "enrich_out").mkdir()
    manifest = tmp_path / "enrich_out" / "enriched.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))  # images are at tmp_path/real/...
    monkeypatch.chdir(tmp_path)
    real = read_real_set(manifest, checklists=CHECKLISTS)
    assert real.paths[0] == (tmp_path / rows[0]["image"]).resolve()


def test_real_set_readers(world, tmp_path):
    real = read_real_set(world["real"], checklists=CHECKLISTS)
    assert len(real) == 18 and real.ref_ids == real.ids and real.checklists[0] == CHECKLISTS["red_lesion"]
    csv_manifest = write_real_set(tmp_path, fmt="csv")
    assert read_real_set(csv_manifest, checklists=CHECKLISTS).prompts == real.prompts
    with pytest.raises(DataError, match=r"real.csv, line 2: no checklist for label 'red_lesion'.*--checklists"):
        read_real_set(csv_manifest)
    with pytest.raises(DataError, match="has no entry in the checklists file"):
        read_real_set(csv_manifest, checklists={"target": "x"})
    with pytest.raises(DataError, match="no rows with split 'train'"):
        read_real_set(csv_manifest, checklists=CHECKLISTS, split="train")
    mixed = tmp_path / "mixed.jsonl"
    rows = [json.loads(line) for line in world["real"].read_text().splitlines()]
    rows[0]["split"] = "train"
    mixed.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.warns(UserWarning, match=r"mixes splits \['test', 'train'\].*--real-split test"):
        read_real_set(mixed, checklists=CHECKLISTS, image_root=world["root"])
    assert len(read_real_set(mixed, checklists=CHECKLISTS, image_root=world["root"], split="test")) == 17
    no_prompt = tmp_path / "plain.csv"
    no_prompt.write_text("image,label,id\nreal/target_0.png,target,a\n")
    with pytest.raises(DataError, match=r"plain.csv, line 2: missing 'prompt' \(or 't_ep'\)"):
        read_real_set(no_prompt, checklists=CHECKLISTS)
    missing = tmp_path / "missing.jsonl"
    missing.write_text(json.dumps({"id": "a", "image": "real/nope.png", "label": "target", "t_ep": "x"}) + "\n")
    with pytest.raises(DataError, match=r"missing\.jsonl, line 1: image 'real/nope\.png' not found"):
        read_real_set(missing, checklists=CHECKLISTS)
    dup = tmp_path / "dup.jsonl"
    row = {"id": "a", "image": "real/target_0.png", "label": "target", "t_ep": "x"}
    dup.write_text(json.dumps(row) + "\n" + json.dumps(row) + "\n")
    with pytest.raises(DataError, match=r"dup\.jsonl, line 2: duplicate id 'a' \(first at line 1\)"):
        read_real_set(dup, checklists=CHECKLISTS)
    with pytest.raises(DataError, match=r"line 1: label 'target' is not one of the probe's classes"):
        read_real_set(dup, checklists=CHECKLISTS, known_labels=["a", "b"])
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(DataError, match=r"empty\.jsonl: the real manifest has no rows"):
        read_real_set(empty, checklists=CHECKLISTS)


def test_generated_reader_details(world, tmp_path):
    gen = write_generated_set(tmp_path / "g", world["real"], seed=5)
    rows = [json.loads(line) for line in (gen / "manifest.jsonl").read_text().splitlines()]
    rows[0]["checklist"] = "custom checklist text"
    del rows[1]["ref_id"]
    (gen / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        image_set = read_generated_set(gen / "manifest.jsonl", checklists=CHECKLISTS)
    assert any("1 of 18 rows have no 'ref_id' (first at line 2)" in str(w.message) for w in caught)
    assert image_set.ref_ids is None and image_set.seed == 5 and image_set.name == "g"
    assert image_set.checklists[0] == "custom checklist text" and image_set.checklists[1] == CHECKLISTS["red_lesion"]


def test_checklists_yaml_and_structured(tmp_path):
    assert read_checklists(write_checklists(tmp_path / "c.yaml", fmt="yaml")) == CHECKLISTS
    structured = tmp_path / "s.json"
    structured.write_text(json.dumps({"checklists": {"a": {"Color": "red", "Shape": "round"}, "b": ["x", "y"]}}))
    assert read_checklists(structured) == {"a": "Color: red; Shape: round", "b": "x; y"}
    # the checklists.json `clinalign checklists` writes: t_c wins over the attributes
    written = tmp_path / "checklists.json"
    entry = {"attributes": {"Color": "red"}, "t_c": "Color: red lesion.", "source": "builtin"}
    written.write_text(json.dumps({"checklists": {"a": entry}, "failures": {}, "missing": []}))
    assert read_checklists(written) == {"a": "Color: red lesion."}
    (tmp_path / "bad.txt").write_text("a")
    with pytest.raises(DataError, match="unsupported checklists file"):
        read_checklists(tmp_path / "bad.txt")
    (tmp_path / "e.json").write_text(json.dumps({"a": ""}))
    with pytest.raises(DataError, match="checklist for class 'a' is empty"):
        read_checklists(tmp_path / "e.json")


def test_table_renderers():
    table = Table("Demo_1 & co", ["Method", "CAS"], ["method", "cas"], rows=[["a_b", MeanStd(0.5, 0.01)], ["c", None]])
    assert "| a_b | 0.500 ± 0.010 |" in table.to_markdown()
    latex = table.to_latex()
    assert r"Demo\_1 \& co" in latex and r"a\_b & 0.500 $\pm$ 0.010 \\" in latex and r"c & -- \\" in latex
    assert table.to_csv().splitlines() == ["method,cas,cas_std", "a_b,0.5,0.01", "c,,"]
    assert comparison_table({}).rows == []


def test_rerun_reuses_cached_embeddings(world, clip_critic, tmp_path):
    from clinalign.probe import LinearProbe

    config = ScoreCASConfig(
        methods={"craft": [str(world["good"][0])]},
        real=str(world["real"]),
        checklists=str(world["checklists"]),
        evaluator=clip_critic.name,
        probe=str(world["probe"]),
        n_boot=50,
        n_lowest=0,
        out=str(tmp_path / "out"),
    )
    probe = LinearProbe.load(world["probe"])
    first = evaluate_cas(config, evaluator=clip_critic, probe=probe, progress=False)
    (store,) = (tmp_path / "out" / "cache").iterdir()  # one embedding store for the evaluator
    assert len((store / "keys.txt").read_text().splitlines()) == 18 + 18  # real and generated images
    calls = clip_critic.image_encoder_calls
    # a rerun with another DD mode recomputes the scores from cached embeddings: no image encoder call
    second = evaluate_cas(
        config.model_copy(update={"dd_mode": "probability"}), evaluator=clip_critic, probe=probe, progress=False
    )
    assert clip_critic.image_encoder_calls == calls
    np.testing.assert_allclose(second.method_scores("craft").vdc, first.method_scores("craft").vdc, atol=1e-7)
    assert not np.array_equal(second.method_scores("craft").dd, first.method_scores("craft").dd)
    # the store is keyed by content: a file rewritten with the same bytes is not encoded again, a
    # regenerated image (new bytes) is, alone (one encoder call for one image)
    victim = world["good"][0] / "images" / "000000_000.png"
    original = victim.read_bytes()
    victim.write_bytes(original)
    evaluate_cas(config, evaluator=clip_critic, probe=probe, progress=False)
    assert clip_critic.image_encoder_calls == calls
    from PIL import Image

    try:
        pixels = np.asarray(Image.open(victim).convert("RGB")).copy()
        pixels[0, 0] = 255 - pixels[0, 0]
        Image.fromarray(pixels).save(victim)
        evaluate_cas(config, evaluator=clip_critic, probe=probe, progress=False)
        assert clip_critic.image_encoder_calls == calls + 1
        assert len((store / "keys.txt").read_text().splitlines()) == 18 + 18 + 1
    finally:
        victim.write_bytes(original)  # the module's world is shared with other tests
    # --no-cache: nothing read or written
    evaluate_cas(
        config.model_copy(update={"cache": False, "out": str(tmp_path / "o2")}), evaluator=clip_critic, probe=probe
    )
    assert not (tmp_path / "o2" / "cache").exists()


@pytest.mark.slow
def test_example_script_runs(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    result = subprocess.run(
        [sys.executable, str(root / "examples" / "score_cas.py"), "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    assert "real (reference)" in result.stdout and (tmp_path / "out" / "tables.md").is_file()


def test_streamed_scoring_reads_at_most_one_chunk_ahead_and_equals_one_chunk(world, clip_critic, tmp_path, monkeypatch):
    from clinalign.probe import LinearProbe
    from clinalign.scoring import sets
    from clinalign.scoring.scorer import CASScorer

    probe = LinearProbe.load(world["probe"])

    def config(out, chunk_rows: int) -> ScoreCASConfig:
        return ScoreCASConfig(
            methods={"craft": [str(world["good"][0])]},
            real=str(world["real"]),
            checklists=str(world["checklists"]),
            evaluator=clip_critic.name,
            probe=str(world["probe"]),
            batch_size=4,
            chunk_rows=chunk_rows,
            n_boot=50,
            n_lowest=3,
            cache=False,
            out=str(tmp_path / out),
        )

    whole = evaluate_cas(config("whole", 10**6), evaluator=clip_critic, probe=probe, progress=False)

    # while the chunked run scores, the manifest reader may be at most one chunk (5 -> 8 rows) ahead
    scored = {"rows": 0}
    ahead: list[int] = []
    update = CASScorer.update_from_embeddings

    def counting_update(self, embeddings, *args, **kwargs):
        if "method" in (kwargs.get("extra") or {}):  # generated rows, not the real set
            scored["rows"] += int(embeddings.shape[0])
        return update(self, embeddings, *args, **kwargs)

    rows = sets.GeneratedSet._rows

    def watched_rows(self):
        for read, row in enumerate(rows(self), start=1):
            ahead.append(read - scored["rows"])
            yield row

    monkeypatch.setattr(CASScorer, "update_from_embeddings", counting_update)
    monkeypatch.setattr(sets.GeneratedSet, "_rows", watched_rows)
    chunked = evaluate_cas(config("chunked", 5), evaluator=clip_critic, probe=probe, progress=False)
    assert len(ahead) == 18 and max(ahead) == 8 and scored["rows"] == 18  # 18 rows read in chunks of 8
    for name in ("per_image.csv", "real_per_image.csv", "tables.md"):
        assert (tmp_path / "chunked" / name).read_text() == (tmp_path / "whole" / name).read_text(), name
    np.testing.assert_array_equal(chunked.runs["craft"][0].scores.cas, whole.runs["craft"][0].scores.cas)
    assert chunked.runs["craft"][0].image_set.paths == read_generated_set(world["good"][0], checklists=CHECKLISTS).paths


def test_streamed_reader_names_a_bad_row_before_scoring(world, tmp_path):
    from clinalign.scoring.sets import scan_generated_set

    source = world["good"][0] / "manifest.jsonl"
    lines = source.read_text().splitlines()
    bad = tmp_path / "gen"
    bad.mkdir()
    for entry in world["good"][0].iterdir():
        if entry.name != "manifest.jsonl":
            (bad / entry.name).symlink_to(entry)
    row = json.loads(lines[6])
    row["label"] = "no_such_class"
    lines[6] = json.dumps(row)
    (bad / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"line 7: label 'no_such_class'"):
        scan_generated_set(bad, known_labels=sorted(CHECKLISTS), checklists=CHECKLISTS)
    (bad / "manifest.jsonl").write_text("\n".join(lines[:3]) + "\n" + lines[3][:-5])
    with pytest.raises(DataError, match=r"line 4: the last line is cut off"):
        scan_generated_set(bad, checklists=CHECKLISTS)
    with pytest.raises(DataError, match=r"line 1: ref_id '.+' is not an id in the real test manifest real.jsonl"):
        scan_generated_set(
            world["good"][0], checklists=CHECKLISTS, reference_ids={"nothing"}, reference_source="real.jsonl"
        )
    scan = scan_generated_set(world["good"][0], checklists=CHECKLISTS)
    assert len(scan) == 18 and scan.ref_complete and scan.seed == 0
    assert [s.ids for _, s in scan.chunks(7)] == [
        ids[i : i + 7] for ids in [read_generated_set(world["good"][0], checklists=CHECKLISTS).ids] for i in (0, 7, 14)
    ]
