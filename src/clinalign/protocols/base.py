"""Protocol definitions: what a published protocol fixes per dataset, and the registry of protocols."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from clinalign.errors import ConfigError

# The evaluator CAS uses by default across clinalign (README, docs, examples). The CRAFT paper evaluates
# with "SigLIP" without naming the variant: this id is our assumption (its text tower reads 64 tokens).
DEFAULT_EVALUATOR = "google/siglip-base-patch16-224"
# The training critic of the CRAFT paper (MedSigLIP); its text tower also reads 64 tokens.
DEFAULT_CRITIC = "google/medsiglip-448"


@dataclass(frozen=True)
class SubsetDesign:
    """How a protocol picks the images of one dataset and splits them.

    Attributes:
        classes: the protocol's classes (records of other labels are left out).
        split: ``"grouped"``: a seeded, label-stratified split by ``group`` with ``fractions``;
            ``"file"``: the ids and splits of a split file (``split_file``, CSV id,split), required.
        fractions: split name -> fraction (``"grouped"``).
        group: ``"patient"`` (the record's patient id), ``"image-hash"`` (near-duplicate photographs
            by average hash; a ``group_column`` in the CSV wins when present) or ``"breakhis-filename"``
            (the patient code in a BreakHis file name).
        group_column: a dataset CSV column that, when present, gives the groups instead.
        sizes: split -> number of records, sampled per class as evenly as possible (seeded).
        label_map: renames of loader labels to the protocol's class names.
        loader_options: options for the dataset loader (e.g. ``magnification="100X"``).
        split_file: default split file name, looked up in the data root (``"file"``).
    """

    classes: tuple[str, ...]
    split: Literal["grouped", "file"] = "grouped"
    fractions: Mapping[str, float] = field(default_factory=lambda: {"train": 0.5, "test": 0.5})
    group: Literal["patient", "image-hash", "breakhis-filename"] = "patient"
    group_column: str | None = None
    sizes: Mapping[str, int] | None = None
    label_map: Mapping[str, str] = field(default_factory=dict)
    loader_options: Mapping[str, Any] = field(default_factory=dict)
    split_file: str | None = None


@dataclass(frozen=True)
class DatasetProtocol:
    """One dataset under a protocol: its enrichment preset and its data subset/split design."""

    dataset: str
    preset: str
    subset: SubsetDesign


@dataclass(frozen=True)
class ProbeProtocol:
    """How the DD probe is trained under a protocol (``clinalign probe train``)."""

    val_fraction: float
    epochs: int
    lr: float
    batch_size: int


@dataclass(frozen=True)
class ScoringProtocol:
    """How CAS is computed under a protocol (``clinalign score-cas``)."""

    evaluator: str
    real_split: str
    dd_mode: Literal["accuracy", "probability"]
    tau_quantile: float


@dataclass(frozen=True)
class Protocol:
    """A named protocol: per-dataset presets and subsets, probe and scoring settings, and its assumptions.

    ``critic_max_tokens`` is the text limit of the protocol's critic and evaluator (SigLIP/MedSigLIP: 64),
    used for t_ep and t_c when their tokenizers are not given. ``assumptions`` lists every value the
    source does not publish and that is our own choice.
    """

    name: str
    description: str
    datasets: Mapping[str, DatasetProtocol]
    probe: ProbeProtocol
    scoring: ScoringProtocol
    critic_max_tokens: int = 64
    assumptions: tuple[str, ...] = ()

    def for_dataset(self, dataset: str) -> DatasetProtocol:
        if dataset not in self.datasets:
            raise ConfigError(
                f"protocol {self.name!r} covers the datasets {sorted(self.datasets)}, not {dataset!r}. Drop "
                "--protocol to use the library presets, or pick one of those datasets."
            )
        return self.datasets[dataset]

    def for_preset(self, preset: str) -> DatasetProtocol | None:
        return next((d for d in self.datasets.values() if d.preset == preset), None)


CRAFT_PAPER = Protocol(
    name="craft-paper",
    description="The CRAFT paper's protocol: App. B schemas, App. C checklists, §4.1.1/App. N subsets and splits.",
    datasets={
        "fitzpatrick17k": DatasetProtocol(
            dataset="fitzpatrick17k",
            preset="fitzpatrick17k_craft_paper",
            subset=SubsetDesign(
                classes=(
                    "actinic keratosis",
                    "eczema",
                    "erythema multiforme",
                    "scabies",
                    "psoriasis",
                    "squamous cell carcinoma",
                    "lichen planus",
                    "basal cell carcinoma",
                    "allergic contact dermatitis",
                    "lupus erythematosus",
                    "sarcoidosis",
                    "folliculitis",
                    "scleroderma",
                    "keloid",
                    "mycosis fungoides",
                    "pityriasis rosea",
                    "granuloma annulare",
                    "acne vulgaris",
                    "vitiligo",
                    "melanoma",
                ),
                group="image-hash",
                group_column="group",
            ),
        ),
        "chexpert": DatasetProtocol(
            dataset="chexpert",
            preset="chexpert_craft_paper",
            subset=SubsetDesign(
                classes=("Cardiomegaly", "Pleural Effusion", "Pneumonia", "No Finding"),
                group="patient",
                sizes={"train": 495, "test": 495},
                loader_options={"frontal_only": True, "uncertain": "exclude"},
            ),
        ),
        "breakhis": DatasetProtocol(
            dataset="breakhis",
            preset="breakhis_craft_paper",
            subset=SubsetDesign(
                classes=(
                    "adenosis",
                    "fibroadenoma",
                    "phyllodes tumor",
                    "tubular adenoma",
                    "ductal carcinoma",
                    "lobular carcinoma",
                    "mucinous carcinoma",
                    "papillary carcinoma",
                ),
                group="breakhis-filename",
                loader_options={"magnification": "100X"},
            ),
        ),
        "origa": DatasetProtocol(
            dataset="origa",
            preset="origa_craft_paper",
            subset=SubsetDesign(
                classes=("glaucoma", "non-glaucoma"),
                split="file",
                label_map={"normal": "non-glaucoma"},
                split_file="origa_split.csv",
            ),
        ),
    },
    probe=ProbeProtocol(val_fraction=0.0, epochs=50, lr=1e-3, batch_size=256),
    scoring=ScoringProtocol(evaluator=DEFAULT_EVALUATOR, real_split="test", dd_mode="accuracy", tau_quantile=0.25),
    assumptions=(
        f"evaluator: the paper names SigLIP without the variant; {DEFAULT_EVALUATOR} is our assumption.",
        "fitzpatrick17k classes: 16 of the 20 are our assumption (see the preset's assumptions).",
        "fitzpatrick17k grouping: the public CSV has no patient id; a 'group' column is used when present, "
        "otherwise near-duplicate photographs are grouped by an 8x8 average image hash (our choice).",
        "chexpert: 495 train / 495 test images spread evenly over the 4 classes, patient-disjoint; the paper's "
        "'495/495' design is read this way by us.",
        "origa: the official 454/196 split is read from a split file (id,split) the user supplies.",
        "LoRA rank and learning rate: not published; the example configs' values are ours.",
    ),
)

_PROTOCOLS: dict[str, Protocol] = {CRAFT_PAPER.name: CRAFT_PAPER}


def register_protocol(protocol: Protocol, *, overwrite: bool = False) -> None:
    """Make ``protocol`` available by its name (``--protocol NAME``)."""
    if protocol.name in _PROTOCOLS and not overwrite:
        raise ConfigError(f"a protocol named {protocol.name!r} is already registered; pass overwrite=True.")
    _PROTOCOLS[protocol.name] = protocol


def available_protocols() -> list[str]:
    return sorted(_PROTOCOLS)


def get_protocol(name: str) -> Protocol:
    if name not in _PROTOCOLS:
        raise ConfigError(f"unknown protocol {name!r}; choose one of {available_protocols()}.")
    return _PROTOCOLS[name]
