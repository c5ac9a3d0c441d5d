"""`trustauthority backup …`: the service in one encrypted file, and a new data dir from it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from trustauthority.cli.connect import handled
from trustauthority.cli.output import console, print_json, require_directory

app = typer.Typer(help="Back up a service into one encrypted file; restore it elsewhere.",
                  no_args_is_help=True)

DataDir = Annotated[Path, typer.Option("--data-dir", "-d", help="The service's data directory.",
                                       envvar="TA_DATA_DIR")]
KeyFile = Annotated[Path, typer.Option(
    "--key-file", help="The backup key: a file of at least 16 bytes, owner-only (make one with "
                       "`ta backup new-key`). Keep it apart from the backups.")]
Json = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


@app.command("new-key")
def new_key(path: Annotated[Path, typer.Argument(help="Where to write the key (not replaced).")],
            as_json: Json = False) -> None:
    """Write a random backup key (owner-only).

    Example: `ta backup new-key /root/ta-backup.key`
    """
    from trustauthority.service.backup import new_backup_key

    with handled(as_json):
        new_backup_key(path)
    if as_json:
        print_json({"ok": True, "key_file": str(path)})
        return
    # escaped, or markup=False: the paths are the user's, and "[/]" in one is no Rich markup
    console.print(f"Backup key written to {path}. Store a copy offline: without it no backup "
                  "opens.", highlight=False, markup=False)


@app.command("create")
def create(
    file: Annotated[Path, typer.Argument(help="The backup file to write (not replaced).")],
    data_dir: DataDir,
    key_file: KeyFile,
    as_json: Json = False,
) -> None:
    """Snapshot the service (store, master key, TLS files, config) into one encrypted file.

    The service may keep running: the store is read in one consistent transaction.

    Example: `ta backup create /backup/ta-$(date +%F).tab --data-dir /var/lib/trustauthority
    --key-file /root/ta-backup.key`
    """
    from trustauthority.service.backup import create_backup, read_backup_key

    require_directory(data_dir, "--data-dir", as_json=as_json)
    with handled(as_json):
        summary = create_backup(data_dir, file, read_backup_key(key_file))
    rows = sum(summary.tables.values())
    if as_json:
        print_json({"ok": True, "file": str(summary.path), "created_at": summary.created_at,
                    "rows": summary.tables, "bytes": summary.size})
        return
    console.print(f"[bold green]Backed up[/] {escape(str(data_dir))} to {escape(str(file))}: "
                  f"{rows} rows in {len(summary.tables)} tables, {summary.size:,} bytes, "
                  f"encrypted with {escape(str(key_file))}.", highlight=False)


@app.command("restore")
def restore(
    file: Annotated[Path, typer.Argument(help="The backup file.")],
    data_dir: DataDir,
    key_file: KeyFile,
    database: Annotated[str | None, typer.Option(
        help="Database URL to restore into (an empty one); default: SQLite in the new data dir "
             "when the backup came from SQLite.")] = None,
    as_json: Json = False,
) -> None:
    """Restore a backup into a new data directory; then `ta serve` it.

    Hosts keep their identities, credentials and workload keys: they attest and unlock as
    before once the service answers at the same address.

    Example: `ta backup restore ta-2026-11-29.tab --data-dir /var/lib/trustauthority
    --key-file /root/ta-backup.key`
    """
    from trustauthority.service.backup import read_backup_key, restore_backup

    require_directory(data_dir, "--data-dir", as_json=as_json)
    with handled(as_json):
        summary = restore_backup(file, data_dir, read_backup_key(key_file), database)
    rows = sum(summary.tables.values())
    if as_json:
        print_json({"ok": True, "data_dir": str(summary.path), "backup_created_at":
                    summary.created_at, "rows": summary.tables})
        return
    console.print(f"[bold green]Restored[/] the backup of {summary.created_at} into "
                  f"{escape(str(summary.path))}: {rows} rows.", highlight=False)
    console.print(f"  start it: ta serve --data-dir {summary.path}", highlight=False,
                  markup=False)
