"""`trustauthority kms serve`: an embedded KMIP key server (PyKMIP's) to try key release with.

Not for production keys: PyKMIP's server keeps its keys in a plain SQLite file. Point Trust
Authority at a real KMS (or an HSM) for those.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from sqlalchemy.exc import SQLAlchemyError

from trustauthority.cli.connect import handled
from trustauthority.cli.output import console, fail, require_directory
from trustauthority.keyserver.embedded import (
    DEFAULT_HOST,
    DEFAULT_PORT,
    KmsFiles,
    prepare_kms_dir,
    serve_kms,
)

app = typer.Typer(no_args_is_help=True)


@app.callback()
def kms() -> None:
    """An embedded KMIP key server (PyKMIP) for trying trusted key release.

    For demos and tests: its keys sit in a plain SQLite file.

    Example: `ta kms serve --data-dir ./kms`
    """


def default_data_dir() -> Path:
    """`TA_DATA_DIR-kms` beside the service's data dir when TA_DATA_DIR is set (the KMS holds the
    primary keys, so it stays out of the service's directory and its backups); else
    `$XDG_DATA_HOME/trustauthority/kms` (~/.local/share/...)."""
    if service_dir := os.environ.get("TA_DATA_DIR"):
        service = Path(service_dir).resolve()
        return service.with_name(service.name + "-kms")
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "trustauthority" / "kms"


def serve(
    data_dir: Annotated[Path | None, typer.Option(
        "--data-dir", "-d", envvar="TA_KMS_DATA_DIR", show_default=False,
        help="The KMS's directory: CA, certificates, server.conf, key database, server.log "
             "(default: $TA_DATA_DIR-kms, or ~/.local/share/trustauthority/kms).")] = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = DEFAULT_HOST,
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")]
    = DEFAULT_PORT,
    database: Annotated[Path | None, typer.Option(
        help="Key database (SQLite) to use instead of DATA_DIR/kms.db; two servers sharing one "
             "act as a replicated pair.")] = None,
) -> None:
    """Run a KMIP server in the foreground until Ctrl-C or SIGTERM.

    The first run creates its CA and certificates; later runs reuse them.

    Example: `ta kms serve --data-dir ./kms --port 5696`
    """
    directory = data_dir or default_data_dir()
    require_directory(directory, "--data-dir")
    with handled(False):
        try:
            files = prepare_kms_dir(directory, host=host, port=port, database=database)
        except OSError as error:
            fail(f"cannot prepare the KMS's directory {directory}: {error.strerror or error}; "
                 "give another --data-dir")
        try:
            serve_kms(files, on_ready=lambda: _print_ready(files, host, port))
        except SQLAlchemyError as error:  # PyKMIP opens its key database as it starts
            reason = getattr(error, "orig", None) or type(error).__name__
            fail(f"the KMS cannot use its key database {files.database} ({reason}); give "
                 "--database a SQLite file in a directory that exists, or leave it out")
    console.print("KMS stopped.")


def _print_ready(files: KmsFiles, host: str, port: int) -> None:
    dial = DEFAULT_HOST if host in ("0.0.0.0", "") else host  # noqa: S104 - not a bind
    # escaped, or markup=False: the paths are the user's, and "[/]" in one is no Rich markup
    console.print(f"[bold green]KMIP server listening[/] on {escape(host)}:{port} "
                  f"(data: {escape(str(files.data_dir))}, log: {escape(str(files.log))})",
                  highlight=False, soft_wrap=True)
    console.print("Register it with Trust Authority (as a trust-admin):", highlight=False)
    console.print(f"  trustauthority key-server add kms1 --kmip {dial}:{port} "
                  f"--ca {files.ca_certificate} --cert {files.client_certificate} "
                  f"--key {files.client_key}", highlight=False, soft_wrap=True, markup=False)
    console.print("Stop it with Ctrl-C.", highlight=False)


app.command("serve")(serve)
