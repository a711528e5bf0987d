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
_COMMAND_MODULES: tuple[str, ...] = ("enrich", "evaluate", "probe", "quickstart", "score", "train")

TRACEBACK_ENV = "CLINALIGN_TRACEBACK"

app = typer.Typer(
    name="clinalign",
    help=(
        "Clinical reward-aligned finetuning of text-to-image diffusion models, and the Clinical "
        "Alignment Score (CAS) to measure it.\n\n"
        f"Errors caused by input exit with code 2; set {TRACEBACK_ENV}=1 to see a full traceback."
    ),
    no_args_is_help=True,
    add_completion=False,
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
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        typer.echo("Aborted.", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        typer.echo("Interrupted.", err=True)
        sys.exit(130)
    except Exception as exc:  # click usage errors arrive here in non-standalone mode
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise
