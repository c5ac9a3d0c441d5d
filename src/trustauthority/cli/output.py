"""Shared CLI output: Rich for people, JSON for scripts, one-line errors with stable exit codes."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn

from pydantic import BaseModel
from rich.console import Console, RenderableType
from rich.markup import escape
from rich.style import Style
from rich.table import Table
from rich.text import Text

from trustauthority.errors import (
    AccessError,
    AuditChainBroken,
    BackendUnavailable,
    EvidenceError,
    KeyReleaseRefused,
    TokenRejected,
    TrustAuthorityError,
    WrappedKeyInvalid,
)
from trustauthority.schemas import FailureOut

#: exit codes every command uses
EXIT_OK = 0
EXIT_REJECTED = 1  # evidence, an audit log or a token was checked and refused
EXIT_USAGE = 2  # bad arguments, unreadable files
EXIT_UNAVAILABLE = 3  # a backend (TPM, key server, service) cannot be reached
EXIT_DENIED = 4  # the service did not accept our credential, or our role may not do this

console = Console()
err_console = Console(stderr=True)


class PlainTable(Table):
    """A Rich table whose text cells are shown as they are.

    Cells hold what hosts, event logs and users wrote (facts, reasons, event descriptions,
    audit details): Rich would read "[green]" in one as markup, and "[/]" as an error that
    ends the command with a traceback. A cell meant to be styled is given as `styled(...)`.
    """

    def add_row(self, *renderables: RenderableType | None, style: str | Style | None = None,
                end_section: bool = False) -> None:
        super().add_row(*(Text(cell) if isinstance(cell, str) else cell for cell in renderables),
                        style=style, end_section=end_section)


def styled(text: str, style: str | None) -> Text:
    """A table cell shown in `style` (none: plain), its text taken literally."""
    return Text(text, style=style or "")


def differences_table(failure: FailureOut, limit: int = 20) -> Table:
    """An attestation failure's differences: what the closest baseline expects, what was found,
    and the event in the log (the first `limit`; the JSON output has them all)."""
    table = PlainTable("component", "PCR", "expected", "found", "event")
    for difference in failure.differences[:limit]:
        table.add_row(difference.component, "-" if difference.pcr is None else str(difference.pcr),
                      difference.expected_label or difference.expected or "-",
                      difference.found_label or difference.found or "-",
                      "-" if difference.event_index is None else str(difference.event_index))
    return table


def print_json(document: Any) -> None:
    sys.stdout.write(json.dumps(document, indent=2, sort_keys=False) + "\n")


def emit(result: BaseModel | Sequence[BaseModel], as_json: bool,
         human: RenderableType) -> None:
    """A command's result: its JSON for scripts, or `human` (text, a table) for people."""
    if as_json:
        print_json([item.model_dump(mode="json") for item in result]
                   if isinstance(result, Sequence) else result.model_dump(mode="json"))
    else:
        console.print(human)


def when(moment: datetime | None) -> str:
    """A time for a table: to the second, "-" for none."""
    return "-" if moment is None else moment.isoformat()[:19].replace("T", " ")


def fail(message: str, code: int = EXIT_USAGE, *, as_json: bool = False,
         error_type: str = "usage_error") -> NoReturn:
    """Print one line (or one JSON object) and exit with `code`."""
    # one line even when a message quotes a server's or a file's text with newlines in it
    message = " ".join(part.strip() for part in message.splitlines() if part.strip())
    if as_json:
        print_json({"ok": False, "error": {"type": error_type, "detail": message}})
    else:
        # escaped: messages quote file names, arguments and server text, and a "[/]" in any of
        # them is not Rich markup (unescaped, it raised MarkupError: a traceback)
        err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False,
                          soft_wrap=True)
    raise SystemExit(code)


def fail_with(error: TrustAuthorityError, *, as_json: bool = False,
              hint: str | None = None) -> NoReturn:
    """Map one of our typed errors onto the CLI's exit codes; `hint` says what to do about it
    where the error itself (raised below the CLI) cannot know."""
    if isinstance(error, EvidenceError | AuditChainBroken | TokenRejected | WrappedKeyInvalid):
        code = EXIT_REJECTED
    elif isinstance(error, AccessError | KeyReleaseRefused) or error.error_type in (
            "unauthenticated", "forbidden"):
        code = EXIT_DENIED
    elif isinstance(error, BackendUnavailable):
        code = EXIT_UNAVAILABLE
    else:
        code = EXIT_USAGE
    message = f"{error}; {hint}" if hint else str(error)
    fail(message, code, as_json=as_json, error_type=error.error_type)


def read_input_file(path: str, *, what: str, max_bytes: int = 64 * 1024 * 1024,
                    as_json: bool = False, allow_stdin: bool = False) -> bytes:
    """Read a user-named file, refusing what cannot be read or is absurdly large; with
    `allow_stdin`, "-" names standard input."""
    try:
        if allow_stdin and path == "-":
            data = sys.stdin.buffer.read(max_bytes + 1)
        else:
            with open(path, "rb") as handle:
                data = handle.read(max_bytes + 1)
    except OSError as exc:
        fail(f"cannot read {what} {path!r}: {exc.strerror or exc}; check the path",
             as_json=as_json)
    if len(data) > max_bytes:
        fail(f"{what} {path!r} is larger than {max_bytes} bytes", as_json=as_json)
    return data


def require_directory(path: Path, option: str, *, as_json: bool = False) -> None:
    """Refuse a directory option that names a file: below the CLI that surfaces as "Not a
    directory" on some file inside it, or "File exists" from mkdir, naming neither the option."""
    if path.exists() and not path.is_dir():
        fail(f"{option} {path} is a file, not a directory; give a directory", as_json=as_json)
