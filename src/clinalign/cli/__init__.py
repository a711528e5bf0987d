"""The ``clinalign`` command line: a thin Typer layer over the library.

Each command lives in its own module under ``clinalign.cli`` and exposes ``register(app)``;
this module only builds the app and maps user errors to exit code 2.
"""

from __future__ import annotations

import importlib
import os
import sys

import typer

from clinalign import __version__
from clinalign.errors import ClinAlignError

# Modules under clinalign.cli that add commands; each defines ``register(app: typer.Typer)``.
_COMMAND_MODULES: tuple[str, ...] = ("enrich", "evaluate", "export", "probe", "quickstart", "score", "train")

TRACEBACK_ENV = "CLINALIGN_TRACEBACK"

app = typer.Typer(
    name="clinalign",
    help=(
        "Clinical reward-aligned finetuning of text-to-image diffusion models, and the Clinical "
        "Alignment Score (CAS) to measure it.\n\n"
        f"Errors caused by input exit with code 2; set {TRACEBACK_ENV}=1 to see a full traceback."
    ),
    no_args_is_help=True,
    add_completion=True,
    # locals can hold API keys: never print them in tracebacks
    pretty_exceptions_show_locals=False,
)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"clinalign {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version_callback, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """clinalign command line."""


for _name in _COMMAND_MODULES:
    importlib.import_module(f"clinalign.cli.{_name}").register(app)


def _click_exception_types() -> tuple[type[BaseException], ...]:
    """The ``ClickException`` classes usage errors can arrive as.

    Recent typer versions bundle their own copy of click (``typer._click``) whose exceptions are not
    ``click.ClickException``; older ones raise the real click's. Both are collected, so a usage error
    is shown as a message (exit 2) whichever click parsed the command line.
    """
    types: list[type[BaseException]] = []
    for module_name in ("typer._click.exceptions", "click.exceptions"):
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        cls = getattr(module, "ClickException", None)
        if isinstance(cls, type) and issubclass(cls, BaseException) and cls not in types:
            types.append(cls)
    return tuple(types)


def _exit_types(name: str) -> tuple[type[BaseException], ...]:
    """typer's ``Exit``/``Abort`` plus the same-named classes of whichever click copies are installed."""
    types: list[type[BaseException]] = [getattr(typer, name)]
    for module_name in ("typer._click.exceptions", "click.exceptions"):
        try:
            cls = getattr(importlib.import_module(module_name), name, None)
        except ImportError:
            continue
        if isinstance(cls, type) and issubclass(cls, BaseException) and cls not in types:
            types.append(cls)
    return tuple(types)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: run the app, turning :class:`ClinAlignError` into exit code 2."""
    try:
        # in non-standalone mode click returns the code of a typer.Exit instead of exiting
        code = app(args=argv, prog_name="clinalign", standalone_mode=False)
        if isinstance(code, int) and code:
            if code == 130:
                typer.echo("Interrupted.", err=True)
            sys.exit(code)
    except ClinAlignError as exc:
        if os.environ.get(TRACEBACK_ENV):
            raise
        typer.echo(f"Error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except _exit_types("Exit") as exc:
        sys.exit(getattr(exc, "exit_code", 0))
    except _exit_types("Abort"):
        typer.echo("Aborted.", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        typer.echo("Interrupted.", err=True)
        sys.exit(130)
    except _click_exception_types() as exc:
        # usage errors (unknown command/option, missing or invalid value) arrive here in
        # non-standalone mode: usage line, help hint and one "Error: ..." line, exit 2
        exc.show()  # type: ignore[attr-defined]
        sys.exit(getattr(exc, "exit_code", 2))
