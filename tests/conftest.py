"""Shared fixtures: tiny models built from configs and saved to disk, no network."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# One CPU thread unless OMP_NUM_THREADS says otherwise (also for the CLI subprocesses tests start). The tiny
# models' ops are too small to gain from intra-op threads, and two OpenMP threads on a busy 2-core machine
# spin-wait on each other: a 16-step tiny training run took 207 s with 2 threads and 5.6 s with 1 under the
# same load. One thread also matches the launched ranks of the distributed tests and docs/toy.md's numbers.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest
import torch

_threads = os.environ["OMP_NUM_THREADS"].split(",")[0].strip()  # OpenMP also allows a nested list "4,2"
torch.set_num_threads(int(_threads) if _threads.isdigit() and int(_threads) > 0 else 1)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory: pytest.TempPathFactory):
    from clinalign.testing import build_tiny_clip

    return build_tiny_clip(tmp_path_factory.mktemp("tiny_clip"))


@pytest.fixture(scope="session")
def tiny_siglip_dir(tmp_path_factory: pytest.TempPathFactory):
    from clinalign.testing import build_tiny_siglip

    return build_tiny_siglip(tmp_path_factory.mktemp("tiny_siglip"))


@pytest.fixture(scope="session")
def tiny_open_clip_dir(tmp_path_factory: pytest.TempPathFactory):
    from clinalign.testing import build_tiny_open_clip

    return build_tiny_open_clip(tmp_path_factory.mktemp("tiny_open_clip"))


@pytest.fixture(scope="session")
def clip_critic(tiny_clip_dir):
    from clinalign.critics import load_critic

    return load_critic(tiny_clip_dir, device="cpu")


@pytest.fixture(scope="session")
def siglip_critic(tiny_siglip_dir):
    from clinalign.critics import load_critic

    return load_critic(tiny_siglip_dir, device="cpu")
