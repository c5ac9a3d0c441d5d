"""`ta audit …`: read, export and verify the audit log (online, or offline on a copy)."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer

from trustauthority.audit.chain import AuditEntry
from trustauthority.cli.connect import call, handled
from trustauthority.cli.output import (
    EXIT_REJECTED,
    EXIT_UNAVAILABLE,
    PlainTable,
    console,
    fail,
    print_json,
    styled,
)
from trustauthority.client import TrustAuthorityClient
from trustauthority.errors import AuditChainBroken, BackendUnavailable, ConfigError, UsageError

app = typer.Typer(help="The tamper-evident audit log.", no_args_is_help=True)
Json = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


@app.command("list")
def list_(
    ctx: typer.Context,
    since: Annotated[datetime | None, typer.Option(help="Entries at or after (ISO 8601).")]
    = None,
    action: Annotated[str | None, typer.Option(help="Only this action, e.g. principal.create.")]
    = None,
    principal: Annotated[str | None, typer.Option(help="Only entries by this principal.")]
    = None,
    after: Annotated[int | None, typer.Option(help="Only entries after this sequence.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="At most this many.")] = 100,
    as_json: Json = False,
) -> None:
    """List audit entries.  Example: `ta audit list --action auth.failure`"""
    entries = call(ctx, as_json, lambda client: client.audit_entries(
        since=since, action=action, principal=principal, after=after, limit=limit))
    if as_json:
        print_json([entry.model_dump(mode="json") for entry in entries])
        return
    table = PlainTable("#", "time", "principal", "role", "action", "target", "outcome", "details")
    for entry in entries:
        outcome = styled(entry.outcome, None if entry.outcome == "success" else "red")
        table.add_row(str(entry.sequence), entry.time[:19].replace("T", " "), entry.principal,
                      entry.role, entry.action, entry.target, outcome,
                      json.dumps(entry.details, sort_keys=True)[:60])
    console.print(table)


@app.command("export")
def export(
    ctx: typer.Context,
    jsonl: Annotated[bool, typer.Option("--jsonl", help="JSON lines (the only format).")]
    = True,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="File (default stdout).")]
    = None,
) -> None:
    """Export every entry as JSON lines.  Example: `ta audit export --jsonl -o audit.jsonl`"""
    def write(client: TrustAuthorityClient) -> int:
        try:
            handle = sys.stdout if output is None else output.open("w")
        except OSError as error:
            fail(f"cannot write {output}: {error.strerror or error}; check --output")
        count = 0
        try:
            for entry in client.audit_export():
                handle.write(json.dumps(entry, sort_keys=True) + "\n")
                count += 1
        finally:
            if output is not None:
                handle.close()
        return count

    count = call(ctx, False, write)
    if output is not None:
        console.print(f"Exported {count} entries to {output}", markup=False)  # a user's path


def _verify_offline(database: str, audit_key: Path | None) -> dict[str, object]:
    from cryptography.hazmat.primitives.asymmetric import ec

    from trustauthority.service.audit import AuditLog
    from trustauthority.service.keys import ServiceKeys, key_id, load_public_pem
    from trustauthority.service.platform import utc_now
    from trustauthority.store.db import Database

    pinned: dict[str, ec.EllipticCurvePublicKey] | None = None
    if audit_key is not None:
        try:
            public = load_public_pem(audit_key.read_text())
        except OSError as error:
            raise UsageError(f"cannot read --audit-key {audit_key}: {error.strerror}; check the "
                             "path") from None
        except (UnicodeDecodeError, ConfigError):
            raise UsageError(f"--audit-key {audit_key} is not an ECDSA public key in PEM; give "
                             "the service's audit public key") from None
        pinned = {key_id(public): public}

    class _NoMasterKey:
        """Offline verification needs public keys only; nothing is ever opened."""

        key_id = "none"

        def seal(self, plaintext: bytes, *, purpose: str) -> bytes:
            raise UsageError("offline verification does not seal")

        def open(self, sealed: bytes, *, purpose: str) -> bytes:
            raise UsageError("offline verification does not open secrets")

    db = Database(database)
    copy = db.sqlite_file
    if copy is not None and not copy.is_file():
        # SQLite would create an empty database there and report it broken
        raise UsageError(f"{copy} does not exist; give a copy of the service's database, e.g. "
                         "--database sqlite:///ABSOLUTE/PATH/trustauthority.db")
    try:
        log = AuditLog(ServiceKeys(_NoMasterKey(), utc_now), utc_now)
        with db.session(read_only=True) as session:
            result = log.verify(session, pinned)
    except BackendUnavailable as error:  # also what a file that is no database of ours gives
        raise BackendUnavailable(f"{error}; check that --database is a copy of the service's "
                                 "database and can be read") from None
    finally:
        db.dispose()
    return {"ok": True, "entries": result.entries, "head_sequence": result.head_sequence,
            "head_hash": result.head_hash, "checkpoints": result.checkpoints,
            "last_checkpoint": result.last_checkpoint, "unsigned_tail": result.unsigned_tail}


def _verify_export(path: Path) -> dict[str, object]:
    """The chain of an `audit export --jsonl` file (links only: checkpoints live in the store)."""
    from trustauthority.audit.chain import entry_from_json, verify_chain

    try:
        handle = path.open()
    except OSError as error:
        raise UsageError(f"cannot read --jsonl {path}: {error.strerror or error}; check the "
                         "path") from None

    def entries() -> Iterator[AuditEntry]:
        with handle:
            try:
                for number, line in enumerate(handle, 1):
                    if line.strip():
                        try:
                            document = json.loads(line)
                        except ValueError:
                            raise UsageError(f"line {number}: not JSON") from None
                        yield entry_from_json(document, number)
            except UnicodeDecodeError:
                raise UsageError("not UTF-8 text") from None

    try:
        summary = verify_chain(entries())
    except UsageError as error:  # the line's problem, and where it is: the file and line
        raise UsageError(f"{path}: {error}; give a file `ta audit export --jsonl` wrote"
                         ) from None
    return {"ok": True, "entries": summary.entries,
            "head_sequence": -1 if summary.last_sequence is None else summary.last_sequence,
            "head_hash": summary.head_hash, "checkpoints": 0, "last_checkpoint": None,
            "unsigned_tail": summary.entries}


@app.command("verify")
def verify(
    ctx: typer.Context,
    database: Annotated[str | None, typer.Option(
        help="Verify a copy offline: its database URL (e.g. sqlite:///copy.db).")] = None,
    jsonl: Annotated[Path | None, typer.Option(
        help="Verify an `audit export --jsonl` file offline (the chain's links).")] = None,
    audit_key: Annotated[Path | None, typer.Option(
        help="Offline: trust only this audit public key (PEM), not the copy's own.")] = None,
    as_json: Json = False,
) -> None:
    """Check the hash chain and signed checkpoints; name the first broken link.

    Examples: `ta audit verify` (ask the service), `ta audit verify --database sqlite:///c.db`
    (a copy of the store, checkpoints included), `ta audit verify --jsonl audit.jsonl`.
    """
    if database is not None or jsonl is not None:
        with handled(as_json):
            try:
                report = (_verify_offline(database, audit_key) if database is not None
                          else _verify_export(jsonl) if jsonl is not None else {})
            except AuditChainBroken as broken:
                report = {"ok": False, "broken_at": broken.sequence, "detail": str(broken)}
    else:
        report = call(ctx, as_json, lambda client: client.audit_verify()).model_dump()
    if as_json:
        print_json(report)
    elif report["ok"]:
        signed = (f"{report['checkpoints']} signed checkpoints, the last at entry "
                  f"#{report['last_checkpoint']} ({report['unsigned_tail']} entries after it)"
                  if report["checkpoints"] else "no signed checkpoint yet")
        console.print(f"[bold green]audit log intact[/]: {report['entries']} entries, head "
                      f"#{report['head_sequence']} {str(report['head_hash'])[:16]}…; {signed}")
    if not report["ok"]:
        if as_json:
            raise SystemExit(EXIT_REJECTED)
        fail(f"audit log broken at entry {report['broken_at']}: {report['detail']}",
             EXIT_REJECTED, error_type="audit_chain_broken")


@app.command("public-key")
def public_key(
    ctx: typer.Context,
    out: Annotated[Path | None, typer.Option(
        help="Write the active key's PEM to this file (else it is printed).")] = None,
    as_json: Json = False,
) -> None:
    """The public key that signs the log's checkpoints: record it when you deploy, and pin it
    when verifying a copy (`audit verify --database … --audit-key FILE`). `--json` lists
    every audit key, retired ones included.  Example: `ta audit public-key --out audit-key.pem`
    """
    keys = call(ctx, as_json, lambda client: client.audit_keys())
    listed = [key.model_dump(mode="json") for key in keys]
    if as_json and out is None:
        print_json(listed)
        return
    active = next((key for key in keys if key.active), None)
    if active is None:
        fail("the service has no active audit key; run `trustauthority init` on its data dir",
             EXIT_UNAVAILABLE, as_json=as_json)
    if out is None:
        sys.stdout.write(active.public_pem)
        return
    try:
        out.write_text(active.public_pem)
    except OSError as error:
        fail(f"cannot write {out}: {error.strerror or error}; check the path", as_json=as_json)
    if as_json:
        print_json(listed)
    else:
        console.print(f"audit public key {active.kid} written to {out}", markup=False)


@app.command("checkpoint")
def checkpoint(ctx: typer.Context, as_json: Json = False) -> None:
    """Sign the current head of the chain now.  Example: `ta audit checkpoint`"""
    made = call(ctx, as_json, lambda client: client.audit_checkpoint())
    if as_json:
        print_json(made.model_dump())
    elif made.created:
        console.print(f"Signed checkpoint at entry #{made.sequence} (key {made.kid}).")
    else:
        console.print("The head is already signed (or the log is empty).")
