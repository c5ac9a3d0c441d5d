"""CLI tables show what hosts, logs and users wrote as it is: never as Rich markup."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from trustauthority.cli.host import host_table
from trustauthority.cli.output import PlainTable, styled
from trustauthority.schemas import HostOut


def _render(table: Table) -> Console:
    console = Console(record=True, width=200, color_system="truecolor")
    console.print(table)
    return console


def test_markup_in_a_cell_is_shown_literally_and_a_stray_closing_tag_is_no_error() -> None:
    table = PlainTable("fact", "value")
    table.add_row("kernel", "[green]trusted[/green]")
    table.add_row("boot", "grub [/] menu")  # Rich alone raises MarkupError on this
    console = _render(table)
    text = console.export_text(clear=False)
    assert "[green]trusted[/green]" in text
    assert "grub [/] menu" in text
    assert "\x1b[32m" not in console.export_text(styles=True)  # and nothing turned green


def test_a_styled_cell_keeps_its_text_and_gets_its_style() -> None:
    table = PlainTable("state")
    table.add_row(styled("untrusted [x]", "red"))
    table.add_row(styled("plain", None))
    console = _render(table)
    assert "untrusted [x]" in console.export_text(clear=False)
    assert "\x1b[31m" in console.export_text(styles=True)


def test_a_host_reason_from_the_evidence_is_not_markup() -> None:
    host = HostOut.model_validate({
        "id": "h-1", "name": "web-1", "state": "untrusted", "cluster": "prod",
        "state_reason": "kernel cmdline [bold]quiet[/]", "last_attested_at": None,
        "enrolled_at": "2026-01-01T00:00:00Z", "facts": {}, "ek_fingerprint": "ab",
        "approved_by": None, "binding_key_thumbprint": None})
    assert "kernel cmdline [bold]quiet[/]" in _render(host_table([host])).export_text()
