"""Install clinalign as a user would and run it: the check behind ``make wheel-check`` (part of ``make test``).

1. Build the sdist from the checkout, unpack it, and build the wheel from the unpacked sdist (what
   ``pip install clinalign`` does from an index), offline: ``--no-build-isolation`` uses the dev
   environment's setuptools.
2. Install the wheel with ``--no-deps`` into a throwaway ``--target`` folder; the dev environment
   supplies the dependencies.
3. From a temporary folder outside the checkout, with ``PYTHONPATH`` set to the target only, check
   that ``import clinalign`` resolves inside the target (never the editable checkout), then run the
   installed console script: ``clinalign --help``, ``clinalign --version`` and
   ``clinalign quickstart --fast``, the last under umask 027: every file it writes (report.html,
   PNGs, LoRA safetensors, manifests, JSON) must have mode 0640, as a plain ``open()`` would give.

Usage: ``python .ci/wheel_check.py [--keep] [--skip-quickstart]``. Exit code 0 when everything
passed; otherwise the failing step's output is printed and the exit code is 1.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_PIP = (sys.executable, "-m", "pip")


class CheckFailed(RuntimeError):
    """A step of the wheel check failed; the message says which and shows its output."""


def run(cmd: list[str], *, cwd: Path, env: dict[str, str] | None = None, timeout: float = 900, umask: int = -1) -> str:
    """Run ``cmd`` (under ``umask`` when >= 0); return its stdout, or raise :class:`CheckFailed` on failure."""
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, umask=umask)
    if proc.returncode != 0:
        raise CheckFailed(
            f"command failed (exit {proc.returncode}): {' '.join(cmd)}\n"
            f"--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
        )
    return proc.stdout


def build_sdist(out_dir: Path, *, root: Path = ROOT) -> Path:
    """Build the sdist of ``root`` into ``out_dir`` with the installed setuptools (no network)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    code = "import sys; from setuptools import build_meta; print(build_meta.build_sdist(sys.argv[1]))"
    name = run([sys.executable, "-c", code, str(out_dir)], cwd=root).strip().splitlines()[-1]
    return out_dir / name


def unpack_sdist(sdist: Path, out_dir: Path) -> Path:
    """Unpack ``sdist`` into ``out_dir`` and return its single top-level folder."""
    with tarfile.open(sdist) as archive:
        archive.extractall(out_dir, filter="data")
    (top,) = [p for p in out_dir.iterdir() if p.is_dir()]
    return top


def build_wheel(source: Path, out_dir: Path) -> Path:
    """Build the wheel of the project at ``source`` into ``out_dir`` (no dependencies, no isolation)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    run(
        [*_PIP, "wheel", "--quiet", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(out_dir), str(source)],
        cwd=source,
    )
    (wheel,) = out_dir.glob("clinalign-*.whl")
    return wheel


def build_sdist_and_wheel(work: Path, *, root: Path = ROOT) -> tuple[Path, Path]:
    """The sdist of ``root`` and the wheel built from that sdist, both under ``work``."""
    sdist = build_sdist(work / "dist", root=root)
    source = unpack_sdist(sdist, work / "sdist")
    return sdist, build_wheel(source, work / "dist")


def wheel_names(wheel: Path) -> set[str]:
    """The member names of a wheel (a zip file)."""
    with zipfile.ZipFile(wheel) as archive:
        return set(archive.namelist())


def sdist_names(sdist: Path) -> set[str]:
    """The member names of an sdist, relative to its top-level folder."""
    with tarfile.open(sdist) as archive:
        return {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}


def isolated_env(target: Path) -> dict[str, str]:
    """The environment for running the installed wheel: only ``target`` on ``PYTHONPATH``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLINALIGN_")}
    env.update(PYTHONPATH=str(target), PYTHONNOUSERSITE="1", PYTHONSAFEPATH="1", HF_HUB_OFFLINE="1")
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def check_installed(wheel: Path, work: Path, *, quickstart: bool = True) -> None:
    """Install ``wheel`` into ``work/target`` and run it from ``work/run``; raise :class:`CheckFailed` on a problem."""
    target, cwd = work / "target", work / "run"
    cwd.mkdir(parents=True, exist_ok=True)
    run([*_PIP, "install", "--quiet", "--no-deps", "--no-index", "--target", str(target), str(wheel)], cwd=cwd)
    env = isolated_env(target)

    where = run([sys.executable, "-c", "import clinalign; print(clinalign.__file__)"], cwd=cwd, env=env).strip()
    if not Path(where).resolve().is_relative_to(target.resolve()):
        raise CheckFailed(f"`import clinalign` resolved to {where}, not inside the installed target {target}.")
    print(f"import clinalign -> {where}")

    script = target / "bin" / "clinalign"
    if not script.is_file():
        raise CheckFailed(f"the wheel installed no console script at {script}.")
    help_text = run([str(script), "--help"], cwd=cwd, env=env)
    for command in ("quickstart", "train", "score-cas", "enrich"):
        if command not in help_text:
            raise CheckFailed(f"`clinalign --help` does not list the {command!r} command:\n{help_text}")
    print(run([str(script), "--version"], cwd=cwd, env=env).strip())

    if quickstart:
        out = cwd / "quickstart"
        start = time.monotonic()
        run([str(script), "quickstart", "--fast", "--out", str(out)], cwd=cwd, env=env, timeout=1800, umask=0o027)
        for name in ("report.html", "summary.json"):
            if not (out / name).is_file():
                raise CheckFailed(f"`clinalign quickstart --fast` finished without writing {out / name}.")
        files = [p for p in out.rglob("*") if p.is_file()]
        modes = {p: p.stat().st_mode & 0o777 for p in files}
        wrong = [f"{p.relative_to(out)}: {oct(mode)}" for p, mode in modes.items() if mode != 0o640]
        if wrong:
            raise CheckFailed(f"under umask 027 these quickstart outputs are not mode 0o640: {wrong[:20]}")
        kinds = sorted({p.suffix for p in files})
        print(f"all {len(files)} quickstart outputs ({', '.join(kinds)}) have mode 0o640 under umask 027")
        print(f"clinalign quickstart --fast from the installed wheel: ok ({time.monotonic() - start:.0f} s)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="Keep the temporary folder (printed) for inspection.")
    parser.add_argument("--skip-quickstart", action="store_true", help="Only install and run --help/--version.")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="clinalign-wheel-check-"))
    try:
        sdist, wheel = build_sdist_and_wheel(work)
        print(f"built {sdist.name} and {wheel.name}")
        check_installed(wheel, work, quickstart=not args.skip_quickstart)
    except CheckFailed as exc:
        print(f"wheel check FAILED: {exc}", file=sys.stderr)
        print(f"(files kept in {work})", file=sys.stderr)
        return 1
    if args.keep:
        print(f"files kept in {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    print("wheel check passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
