"""The ``medsight`` command: one verb per job, each a thin call into the packages.

Each area has its own module here (``data``, ``train``, ...); this one holds the app, the shared
console and the error handling that turns a user's mistake into one message and a non-zero exit.
"""

from __future__ import annotations

import sys

import typer
from rich.console import Console

from medsight.errors import MedsightError

app = typer.Typer(
    help="medsight: deep learning on medical images, from the scanner to the clinician.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)


def say(message: str) -> None:
    console.print(message, highlight=False, markup=False)


def main() -> None:
    """Run the CLI; errors a user can fix print one message (no traceback) and exit non-zero."""
    try:
        app()  # standalone: usage errors print click's message and exit 2
    except MedsightError as err:
        err_console.print(f"error: {err}", highlight=False, markup=False)
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        err_console.print("interrupted.")
        sys.exit(130)


# the areas register their commands on import
from medsight.cli import access, convert, data, explain, models, optimize, pacs, platform, serve, train  # noqa: E402, F401
