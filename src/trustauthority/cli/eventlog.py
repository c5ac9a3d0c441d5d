"""`trustauthority eventlog ...`: look inside a TCG firmware event log and replay it."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.text import Text

from trustauthority.cli.output import PlainTable, console, fail_with, print_json, read_input_file
from trustauthority.errors import EventLogFormatError
from trustauthority.eventlog import Event, EventLog, parse_event_log, replay, to_jsonable
from trustauthority.eventlog.constants import MAX_LOG_SIZE

app = typer.Typer(
    help="Inspect TCG PC Client firmware event logs (binary_bios_measurements).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

_DESCRIPTION_WIDTH = 100  # characters of decoded data shown per table row
_DIGEST_PREFIX = 16  # hex characters of the digest shown per table row

PathArgument = Annotated[
    str,
    typer.Argument(
        metavar="PATH", show_default=False,
        help="Binary event log, e.g. /sys/kernel/security/tpm0/binary_bios_measurements."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def _load(path: str, as_json: bool) -> EventLog:
    raw_log = read_input_file(path, what="event log", max_bytes=MAX_LOG_SIZE, as_json=as_json)
    try:
        return parse_event_log(raw_log)
    except EventLogFormatError as exc:
        fail_with(exc, as_json=as_json,
                  hint="give a TCG binary event log, e.g. /sys/kernel/security/tpm0/"
                       "binary_bios_measurements")


def _event_json(event: Event) -> dict[str, Any]:
    return {
        "index": event.index,
        "offset": event.offset,
        "pcr": event.pcr,
        "type": event.event_type,
        "type_name": event.type_name,
        "digests": {name: digest.hex() for name, digest in event.digests.items()},
        "data": event.data.hex(),
        "decoded": to_jsonable(event.decoded),
    }


def _one_line(text: str) -> str:
    flat = " ".join(text.split())
    if len(flat) <= _DESCRIPTION_WIDTH:
        return flat
    return flat[: _DESCRIPTION_WIDTH - 1] + "…"


@app.command("show")
def show(path: PathArgument, as_json: JsonOption = False) -> None:
    """Show every event of a log with its data decoded.

    Example: `ta eventlog show /sys/kernel/security/tpm0/binary_bios_measurements --json`
    """
    log = _load(path, as_json)
    if as_json:
        print_json([_event_json(event) for event in log.events])
        return
    bank = "sha256" if "sha256" in log.algorithms else log.algorithms[0]
    # Text() cells: log contents (grub's "[ ... ]" commands) must never be read as Rich markup.
    table = PlainTable(title=Text(f"{path} ({log.format}, {len(log)} events)"),
                       title_justify="left")
    table.add_column("#", justify="right")
    table.add_column("PCR", justify="right")
    table.add_column("type")
    table.add_column(bank, no_wrap=True)
    table.add_column("data")
    for event in log.events:
        digest = event.digests.get(bank)
        table.add_row(str(event.index), str(event.pcr), event.type_name,
                      digest.hex()[:_DIGEST_PREFIX] if digest else "-",
                      Text(_one_line(event.describe())))
    console.print(table)


@app.command("replay")
def replay_command(path: PathArgument, as_json: JsonOption = False) -> None:
    """Replay a log into the PCR values it produces, per bank.

    EV_NO_ACTION events are not extended; a StartupLocality event sets PCR 0's start.

    Example: `ta eventlog replay binary_bios_measurements --json`
    """
    log = _load(path, as_json)
    values = replay(log)
    if as_json:
        print_json({"banks": {bank: {str(pcr): value.hex() for pcr, value in pcrs.items()}
                              for bank, pcrs in values.items()}})
        return
    for bank, pcrs in values.items():
        table = PlainTable(title=bank, title_justify="left")
        table.add_column("PCR", justify="right")
        table.add_column("value", no_wrap=True)
        for pcr, value in pcrs.items():
            table.add_row(str(pcr), value.hex())
        console.print(table)
