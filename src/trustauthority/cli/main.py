"""The `trustauthority` (alias `ta`) command: one Typer app, grouped like an admin thinks."""

from __future__ import annotations

import typer

from trustauthority import __version__
from trustauthority.cli import demo, eventlog, quote

app = typer.Typer(
    name="trustauthority",
    help="Trust Authority: attest TPM 2.0 hosts and release keys only to hosts trusted right now.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(eventlog.app, name="eventlog")
app.add_typer(quote.app, name="quote")
app.command("demo")(demo.demo)


@app.command("version")
def version() -> None:
    """Print the version.  Example: `ta version`"""
    typer.echo(__version__)


def main() -> None:
    app()
