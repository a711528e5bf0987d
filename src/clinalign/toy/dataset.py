"""ToyDerm: a procedurally generated, seeded, dermatology-like image set.

Each image shows one lesion on a patch of skin. The four classes differ the way their real
counterparts do in dermatology atlases:

- ``benign nevus``: small, round or slightly oval, uniformly brown, smooth regular border;
- ``melanoma``: larger, asymmetric, irregular notched border, several colours (brown, black,
  blue-grey, red), mottled;
- ``erythema multiforme``: a target lesion, concentric rings (dusky centre, pale ring, red outer ring);
- ``vitiligo``: a milky-white depigmented patch with a sharp irregular outline, smooth surface.

Images are drawn at ``render_scale`` times the output size with supersampled edges and reduced with a
box filter, so 32x32 outputs keep the borders and rings legible. Every image records the attributes
it was drawn from (:class:`ToyDermAttributes`); the per-image enriched prompt ``t_ep`` and the per-class
checklists ``t_c`` are rendered from them by the ``toyderm`` enrichment preset, the way an MLLM constrained to
the true label would describe the image: the label prompt, then visible signs only, positive phrasing.

Everything is deterministic given the seed: image ``i`` of a split is drawn from its own
``numpy.random.SeedSequence((seed, split_code, i))``, so subsets and splits never depend on each other.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from clinalign.errors import ConfigError
from clinalign.utils.io import atomic_open, atomic_write_bytes, write_json

CLASSES: tuple[str, ...] = ("benign nevus", "melanoma", "erythema multiforme", "vitiligo")
"""Class names, in label-index order."""

CHECKLIST_ATTRIBUTES: tuple[str, ...] = ("Location", "Lesion Type", "Shape/Size", "Color", "Texture")

_SPLIT_CODES = {"train": 1, "test": 2, "val": 3}

# Skin tones (name, RGB in [0,1]) spanning light to dark skin.
_SKIN_TONES: tuple[tuple[str, tuple[float, float, float]], ...] = (
    ("very light", (0.96, 0.84, 0.76)),
    ("light", (0.91, 0.75, 0.64)),
    ("medium", (0.80, 0.62, 0.48)),
    ("olive", (0.70, 0.54, 0.38)),
    ("brown", (0.55, 0.38, 0.26)),
    ("dark", (0.38, 0.25, 0.17)),
)

#: the skin-tone names, lightest first
SKIN_TONES: tuple[str, ...] = tuple(name for name, _ in _SKIN_TONES)

_BROWNS = {
    "light brown": (0.62, 0.42, 0.26),
    "brown": (0.45, 0.28, 0.16),
    "dark brown": (0.30, 0.18, 0.10),
}
_MELANOMA_COLOURS = {
    "dark brown": (0.28, 0.16, 0.09),
    "black": (0.08, 0.06, 0.06),
    "blue-grey": (0.36, 0.42, 0.52),
    "red": (0.72, 0.22, 0.20),
    "light brown": (0.58, 0.38, 0.22),
}
_EM_CENTRE = (0.40, 0.12, 0.20)  # dusky violaceous centre
_EM_RED = (0.82, 0.24, 0.26)
_VITILIGO_WHITE = (0.97, 0.94, 0.92)

_POSITIONS = (
    ((-1, -1), "upper left"),
    ((0, -1), "upper centre"),
    ((1, -1), "upper right"),
    ((-1, 0), "left"),
    ((0, 0), "centre"),
    ((1, 0), "right"),
    ((-1, 1), "lower left"),
    ((0, 1), "lower centre"),
    ((1, 1), "lower right"),
)


@dataclass(frozen=True)
class ToyDermAttributes:
    """What one ToyDerm image shows, as drawn. Everything an enriched prompt says comes from here.

    Attributes:
        label: class name (one of :data:`CLASSES`).
        skin_tone: skin tone name, e.g. ``"olive"``.
        position: where the lesion sits in the frame, e.g. ``"upper left"``.
        size: ``"small"``, ``"medium"`` or ``"large"`` (from ``diameter_frac``).
        diameter_frac: lesion diameter as a fraction of the image side.
        lesion_type: ``"macule"``, ``"pigmented plaque"``, ``"target lesion"`` or ``"patch"``.
        shape: ``"round"``, ``"oval"``, ``"asymmetric"`` or ``"irregular"``.
        border: border description, e.g. ``"smooth regular border"``.
        colours: colours present, most extensive first.
        texture: surface description, e.g. ``"smooth"`` or ``"mottled"``.
        rings: number of concentric zones (3 for target lesions, else 0).
        seed: the integer seed the image was drawn from (reproduces it with :func:`render_image`).
    """

    label: str
    skin_tone: str
    position: str
    size: str
    diameter_frac: float
    lesion_type: str
    shape: str
    border: str
    colours: tuple[str, ...]
    texture: str
    rings: int
    seed: int

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["colours"] = list(self.colours)
        return out


@dataclass(frozen=True)
class ToyDermSample:
    """One generated image with its identity and attributes.

    Attributes:
        id: unique id, e.g. ``"train-00012"``.
        split: ``"train"`` or ``"test"``.
        patient_id: toy patient; each patient has two lesions of the same skin tone, within one split.
        image: uint8 array [size, size, 3].
        attributes: what was drawn.
        prompt: the enriched prompt ``t_ep``.
    """

    id: str
    split: str
    patient_id: str
    image: np.ndarray = field(repr=False)
    attributes: ToyDermAttributes
    prompt: str

    @property
    def label(self) -> str:
        return self.attributes.label

    @property
    def label_index(self) -> int:
        return CLASSES.index(self.attributes.label)

    def to_pil(self) -> Image.Image:
        return Image.fromarray(self.image, mode="RGB")


# ---------------------------------------------------------------------------------------------- drawing


def _smooth_noise(rng: np.random.Generator, n: int, cells: int) -> np.ndarray:
    """Low-frequency noise in [-1, 1] on an n x n grid (bilinear upsampling of a coarse grid)."""
    coarse = rng.uniform(-1.0, 1.0, size=(cells + 1, cells + 1))
    x = np.linspace(0, cells, n)
    i0 = np.clip(np.floor(x).astype(int), 0, cells - 1)
    f = x - i0
    rows = coarse[i0] * (1 - f)[:, None] + coarse[i0 + 1] * f[:, None]  # [n, cells+1]
    return rows[:, i0] * (1 - f)[None, :] + rows[:, i0 + 1] * f[None, :]


def _radius_profile(
    rng: np.random.Generator, theta: np.ndarray, harmonics: Sequence[tuple[int, float]]
) -> tuple[np.ndarray, list[tuple[int, float, float]]]:
    """1 + sum of random-phase harmonics a*cos(k*theta + phi), evaluated at ``theta``."""
    terms = [(k, amp, float(rng.uniform(0, 2 * math.pi))) for k, amp in harmonics]
    profile = np.ones_like(theta)
    for k, amp, phase in terms:
        profile = profile + amp * np.cos(k * theta + phase)
    return profile, terms


def _coverage(signed: np.ndarray, px: float) -> np.ndarray:
    """Soft inside-mask from a signed distance-like field (positive inside), edge ~1 pixel wide."""
    return np.clip(signed / px + 0.5, 0.0, 1.0)


def _blend(canvas: np.ndarray, colour: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    return canvas * (1 - alpha[..., None]) + colour * alpha[..., None]


def _size_word(diameter_frac: float) -> str:
    if diameter_frac < 0.32:
        return "small"
    if diameter_frac < 0.5:
        return "medium"
    return "large"


def skin_tone_of(image: np.ndarray) -> str:
    """The skin tone an image shows: the palette tone nearest to the median colour of its 3-pixel border.

    ``image`` is an RGB array [H, W, 3], uint8 or float in [0, 1]. Lesions sit away from the border, so on
    real ToyDerm images this recovers the recorded tone almost always (a check in the tests); on generated
    images it says whether a model drew the tone its prompt names.
    """
    a = np.asarray(image, dtype=np.float64)
    if a.ndim != 3 or a.shape[-1] != 3:
        raise ConfigError(f"expected an RGB image [H, W, 3], got shape {a.shape}.")
    if a.max() > 1.0:
        a = a / 255.0
    border = np.concatenate(
        [a[:3].reshape(-1, 3), a[-3:].reshape(-1, 3), a[:, :3].reshape(-1, 3), a[:, -3:].reshape(-1, 3)]
    )
    colour = np.median(border, axis=0)
    palette = np.array([rgb for _, rgb in _SKIN_TONES])
    return _SKIN_TONES[int(np.argmin(((palette - colour) ** 2).sum(1)))][0]


def render_image(
    label: str, seed: int, *, size: int = 32, render_scale: int = 3, skin_tone: str | None = None
) -> tuple[np.ndarray, ToyDermAttributes]:
    """Draw one ToyDerm image of class ``label`` from ``seed`` (``skin_tone`` overrides the seeded tone).

    Returns ``(image, attributes)``: a uint8 array [size, size, 3] and what was drawn.
    """
    if label not in CLASSES:
        raise ConfigError(f"label must be one of {list(CLASSES)}, got {label!r}.")
    if size < 16:
        raise ConfigError(f"size must be at least 16 pixels, got {size}; the class criteria are unreadable below.")
    rng = np.random.default_rng(seed)
    n = size * render_scale
    px = 1.0 / n  # one render pixel in normalised units

    # --- skin: tone with jitter, low-frequency shading, fine grain
    tone_name, tone = _SKIN_TONES[int(rng.integers(len(_SKIN_TONES)))]
    if skin_tone is not None:
        tones = dict(_SKIN_TONES)
        if skin_tone not in tones:
            raise ConfigError(f"skin_tone must be one of {list(tones)}, got {skin_tone!r}.")
        tone_name, tone = skin_tone, tones[skin_tone]
    skin = np.clip(np.array(tone) * rng.uniform(0.92, 1.08, size=3), 0, 1)
    shade = 1.0 + 0.06 * _smooth_noise(rng, n, 3)
    canvas = np.ones((n, n, 3)) * skin[None, None, :] * shade[..., None]

    # --- lesion geometry
    (gx, gy), position = _POSITIONS[int(rng.integers(len(_POSITIONS)))]
    if label == "benign nevus":
        diameter = rng.uniform(0.18, 0.30)
    elif label == "melanoma":
        diameter = rng.uniform(0.42, 0.62)
    elif label == "erythema multiforme":
        diameter = rng.uniform(0.40, 0.58)
    else:
        diameter = rng.uniform(0.40, 0.64)
    radius = diameter / 2
    # keep the lesion inside the frame; positions move the centre by up to the free margin
    margin = max(0.0, 0.5 - radius * 1.15 - 0.03)
    cx = 0.5 + gx * margin * rng.uniform(0.6, 1.0) + rng.normal(0, 0.01)
    cy = 0.5 + gy * margin * rng.uniform(0.6, 1.0) + rng.normal(0, 0.01)
    if (gx, gy) != (0, 0) and margin < 0.04:
        position = "centre"

    coords = (np.arange(n) + 0.5) / n
    yy, xx = np.meshgrid(coords, coords, indexing="ij")
    dx, dy = xx - cx, yy - cy
    rho = np.hypot(dx, dy)
    theta = np.arctan2(dy, dx)

    colours: tuple[str, ...]
    rings = 0
    if label == "benign nevus":
        ecc = rng.uniform(0.0, 0.12)
        shape = "oval" if ecc > 0.07 else "round"
        profile, _ = _radius_profile(rng, theta, [(2, ecc), (3, 0.015)])
        inside = _coverage(radius * profile - rho, px)
        brown_name = str(rng.choice(list(_BROWNS)))
        colour = np.clip(np.array(_BROWNS[brown_name]) * (skin / 0.8) ** 0.25 * rng.uniform(0.93, 1.07, 3), 0, 1)
        # a touch of darker centre is common in nevi but keep it uniform-looking
        lesion = colour[None, None, :] * (1 - 0.04 * (1 - rho / radius).clip(0, 1))[..., None]
        canvas = canvas * (1 - inside[..., None]) + lesion * inside[..., None]
        lesion_type, border, texture = "macule", "smooth regular border", "smooth"
        colours = (f"uniform {brown_name}",)
    elif label == "melanoma":
        harmonics = [(1, rng.uniform(0.12, 0.22)), (2, rng.uniform(0.08, 0.16)), (3, rng.uniform(0.05, 0.12))]
        harmonics += [(k, rng.uniform(0.03, 0.07)) for k in (5, 7, 9)]
        profile, _ = _radius_profile(rng, theta, harmonics)
        # notches: narrow angular dips in the border
        for _ in range(int(rng.integers(2, 5))):
            centre = rng.uniform(-math.pi, math.pi)
            width = rng.uniform(0.12, 0.25)
            d = np.angle(np.exp(1j * (theta - centre)))
            profile = profile - rng.uniform(0.15, 0.3) * np.exp(-((d / width) ** 2))
        inside = _coverage(radius * profile - rho, px)
        palette = list(_MELANOMA_COLOURS)
        n_colours = int(rng.integers(3, 5))
        others = [str(c) for c in rng.permutation([c for c in palette if c != "dark brown"])]
        chosen = ["dark brown", *others[: n_colours - 1]]
        # colour regions from competing smooth noise fields, one per colour
        fields = np.stack([_smooth_noise(rng, n, 4) + (0.35 if i == 0 else 0.0) for i in range(len(chosen))])
        owner = fields.argmax(0)
        lesion = np.zeros((n, n, 3))
        for i, name in enumerate(chosen):
            c = np.clip(np.array(_MELANOMA_COLOURS[name]) * rng.uniform(0.9, 1.1, 3), 0, 1)
            lesion[owner == i] = c
        mottle = 1.0 + 0.12 * _smooth_noise(rng, n, 12)
        lesion = np.clip(lesion * mottle[..., None], 0, 1)
        canvas = canvas * (1 - inside[..., None]) + lesion * inside[..., None]
        ordered = [chosen[i] for i in np.argsort(-np.bincount(owner[inside > 0.5].ravel(), minlength=len(chosen)))]
        colours = tuple(ordered)
        lesion_type, shape, border, texture = "pigmented plaque", "asymmetric", "irregular notched border", "mottled"
    elif label == "erythema multiforme":
        profile, _ = _radius_profile(rng, theta, [(2, rng.uniform(0.0, 0.05)), (3, 0.02)])
        r = rho / profile
        outer = _coverage(radius - r, px)
        pale_r = radius * rng.uniform(0.62, 0.72)
        centre_r = radius * rng.uniform(0.28, 0.38)
        pale = _coverage(pale_r - r, px)
        centre = _coverage(centre_r - r, px)
        red = np.clip(np.array(_EM_RED) * rng.uniform(0.9, 1.1, 3), 0, 1)
        pale_colour = np.clip(0.55 * skin + 0.45 * np.array([0.98, 0.88, 0.86]), 0, 1)
        dusky = np.clip(np.array(_EM_CENTRE) * rng.uniform(0.85, 1.15, 3), 0, 1)
        # the red outer ring fades slightly into the surrounding skin (erythema)
        halo = np.clip((radius * 1.12 - r) / (radius * 0.12), 0, 1) * (1 - outer) * 0.35
        canvas = _blend(canvas, red, halo)
        canvas = _blend(canvas, red, outer)
        canvas = _blend(canvas, pale_colour, pale)
        canvas = _blend(canvas, dusky, centre)
        lesion_type, shape, border, texture = "target lesion", "round", "well-defined round edge", "smooth"
        colours = ("dusky dark centre", "pale ring", "red outer ring")
        rings = 3
    else:  # vitiligo
        harmonics = [(2, rng.uniform(0.06, 0.14)), (3, rng.uniform(0.06, 0.12))]
        harmonics += [(k, rng.uniform(0.03, 0.06)) for k in (4, 6, 8)]
        profile, _ = _radius_profile(rng, theta, harmonics)
        inside = _coverage(radius * profile - rho, px * 0.7)  # sharp outline
        white = np.clip(np.array(_VITILIGO_WHITE) * rng.uniform(0.95, 1.02, 3), 0, 1)
        # depigmentation is near-complete: mostly white with a faint trace of skin colour
        lesion = 0.88 * white + 0.12 * skin
        canvas = canvas * (1 - inside[..., None]) + lesion[None, None, :] * shade[..., None] * inside[..., None]
        lesion_type, shape, border, texture = "patch", "irregular", "sharp irregular outline", "smooth"
        colours = ("milky white",)

    # fine grain over everything (skin texture / sensor noise), then reduce with a box filter
    canvas = canvas + rng.normal(0, 0.018, size=canvas.shape)
    canvas = canvas * rng.uniform(0.95, 1.05)  # exposure jitter
    img = Image.fromarray((np.clip(canvas, 0, 1) * 255 + 0.5).astype(np.uint8), mode="RGB")
    img = img.resize((size, size), Image.Resampling.BOX)
    attributes = ToyDermAttributes(
        label=label,
        skin_tone=tone_name,
        position=position,
        size=_size_word(diameter),
        diameter_frac=round(float(diameter), 4),
        lesion_type=lesion_type,
        shape=shape,
        border=border,
        colours=colours,
        texture=texture,
        rings=rings,
        seed=int(seed),
    )
    return np.asarray(img, dtype=np.uint8).copy(), attributes


# ---------------------------------------------------------------------------------------------- text


def enriched_prompt(attributes: ToyDermAttributes) -> str:
    """The per-image enriched prompt ``t_ep`` for ``attributes``, rendered by the ``toyderm`` preset.

    The image's recorded attributes are the JSON an MLLM constrained to the true label would return; the
    preset (``clinalign/toy/toyderm.yaml``) validates and renders them, exactly as ``clinalign enrich``
    renders a real dataset's replies. There is no second text template: the toy data, the critics'
    training texts and the quickstart's enrichment all come from the preset.
    """
    from clinalign.toy.enrich import render_enriched_prompt

    return render_enriched_prompt(asdict(attributes), attributes.label)


def checklist_attributes(label: str) -> dict[str, str]:
    """The structured class checklist for ``label`` (attribute -> required finding), from the preset."""
    from clinalign.toy.enrich import toyderm_preset

    if label not in CLASSES:
        raise ConfigError(f"label must be one of {list(CLASSES)}, got {label!r}.")
    return dict(toyderm_preset().checklist(label) or {})


def checklist(label: str) -> str:
    """The class checklist ``t_c`` for ``label``, rendered by the preset ("melanoma. Location: ...; ...")."""
    from clinalign.toy.enrich import toyderm_preset

    if label not in CLASSES:
        raise ConfigError(f"label must be one of {list(CLASSES)}, got {label!r}.")
    return toyderm_preset().render_checklist(label, None)


def checklists() -> dict[str, str]:
    """All class checklists: class name -> ``t_c``."""
    return {label: checklist(label) for label in CLASSES}


def label_prompt(label: str) -> str:
    """The label-only prompt the shipped base model was trained with."""
    return f"dermatology photo of {label}"


def text_corpus() -> list[str]:
    """Every word the toy world can produce, for building a tokenizer vocabulary."""
    lines = [label_prompt(c) for c in CLASSES] + list(checklists().values())
    for label in CLASSES:
        for i in range(40):
            _, attrs = render_image(label, 10_000_000 + i, size=16, render_scale=1)
            lines.append(enriched_prompt(attrs))
    lines += list(SKIN_TONES) + [p for _, p in _POSITIONS]
    lines += list(_BROWNS) + list(_MELANOMA_COLOURS) + ["small medium large round oval uniform"]
    return lines


# ---------------------------------------------------------------------------------------------- datasets


def _sample_seed(seed: int, split: str, index: int) -> int:
    ss = np.random.SeedSequence((int(seed), _SPLIT_CODES[split], int(index)))
    return int(ss.generate_state(1, dtype=np.uint32)[0])


def generate_split(
    split: str,
    n: int,
    *,
    seed: int = 0,
    size: int = 32,
    render_scale: int = 3,
    start: int = 0,
) -> list[ToyDermSample]:
    """Generate ``n`` samples of ``split`` (``"train"``, ``"val"`` or ``"test"``), classes balanced.

    Labels cycle through :data:`CLASSES` in a seeded random order per block of four, so any prefix is
    nearly balanced. ``start`` skips the first samples (sample ``i`` is the same whatever ``start`` and
    ``n``), which lets callers generate in chunks.
    """
    if split not in _SPLIT_CODES:
        raise ConfigError(f"split must be one of {sorted(_SPLIT_CODES)}, got {split!r}.")
    if n < 0 or start < 0:
        raise ConfigError(f"n and start must be >= 0, got n={n}, start={start}.")
    samples: list[ToyDermSample] = []
    k = len(CLASSES)
    for index in range(start, start + n):
        block_rng = np.random.default_rng(_sample_seed(seed, split, index // k) ^ 0x5EED)
        label = CLASSES[int(block_rng.permutation(k)[index % k])]
        patient = index // 2
        image_seed = _sample_seed(seed, split, index)
        # both lesions of a toy patient share the skin tone, drawn from the patient's own seed
        patient_rng = np.random.default_rng(_sample_seed(seed, split, 1_000_000 + patient))
        tone_name = _SKIN_TONES[int(patient_rng.integers(len(_SKIN_TONES)))][0]
        image, attributes = render_image(label, image_seed, size=size, render_scale=render_scale, skin_tone=tone_name)
        samples.append(
            ToyDermSample(
                id=f"{split}-{index:05d}",
                split=split,
                patient_id=f"{split}-patient-{patient:05d}",
                image=image,
                attributes=attributes,
                prompt=enriched_prompt(attributes),
            )
        )
    return samples


@dataclass(frozen=True)
class ToyDerm:
    """A generated ToyDerm dataset held in memory.

    Attributes:
        train, test: the samples of each split.
        seed, size: what they were generated with.
    """

    train: list[ToyDermSample]
    test: list[ToyDermSample]
    seed: int
    size: int

    @classmethod
    def generate(
        cls, *, n_train: int = 2000, n_test: int = 400, seed: int = 0, size: int = 32, render_scale: int = 3
    ) -> ToyDerm:
        """Generate train and test splits (independent streams of the same seed)."""
        return cls(
            train=generate_split("train", n_train, seed=seed, size=size, render_scale=render_scale),
            test=generate_split("test", n_test, seed=seed, size=size, render_scale=render_scale),
            seed=seed,
            size=size,
        )

    @property
    def classes(self) -> tuple[str, ...]:
        return CLASSES

    def samples(self, split: str) -> list[ToyDermSample]:
        if split == "train":
            return self.train
        if split == "test":
            return self.test
        raise ConfigError(f"split must be 'train' or 'test', got {split!r}.")

    def images(self, split: str):  # -> torch.Tensor [N,3,H,W] in [0,1]
        """All images of ``split`` as one float tensor [N,3,size,size] in [0,1]."""
        import torch

        array = np.stack([s.image for s in self.samples(split)]).astype(np.float32) / 255.0
        return torch.from_numpy(array).permute(0, 3, 1, 2).contiguous()

    def labels(self, split: str):  # -> torch.Tensor [N] int64
        import torch

        return torch.tensor([s.label_index for s in self.samples(split)], dtype=torch.long)

    def prompts(self, split: str) -> list[str]:
        return [s.prompt for s in self.samples(split)]


@dataclass(frozen=True)
class ToyDermFiles:
    """Where :func:`write_toyderm` put things.

    Attributes:
        root: the output directory.
        manifest: generic manifest CSV (``id,image,label,split,patient_id``).
        enriched: enriched JSONL (``id``, ``image``, ``label``, ``split``, ``patient_id``, ``t_ep``,
            ``checklist`` and the attribute fields).
        checklists: ``checklists.json`` (class name -> ``t_c``).
    """

    root: Path
    manifest: Path
    enriched: Path
    checklists: Path


def _png_bytes(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    # fixed PNG settings and no metadata so files are byte-identical across runs
    Image.fromarray(image, mode="RGB").save(buffer, format="PNG", optimize=False, compress_level=6)
    return buffer.getvalue()


def write_toyderm(
    out_dir: str | os.PathLike[str],
    *,
    n_train: int = 2000,
    n_test: int = 400,
    seed: int = 0,
    size: int = 32,
    dataset: ToyDerm | None = None,
) -> ToyDermFiles:
    """Generate ToyDerm (or take ``dataset``) and write it under ``out_dir``, atomically.

    Layout: ``images/{split}/{id}.png``, ``manifest.csv``, ``enriched.jsonl``, ``checklists.json``.
    Image paths in the manifest and JSONL are relative to ``out_dir``. Existing identical PNGs are
    kept, so a rerun after an interruption only writes what is missing.
    """
    root = Path(out_dir)
    if dataset is None:
        dataset = ToyDerm.generate(n_train=n_train, n_test=n_test, seed=seed, size=size)
    import csv
    import json

    manifest_rows: list[dict[str, str]] = []
    enriched_lines: list[str] = []
    lists = checklists()
    for split in ("train", "test"):
        for sample in dataset.samples(split):
            rel = Path("images") / split / f"{sample.id}.png"
            data = _png_bytes(sample.image)
            target = root / rel
            if not (target.is_file() and target.read_bytes() == data):
                atomic_write_bytes(target, data)
            manifest_rows.append(
                {
                    "id": sample.id,
                    "image": rel.as_posix(),
                    "label": sample.label,
                    "split": split,
                    "patient_id": sample.patient_id,
                }
            )
            row: dict[str, Any] = {
                "id": sample.id,
                "image": rel.as_posix(),
                "label": sample.label,
                "split": split,
                "patient_id": sample.patient_id,
                "t_ep": sample.prompt,
                "checklist": lists[sample.label],
            }
            attrs = sample.attributes.to_dict()
            attrs.pop("label")
            row.update(attrs)
            enriched_lines.append(json.dumps(row, ensure_ascii=False, sort_keys=True))
    manifest = root / "manifest.csv"
    with atomic_open(manifest, "w") as handle:
        writer = csv.DictWriter(handle, fieldnames=["id", "image", "label", "split", "patient_id"], lineterminator="\n")
        writer.writeheader()
        writer.writerows(manifest_rows)
    enriched = root / "enriched.jsonl"
    with atomic_open(enriched, "w") as handle:
        handle.write("\n".join(enriched_lines) + "\n")
    checklists_path = root / "checklists.json"
    write_json(checklists_path, lists)
    return ToyDermFiles(root=root, manifest=manifest, enriched=enriched, checklists=checklists_path)
