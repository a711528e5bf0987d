"""The sdist and the wheel carry what the installed package and its users need.

The wheel is built from the sdist (as pip does from an index), so a file missing from the sdist's
package data is also missing here. ``make wheel-check`` goes further: it installs that wheel out of
tree and runs ``clinalign quickstart --fast`` with it.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "src" / "clinalign"


def _wheel_check_module():
    spec = importlib.util.spec_from_file_location("_clinalign_wheel_check", ROOT / ".ci" / "wheel_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    check = _wheel_check_module()
    sdist, wheel = check.build_sdist_and_wheel(tmp_path_factory.mktemp("packaging"))
    return check.sdist_names(sdist), check.wheel_names(wheel)


def _package_files() -> list[str]:
    """Every file under src/clinalign that ships (sources and the data files the code opens)."""
    return sorted(
        f"clinalign/{p.relative_to(PACKAGE).as_posix()}"
        for p in PACKAGE.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix not in (".pyc", ".pyo")
    )


def test_package_tree_has_data_files():
    data = [f for f in _package_files() if not f.endswith(".py")]
    # the files the code opens at run time: toy preset, enrichment presets, shipped toy models
    assert "clinalign/toy/toyderm.yaml" in data
    assert any(f.startswith("clinalign/enrich/presets/") and f.endswith(".yaml") for f in data)
    assert "clinalign/toy/assets/base/unet/diffusion_pytorch_model.safetensors" in data
    assert "clinalign/py.typed" in data


def test_wheel_contains_every_package_file(built):
    _, wheel = built
    missing = [f for f in _package_files() if f not in wheel]
    assert not missing, f"files under src/clinalign missing from the wheel: {missing}"
    assert not [n for n in wheel if "__pycache__" in n or n.endswith(".pyc")]
    assert any(n.endswith(".dist-info/entry_points.txt") for n in wheel)


def _referenced_repo_files() -> set[str]:
    """docs/ and examples/ paths named by the CLI help texts and the README."""
    pattern = re.compile(r"\b((?:docs|examples)/[\w./-]+\.(?:md|py|yaml|png))")
    texts = [p.read_text(encoding="utf-8") for p in (PACKAGE / "cli").glob("*.py")]
    texts.append((ROOT / "README.md").read_text(encoding="utf-8"))
    return {m for text in texts for m in pattern.findall(text)}


def test_sdist_ships_docs_and_examples_the_help_points_to(built):
    sdist, _ = built
    referenced = _referenced_repo_files()
    assert "examples/craft_chexpert.yaml" in referenced  # `clinalign train --help` names it
    for name in sorted(referenced):
        assert (ROOT / name).is_file(), f"{name} is referenced but does not exist in the checkout"
        assert name in sdist, f"{name} is referenced by the CLI help or README but not in the sdist"
    for folder in ("docs", "examples"):
        for path in (ROOT / folder).rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts:
                assert path.relative_to(ROOT).as_posix() in sdist
    for name in ("README.md", "CHANGELOG.md", "LICENSE", "pyproject.toml", "mkdocs.yml", "Makefile"):
        assert name in sdist
