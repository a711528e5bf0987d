"""Score generated images with CAS and its low-tail analysis, offline on tiny local models (CPU, ~1 minute).

The script builds a small synthetic dermatology-like dataset (skin-toned squares with a brown disc for
"nevus", a white blob for "vitiligo"), a tiny CLIP playing the *training critic* and a tiny SigLIP playing
the *evaluator* (a different model, as CAS requires). It then

1. fits the evaluator-space DD probe on real training images (what `clinalign probe train` does);
2. scores a batch of images with the library API: ``CASScorer.score`` and ``tail_analysis``;
3. writes two generated sets the way `clinalign generate` does (a faithful "craft" set in two seeds
   and a "baseline" set where a third of the images show the wrong finding) and runs the full
   evaluation, the same function `clinalign score-cas` calls, writing tables and plots.

With real models, replace the tiny evaluator by e.g. ``google/siglip-base-patch16-224`` and use your
own probe, manifests and checklists.

    python examples/score_cas.py                 # writes to runs/score_cas_example
    python examples/score_cas.py --out /tmp/cas
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from clinalign import CASScorer, load_critic
from clinalign.data import Record
from clinalign.data.images import pil_to_tensor
from clinalign.probe_training import train_probe
from clinalign.scoring import ScoreCASConfig, evaluate_cas, tail_analysis
from clinalign.testing import build_tiny_clip, build_tiny_siglip

CLASSES = ["nevus", "vitiligo"]
CHECKLISTS = {
    "nevus": "Lesion Type: macule. Shape/Size: small, round. Color: uniform brown. Texture: smooth.",
    "vitiligo": "Lesion Type: depigmented patch. Shape/Size: irregular, sharp outline. Color: white. Texture: smooth.",
}
SITES = ["arm", "leg", "trunk", "back"]


def draw(label: str, rng: np.random.Generator, size: int = 48) -> np.ndarray:
    """One synthetic image (uint8 HxWx3) of ``label``."""
    yy, xx = np.meshgrid(np.linspace(-1, 1, size), np.linspace(-1, 1, size), indexing="ij")
    radius = 0.25 + 0.15 * rng.random()
    mask = (np.sqrt((xx - 0.2 * rng.standard_normal()) ** 2 + yy**2) < radius)[..., None]
    skin = np.array([217, 166, 140])
    colour = np.array([100, 64, 38]) if label == "nevus" else np.array([247, 242, 237])
    image = skin * (1 - mask) + colour * mask + rng.normal(0, 8, (size, size, 3))
    return np.clip(image, 0, 255).astype(np.uint8)


def write_real(root: Path, split: str, n_per_class: int, rng: np.random.Generator) -> list[dict]:
    rows = []
    for label in CLASSES:
        for i in range(n_per_class):
            file = f"real/{split}/{label}_{i}.png"
            (root / file).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(draw(label, rng)).save(root / file)
            site = SITES[i % len(SITES)]
            t_ep = f"dermatology photo of a {'small round brown' if label == 'nevus' else 'white'} lesion on the {site}"
            rows.append({"id": f"{split}-{label}-{i}", "image": file, "label": label, "split": split, "t_ep": t_ep})
    return rows


def write_generated(out: Path, real_rows: list[dict], *, seed: int, wrong: float, lora: Path | None) -> Path:
    """A folder like `clinalign generate` writes: images/, manifest.jsonl, generate_config.json."""
    rng = np.random.default_rng(100 + seed)
    rows = []
    for p, real in enumerate(real_rows):
        file = f"images/{p:06d}_000.png"
        (out / file).parent.mkdir(parents=True, exist_ok=True)
        shown = real["label"] if rng.random() >= wrong else CLASSES[1 - CLASSES.index(real["label"])]
        Image.fromarray(draw(shown, rng)).save(out / file)
        rows.append(
            {"file": file, "prompt": real["t_ep"], "label": real["label"], "seed": seed} | {"ref_id": real["id"]}
        )
    (out / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (out / "generate_config.json").write_text(json.dumps({"seed": seed, "lora": None if lora is None else str(lora)}))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/score_cas_example"))
    args = parser.parse_args()
    torch.manual_seed(0)
    work = Path(tempfile.mkdtemp(prefix="clinalign_score_cas_"))
    try:
        run(work, args.out)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(work: Path, out: Path) -> None:
    rng = np.random.default_rng(0)

    # --- models: the training critic and a *different* evaluator
    training_critic = load_critic(build_tiny_clip(work / "training_critic"), device="cpu")
    evaluator = load_critic(build_tiny_siglip(work / "evaluator"), device="cpu")
    print(f"training critic: {training_critic.name}\nevaluator:       {evaluator.name}")

    # --- data: real train/test images with enriched prompts, and a checklists file
    train_rows = write_real(work, "train", 24, rng)
    test_rows = write_real(work, "test", 12, rng)
    real_manifest = work / "test_enriched.jsonl"
    real_manifest.write_text("".join(json.dumps(r) + "\n" for r in test_rows))
    checklists = work / "checklists.json"
    checklists.write_text(json.dumps(CHECKLISTS))

    # 1. the evaluator-space DD probe, fitted on real training images only
    records = [Record(id=r["id"], image=work / r["image"], label=r["label"]) for r in train_rows]
    fitted = train_probe(evaluator, records, work / "probe", epochs=200, lr=0.01, progress=False)
    print(f"probe train accuracy: {fitted.train_accuracy:.3f}")

    # 2. library API on tensors: per-image primitives and the tail against the real images
    scorer = CASScorer(evaluator, fitted.probe, dd_mode="accuracy", batch_size=16)
    real_images = torch.stack([pil_to_tensor(Image.open(work / r["image"])) for r in test_rows])
    prompts = [r["t_ep"] for r in test_rows]
    labels = [r["label"] for r in test_rows]
    checklist_texts = [CHECKLISTS[label] for label in labels]
    real_scores = scorer.score(real_images, prompts, checklist_texts, labels, references=real_images)
    # stand-ins for generated images: every fourth one shows the other class's finding
    shown = [label if i % 4 else CLASSES[1 - CLASSES.index(label)] for i, label in enumerate(labels)]
    fake = torch.stack([pil_to_tensor(Image.fromarray(draw(label, rng))) for label in shown])
    fake_scores = scorer.score(fake, prompts, checklist_texts, labels, references=real_images)
    tail = tail_analysis(fake_scores.cas, real_scores.cas, q=0.25, n_boot=500, seed=0)
    print(
        f"tensor API: mean CAS {tail.mean:.3f} [{tail.mean_ci[0]:.3f}, {tail.mean_ci[1]:.3f}], "
        f"{100 * tail.frac_below:.0f}% below τ={tail.tau:.3f}, P10 {tail.p10:.3f}, "
        f"DD accuracy {fake_scores.dd.mean():.2f}"
    )

    # 3. the full evaluation over generated sets (what `clinalign score-cas` runs)
    lora = work / "craft_lora"
    lora.mkdir()
    (lora / "clinalign_meta.json").write_text(json.dumps({"training_critics": [training_critic.name]}))
    craft = [write_generated(work / f"craft_s{s}", test_rows, seed=s, wrong=0.05, lora=lora) for s in (0, 1)]
    baseline = write_generated(work / "baseline_s0", test_rows, seed=0, wrong=0.35, lora=None)
    config = ScoreCASConfig(
        methods={"baseline": [str(baseline)], "craft": [str(p) for p in craft]},
        real=str(real_manifest),
        checklists=str(checklists),
        evaluator=evaluator.name,
        probe=str(work / "probe"),
        n_boot=500,
        out=str(out),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        report = evaluate_cas(config, evaluator=evaluator, probe=fitted.probe, progress=False)
    print()
    print(report.console_table())
    print(f"\nleakage warnings: {report.leakage or 'none (the evaluator is not the training critic)'}")
    print(f"wrote to {report.out_dir}: {', '.join(sorted(p.name for p in report.files.values()))}")


if __name__ == "__main__":
    main()
