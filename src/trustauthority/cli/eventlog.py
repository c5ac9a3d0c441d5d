"""`trustauthority eventlog ...`."""

from __future__ import annotations

import typer

app = typer.Typer(help="eventlog commands", no_args_is_help=True)
