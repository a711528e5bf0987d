"""`clinalign evaluate <check>` end to end on tiny images and a tiny encoder, against independent computations."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from scoring_helpers import COLOURS, _image, write_generated_set, write_real_set

from clinalign.cli import main
from clinalign.critics.embed import embed_image_files
from clinalign.evaluation.functional import frechet_distance, kernel_inception_distance, silhouette


def _run(argv: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
        raise SystemExit(0)
    captured = capsys.readouterr()
    return int(exit_info.value.code or 0), captured.out, captured.err


def _csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _write_train(root: Path, n_per_class: int = 5) -> Path:
    rng = np.random.default_rng(11)
    rows = []
    for label, colour in COLOURS.items():
        for i in range(n_per_class):
            name = f"train/{label}_{i}.png"
            _image(root / name, colour, rng, size=48)
            rows.append({"id": f"train-{label}-{i}", "image": name, "label": label, "split": "train"})
    path = root / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate")
    real = write_real_set(root)
    train = _write_train(root)
    good = write_generated_set(root / "craft", real, seed=0)
    bad = write_generated_set(root / "baseline", real, seed=1, wrong_fraction=0.6, noise=70)
    multi = write_generated_set(root / "multi", real, seed=2, n_per_prompt=3)
    # a "memorizing" set: its first image is a training image copied verbatim
    copier = write_generated_set(root / "copier", real, seed=3)
    first = json.loads((copier / "manifest.jsonl").read_text().splitlines()[0])
    shutil.copy(root / "train" / "red_lesion_2.png", copier / first["file"])
    return {"root": root, "real": real, "train": train, "good": good, "bad": bad, "multi": multi, "copier": copier}


def test_evaluate_help_lists_the_checks(capsys):
    code, out, _ = _run(["evaluate", "--help"], capsys)
    assert code == 0
    for check in ("fd", "kid", "silhouette", "memorization", "diversity", "preference", "downstream"):
        assert check in out


def test_fd_and_kid_equal_the_functions_on_independent_embeddings(world, tiny_clip_dir, clip_critic, tmp_path, capsys):
    common = ["--method", f"craft={world['good']}", "--method", f"baseline={world['bad']}"]
    common += ["--real", str(world["real"]), "--evaluator", str(tiny_clip_dir), "--no-progress"]
    code, _, err = _run(["evaluate", "fd", *common, "--out", str(tmp_path / "fd")], capsys)
    assert code == 0, err
    rows = {r["method"]: r for r in _csv(tmp_path / "fd" / "fd.csv")}
    real_paths = [world["real"].parent / f"real/{label}_{i}.png" for label in COLOURS for i in range(6)]
    real_emb = embed_image_files(clip_critic, real_paths, progress=False)
    for name, folder in (("craft", world["good"]), ("baseline", world["bad"])):
        files = [folder / json.loads(line)["file"] for line in (folder / "manifest.jsonl").read_text().splitlines()]
        gen = embed_image_files(clip_critic, files, progress=False)
        assert float(rows[name]["fd"]) == pytest.approx(frechet_distance(real_emb, gen), rel=1e-4)
        assert 0 < float(rows[name]["image_image_cosine_sfs"]) <= 1
    # the set with wrong colours and more noise is further from the real images
    assert float(rows["baseline"]["fd"]) > float(rows["craft"]["fd"])
    summary = json.loads((tmp_path / "fd" / "fd.json").read_text())
    assert summary["metric"] == "fd" and (tmp_path / "fd" / "fd.png").stat().st_size > 0

    code, _, err = _run(
        ["evaluate", "kid", *common, "--subsets", "5", "--subset-size", "10", "--out", str(tmp_path / "kid")], capsys
    )
    assert code == 0, err
    kid_rows = {r["method"]: r for r in _csv(tmp_path / "kid" / "kid.csv")}
    files = [world["good"] / json.loads(x)["file"] for x in (world["good"] / "manifest.jsonl").read_text().splitlines()]
    expected = kernel_inception_distance(
        real_emb, embed_image_files(clip_critic, files, progress=False), subsets=5, subset_size=10
    )
    assert float(kid_rows["craft"]["kid_mean"]) == pytest.approx(expected[0], rel=1e-4, abs=1e-7)
    assert float(kid_rows["craft"]["kid_std"]) == pytest.approx(expected[1], rel=1e-4, abs=1e-7)


def test_silhouette_per_method_and_real(world, tiny_clip_dir, clip_critic, tmp_path, capsys):
    argv = ["evaluate", "silhouette", "--method", f"craft={world['good']}", "--real", str(world["real"])]
    argv += ["--evaluator", str(tiny_clip_dir), "--out", str(tmp_path), "--no-progress"]
    code, _, err = _run(argv, capsys)
    assert code == 0, err
    rows = {r["set"]: r for r in _csv(tmp_path / "silhouette.csv")}
    assert set(rows) == {"real", "craft"}
    manifest = [json.loads(x) for x in (world["good"] / "manifest.jsonl").read_text().splitlines()]
    emb = embed_image_files(clip_critic, [world["good"] / r["file"] for r in manifest], progress=False)
    expected = silhouette(emb, [r["label"] for r in manifest])
    assert float(rows["craft"]["silhouette_cosine"]) == pytest.approx(expected, abs=1e-5)
    assert (tmp_path / "silhouette.png").is_file()


def test_memorization_flags_a_copied_training_image(world, tiny_clip_dir, tmp_path, capsys):
    base = ["evaluate", "memorization", "--method", f"copier={world['copier']}", "--method", f"craft={world['good']}"]
    base += ["--train", str(world["train"]), "--no-progress", "--top-k", "2"]
    argv = [*base, "--real", str(world["real"]), "--encoder", str(tiny_clip_dir), "--out", str(tmp_path / "pre")]
    code, _, err = _run(argv, capsys)
    assert code == 0, err
    summary = {r["method"]: r for r in _csv(tmp_path / "pre" / "memorization.csv")}
    assert summary["copier"]["any_flagged"] == "True" and int(summary["copier"]["n_flagged"]) >= 1
    assert float(summary["copier"]["max_ssim"]) == pytest.approx(1.0)
    assert summary["craft"]["any_flagged"] == "False"
    per_image = _csv(tmp_path / "pre" / "memorization_per_image.csv")
    copied = next(r for r in per_image if r["method"] == "copier" and r["id"].startswith("images/000000"))
    assert copied["nearest_ssim_train_id"] == copied["nearest_phash_train_id"] == "train-red_lesion-2"
    assert copied["nearest_phash_hamming"] == "0" and copied["flag_ssim"] == "1"
    assert float(copied["d_train"]) == pytest.approx(0.0, abs=1e-5)
    # the exact search finds the same nearest images; the prefilter never beats it
    code, _, err = _run([*base, "--mode", "exact", "--out", str(tmp_path / "exact")], capsys)
    assert code == 0, err
    exact = _csv(tmp_path / "exact" / "memorization_per_image.csv")
    for pre_row, exact_row in zip(per_image, exact, strict=True):
        assert float(pre_row["nearest_ssim"]) <= float(exact_row["nearest_ssim"]) + 1e-9
    assert (
        next(r for r in exact if r["id"] == copied["id"] and r["method"] == "copier")["nearest_ssim"]
        == (copied["nearest_ssim"])
    )


def test_diversity_embedding_distance_by_hand_and_single_sample_error(
    world, tiny_clip_dir, clip_critic, tmp_path, capsys
):
    argv = ["evaluate", "diversity", "--method", f"multi={world['multi']}", "--evaluator", str(tiny_clip_dir)]
    code, _, err = _run([*argv, "--out", str(tmp_path / "d"), "--no-progress"], capsys)
    assert code == 0, err
    row = _csv(tmp_path / "d" / "diversity.csv")[0]
    assert row["distance"] == "embedding_cosine"
    manifest = [json.loads(x) for x in (world["multi"] / "manifest.jsonl").read_text().splitlines()]
    emb = embed_image_files(clip_critic, [world["multi"] / r["file"] for r in manifest], progress=False).numpy()
    emb = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    per_prompt = []
    for p in sorted({r["prompt_index"] for r in manifest}):
        idx = [i for i, r in enumerate(manifest) if r["prompt_index"] == p]
        d = [1 - emb[i] @ emb[j] for a, i in enumerate(idx) for j in idx[a + 1 :]]
        per_prompt.append(np.mean(d))
    assert float(row["diversity_mean"]) == pytest.approx(float(np.mean(per_prompt)), abs=1e-5)
    assert int(row["n_prompts"]) == len(per_prompt)
    single = ["evaluate", "diversity", "--method", f"craft={world['good']}", "--evaluator", str(tiny_clip_dir)]
    code, _, err = _run([*single, "--out", str(tmp_path / "e"), "--no-progress"], capsys)
    assert code == 2 and "no prompt has 2 or more samples" in err and "craft" in err


def _fill(kit: Path, preferred: str, order_of_rest: list[str]) -> Path:
    key = json.loads((kit / "sealed" / "answer_key.json").read_text())
    rows = _csv(kit / "rankings.csv")
    for row in rows:
        by_method = {m: letter for letter, m in key["cases"][row["case"]].items()}
        row["ranking"] = ">".join(by_method[m] for m in [preferred, *order_of_rest])
    with open(kit / "rankings.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["rater", "case", "ranking"])
        writer.writeheader()
        writer.writerows(rows)
    return kit / "rankings.csv"


def test_preference_export_blinds_and_import_unblinds(world, tmp_path, capsys):
    kit = tmp_path / "kit"
    argv = ["evaluate", "preference", "export", "--method", f"craft={world['good']}"]
    argv += ["--method", f"baseline={world['bad']}", "--method", f"multi={world['multi']}"]
    argv += ["--rater", "r1", "--rater", "r2", "--n-cases", "6", "--tile", "48", "--out", str(kit)]
    code, _, err = _run(argv, capsys)
    assert code == 0, err
    cases = _csv(kit / "cases.csv")
    assert len(cases) == 6 and all((kit / c["grid"]).is_file() for c in cases)
    key = json.loads((kit / "sealed" / "answer_key.json").read_text())
    # letters are shuffled per case, and nothing the raters get names a method
    assert len({tuple(v.values()) for v in key["cases"].values()}) > 1
    for name in ("cases.csv", "rankings.csv", "kit.json", "README.txt"):
        text = (kit / name).read_text()
        assert "craft" not in text and "baseline" not in text
    rankings = _fill(kit, "craft", ["multi", "baseline"])
    cas = tmp_path / "cas_summary.json"
    cas.write_text(
        json.dumps(
            {"methods": {m: {"tail": {"mean": v}} for m, v in [("craft", 0.9), ("multi", 0.5), ("baseline", 0.1)]}}
        )
    )
    out = tmp_path / "res"
    argv = ["evaluate", "preference", "import", str(rankings), "--key", str(kit / "sealed" / "answer_key.json")]
    code, _, err = _run([*argv, "--cas-summary", str(cas), "--n-boot", "50", "--out", str(out)], capsys)
    assert code == 0, err
    rows = {r["method"]: r for r in _csv(out / "preference.csv")}
    assert float(rows["craft"]["top1_rate"]) == 1.0 and float(rows["baseline"]["top1_rate"]) == 0.0
    assert float(rows["craft"]["bt_score"]) > float(rows["multi"]["bt_score"]) > float(rows["baseline"]["bt_score"])
    summary = json.loads((out / "preference.json").read_text())
    assert summary["cas_bt_correlation"]["spearman_rho"] == pytest.approx(1.0)
    assert summary["n_cases"] == 6 and summary["n_raters"] == 2

    # malformed rankings: exit 2 naming the row
    lines = rankings.read_text().splitlines()
    first_case = lines[1].split(",")[1]
    broken = tmp_path / "broken.csv"
    bad_argv = ["evaluate", "preference", "import", str(broken), "--key", str(kit / "sealed" / "answer_key.json")]
    bad_argv += ["--out", str(tmp_path / "x")]
    for bad, message in (("A=B>C", "tie"), ("A>B", "missing letters"), ("A>A>B", "more than once")):
        broken.write_text("\n".join([lines[0], f"r1,{first_case},{bad}"]) + "\n")
        code, _, err = _run(bad_argv, capsys)
        assert code == 2 and "row 2" in err and message in err, err
    broken.write_text("rater,case,ranking\nr1,case_999,A>B>C\n")
    code, _, err = _run(bad_argv, capsys)
    assert code == 2 and "unknown case 'case_999'" in err and "row 2" in err
    assert not (tmp_path / "x").exists()


def test_downstream_linear_head_and_macro_f1(world, tiny_clip_dir, tmp_path, capsys):
    from sklearn.metrics import f1_score

    from clinalign.evaluation.downstream import macro_f1

    y_true = np.array([0, 0, 1, 1, 2, 2, 2])
    y_pred = np.array([0, 1, 1, 1, 2, 0, 2])
    assert macro_f1(y_true, y_pred, 3) == pytest.approx(f1_score(y_true, y_pred, average="macro"))
    argv = ["evaluate", "downstream", "--method", f"craft={world['good']}", "--method", f"baseline={world['bad']}"]
    argv += ["--train", str(world["train"]), "--real", str(world["real"]), "--evaluator", str(tiny_clip_dir)]
    argv += ["--scale", "0.5", "--scale", "1.0", "--seed", "0", "--seed", "1", "--steps", "40"]
    code, _, err = _run([*argv, "--out", str(tmp_path), "--no-progress"], capsys)
    assert code == 0, err
    rows = _csv(tmp_path / "downstream.csv")
    assert {(r["method"], r["scale"]) for r in rows} == {
        (m, s) for m in ("real_only", "craft", "baseline") for s in ("0.5", "1.0")
    }
    for r in rows:
        assert 0 <= float(r["accuracy_mean"]) <= 1 and r["n_seeds"] == "2"
        if r["method"] == "real_only":
            assert float(r["accuracy_gain_vs_real_only"]) == 0.0


def test_downstream_cnn_backbone_trains_on_pixels(world, tmp_path, capsys):
    import torch

    from clinalign.evaluation.downstream import _images_uint8, build_backbone, train_classifier

    argv = ["evaluate", "downstream", "--method", f"craft={world['good']}", "--train", str(world["train"])]
    argv += ["--real", str(world["real"]), "--scale", "1.0", "--seed", "1", "--steps", "12", "--no-progress"]
    cnn = ["--backbone", "cnn", "--image-size", "32", "--device", "cpu"]
    code, _, err = _run([*argv, *cnn, "--out", str(tmp_path / "cnn")], capsys)
    assert code == 0, err
    summary = json.loads((tmp_path / "cnn" / "downstream.json").read_text())
    assert (
        summary["backbone"] == "cnn" and summary["encoder"] is None and "cnn image classifier" in summary["definition"]
    )
    # the same run by hand: same images, seed, batches -> the same test accuracy
    train = [json.loads(x) for x in world["train"].read_text().splitlines()]
    test = [json.loads(x) for x in world["real"].read_text().splitlines()]
    classes = summary["classes"]
    train_x = _images_uint8([world["root"] / r["image"] for r in train], 32)
    train_y = torch.tensor([classes.index(r["label"]) for r in train])
    test_x = _images_uint8([world["root"] / r["image"] for r in test], 32)
    keep = torch.randperm(len(train), generator=torch.Generator().manual_seed(1))
    model = train_classifier(
        build_backbone("cnn", len(classes), seed=1), train_x[keep], train_y[keep], steps=12, batch_size=64, seed=1
    )
    with torch.no_grad():
        predicted = model(test_x).argmax(dim=1).numpy()
    accuracy = float(np.mean(predicted == np.array([classes.index(r["label"]) for r in test])))
    (run,) = [r for r in summary["per_seed"] if r["method"] == "real_only" and r["seed"] == 1]
    assert run["accuracy"] == pytest.approx(accuracy)
    assert run["accuracy"] > 0.5  # three colour classes: well above chance (1/3) after 12 steps
    # resnet18 takes the same uint8 input; unknown backbones and a linear head without evaluator exit 2
    assert build_backbone("resnet18", 3)(torch.zeros(2, 3, 32, 32, dtype=torch.uint8)).shape == (2, 3)
    code, _, err = _run([*argv, "--backbone", "vit-huge", "--out", str(tmp_path / "x")], capsys)
    assert code == 2 and "--backbone" in err
    code, _, err = _run([*argv, "--out", str(tmp_path / "y")], capsys)
    assert code == 2 and "--evaluator" in err


def test_bad_input_exits_2_naming_the_field(world, tiny_clip_dir, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "manifest.jsonl").write_text("")
    argv = ["evaluate", "fd", "--method", f"e={empty}", "--real", str(world["real"])]
    code, _, err = _run([*argv, "--evaluator", str(tiny_clip_dir), "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "manifest has no rows" in err and str(empty) in err
    code, _, err = _run(
        ["evaluate", "fd", "--method", "nodir", "--real", str(world["real"]), "--evaluator", "x", "--out", "o"], capsys
    )
    assert code == 2 and "NAME=DIR" in err
    memorization = ["evaluate", "memorization", "--method", f"c={world['good']}", "--train", str(world["train"])]
    code, _, err = _run([*memorization, "--mode", "fast", "--out", str(tmp_path / "m")], capsys)
    assert code == 2 and "--mode" in err


def test_score_cas_report_includes_evaluation_results(world, tiny_clip_dir, clip_critic, tmp_path, capsys):
    from scoring_helpers import train_probe_dir, write_checklists

    probe = tmp_path / "probe"
    train_probe_dir(clip_critic, tmp_path, probe)
    checklists = write_checklists(tmp_path / "checklists.json")
    cas = tmp_path / "cas"
    argv = ["evaluate", "fd", "--method", f"craft={world['good']}", "--real", str(world["real"])]
    code, _, err = _run([*argv, "--evaluator", str(tiny_clip_dir), "--out", str(cas / "evaluation" / "fd")], capsys)
    assert code == 0, err
    fd_value = float(_csv(cas / "evaluation" / "fd" / "fd.csv")[0]["fd"])
    argv = ["score-cas", "--method", f"craft={world['good']}", "--real", str(world["real"]), "--evaluator"]
    argv += [str(tiny_clip_dir), "--probe", str(probe), "--checklists", str(checklists), "--out", str(cas)]
    code, _, err = _run([*argv, "--n-boot", "50", "--no-progress", "--n-lowest", "0"], capsys)
    assert code == 0, err
    tables = (cas / "tables.md").read_text()
    assert "## Evaluation beyond CAS" in tables and f"{fd_value:.4g}" in tables
    summary = json.loads((cas / "summary.json").read_text())
    assert summary["evaluation"]["fd"]["results"][0]["fd"] == pytest.approx(fd_value)
    # a rerun into the finished folder is refused; --overwrite empties it but keeps the evaluation inputs
    code, _, err = _run([*argv, "--n-boot", "50", "--no-progress", "--n-lowest", "0"], capsys)
    assert code == 2 and "--overwrite" in err
    code, _, err = _run([*argv, "--n-boot", "50", "--no-progress", "--n-lowest", "0", "--overwrite"], capsys)
    assert code == 0, err
    assert (cas / "evaluation" / "fd" / "fd.csv").is_file()
    assert f"{fd_value:.4g}" in (cas / "tables.md").read_text()


def test_embedding_cache_embeds_each_image_once(world, clip_critic):
    from clinalign.evaluation.inputs import EmbeddingCache

    class Counting:
        def __init__(self, critic):
            self.critic, self.images = critic, 0

        def __getattr__(self, name):
            return getattr(self.critic, name)

        def encode_images(self, images):
            self.images += images.shape[0]
            return self.critic.encode_images(images)

    counting = Counting(clip_critic)
    cache = EmbeddingCache(counting)
    paths = sorted((world["good"] / "images").glob("*.png"))
    first = cache.embed(paths[:5])
    both = cache.embed(paths[:8])
    assert counting.images == 8
    torch = pytest.importorskip("torch")
    torch.testing.assert_close(both[:5], first)
    torch.testing.assert_close(both, embed_image_files(clip_critic, paths[:8], progress=False))
    assert cache.name == clip_critic.name


def test_memorization_size_matched_d_train_searches_a_subset(world, clip_critic, tmp_path):
    from clinalign.evaluation import MemorizationConfig, evaluate_memorization

    # 18 "training" images against 15 "test" images: d_train searches 15 of the 18
    base = {"methods": {"craft": [str(world["good"])]}, "train": str(world["real"]), "real": str(world["train"])}
    matched = evaluate_memorization(MemorizationConfig(**base, out=str(tmp_path / "a")), encoder=clip_critic)
    full = evaluate_memorization(
        MemorizationConfig(**base, match_sizes=False, out=str(tmp_path / "b")), encoder=clip_critic
    )
    a = [float(r["d_train"]) for r in _csv(tmp_path / "a" / "memorization_per_image.csv")]
    b = [float(r["d_train"]) for r in _csv(tmp_path / "b" / "memorization_per_image.csv")]
    # a nearest neighbour in a subset is never nearer than in the whole set, and here it is farther for some images
    assert all(x >= y - 1e-6 for x, y in zip(a, b, strict=True)) and any(
        x > y + 1e-6 for x, y in zip(a, b, strict=True)
    )
    assert "subset" in matched.summary["definition"] and "subset" not in full.summary["definition"]
