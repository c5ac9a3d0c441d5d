"""`trustauthority quote verify`: offline verification of a TPM2_Quote (and its event log)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from trustauthority.cli.keyfiles import load_public_area
from trustauthority.cli.output import (
    PlainTable,
    console,
    fail,
    fail_with,
    print_json,
    read_input_file,
)
from trustauthority.errors import TrustAuthorityError
from trustauthority.eventlog import parse_event_log, replay
from trustauthority.tpm import QuoteInfo, parse_attest
from trustauthority.tpm.constants import DIGEST_SIZES, HASH_IDS
from trustauthority.verify.evidence import verify_evidence
from trustauthority.verify.quote import QuoteOptions, verify_quote

app = typer.Typer(help="Check TPM quotes offline.", no_args_is_help=True)


@app.command("verify")
def verify(
    ak: Annotated[Path, typer.Option(help="AK public key: PEM/DER, TPM2B_PUBLIC or TPMT_PUBLIC.")],
    attest: Annotated[Path, typer.Option(help="The quoted TPMS_ATTEST (or TPM2B_ATTEST).")],
    signature: Annotated[Path, typer.Option(help="The TPMT_SIGNATURE over it.")],
    nonce: Annotated[str, typer.Option(help="The nonce (qualifying data) issued, in hex.")],
    pcrs: Annotated[Path | None, typer.Option(
        help='JSON PCR values: {"sha256": {"0": "<hex>", ...}}.')] = None,
    eventlog: Annotated[Path | None, typer.Option(
        help="TCG event log to check against the quoted PCRs.")] = None,
    allow_sha1: Annotated[bool, typer.Option(help="Accept SHA-1 signatures and banks.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Verify a TPM2_Quote: signature, nonce, PCR selection and digest, and the event log.

    Exit 0 when verified, 1 when the evidence is rejected (the message names the failed
    check), 2 for a usage error or an unreadable file.

    Example: `ta quote verify --ak ak.pub --attest quote.msg --signature quote.sig
    --nonce 3f1c… --pcrs pcrs.json --eventlog binary_bios_measurements`
    """
    if pcrs is None and eventlog is None:
        fail("give the PCR values with --pcrs, or an --eventlog to take them from",
             as_json=as_json)
    try:
        expected_nonce = bytes.fromhex(nonce)
    except ValueError:
        fail("--nonce must be hex", as_json=as_json)
    ak_public = load_public_area(
        read_input_file(str(ak), what="AK public key", as_json=as_json), option="--ak",
        hint="give the AK's public key, e.g. from `tpm2_createak -u`", as_json=as_json)
    raw_attest = _strip_tpm2b_attest(read_input_file(str(attest), what="attestation",
                                                     as_json=as_json))
    raw_signature = read_input_file(str(signature), what="signature", as_json=as_json)
    try:
        log = None
        if eventlog is not None:
            log = parse_event_log(read_input_file(str(eventlog), what="event log",
                                                  as_json=as_json))
        if pcrs is not None:
            values = _load_pcrs(read_input_file(str(pcrs), what="PCR file", as_json=as_json),
                                as_json=as_json)
        else:
            if log is None:  # unreachable: checked above; keeps the types honest
                fail("no PCR values", as_json=as_json)
            values = _quoted_values_from_log(raw_attest, replay(log))
        verified = verify_quote(
            ak=ak_public, raw_attest=raw_attest, raw_signature=raw_signature,
            expected_nonce=expected_nonce, unverified_pcr_values=values,
            options=QuoteOptions(allow_sha1=allow_sha1))
        evidence = verify_evidence(verified, log) if log is not None else None
    except TrustAuthorityError as error:
        fail_with(error, as_json=as_json)

    report: dict[str, Any] = {
        "ok": True,
        "clock": {"clock": verified.clock_info.clock,
                  "reset_count": verified.clock_info.reset_count,
                  "restart_count": verified.clock_info.restart_count,
                  "safe": verified.clock_info.safe},
        "firmware_version": f"{verified.attest.firmware_version:016x}",
        "pcrs": {bank: {str(p): v.hex() for p, v in sorted(bank_values.items())}
                 for bank, bank_values in verified.pcr_values.items()},
    }
    if evidence is not None:
        report["event_log"] = {"events": len(evidence.event_log.events),
                               "pcrs_confirmed": sorted(evidence.confirmed_pcrs)}
    if as_json:
        print_json(report)
        return
    console.print("[bold green]✓ quote verified[/]: signature, nonce, PCR selection and digest")
    if evidence is not None:
        console.print(f"[bold green]✓ event log verified[/]: {len(evidence.event_log.events)} "
                      f"events reproduce PCRs {_fmt(evidence.confirmed_pcrs)}")
    table = PlainTable("bank", "PCR", "value")
    for bank, bank_values in verified.pcr_values.items():
        for pcr, value in sorted(bank_values.items()):
            table.add_row(bank, str(pcr), value.hex())
    console.print(table)


def _fmt(pcrs: frozenset[int]) -> str:
    return ", ".join(str(p) for p in sorted(pcrs)) or "none"


def _strip_tpm2b_attest(data: bytes) -> bytes:
    """tpm2-tools write TPMS_ATTEST; some tools write TPM2B_ATTEST. TPMS starts with the magic."""
    if len(data) >= 6 and data[2:6] == b"\xffTCG" and int.from_bytes(data[:2]) == len(data) - 2:
        return data[2:]
    return data


def _load_pcrs(data: bytes, *, as_json: bool) -> dict[str, dict[int, bytes]]:
    try:
        document = json.loads(data)
    except (ValueError, RecursionError) as error:  # RecursionError: absurdly nested input
        fail(f"--pcrs is not JSON: {error}", as_json=as_json)
    if isinstance(document, dict) and "banks" in document:  # `eventlog replay --json` output
        document = document["banks"]
    if not isinstance(document, dict):
        fail('--pcrs must be {"sha256": {"0": "<hex>", ...}}', as_json=as_json)
    values: dict[str, dict[int, bytes]] = {}
    for bank, pcr_map in document.items():
        if bank not in HASH_IDS or not isinstance(pcr_map, dict):
            fail(f"--pcrs: unknown bank {bank!r} or not an object", as_json=as_json)
        size = DIGEST_SIZES[HASH_IDS[bank]]
        bank_values: dict[int, bytes] = {}
        for pcr, value in pcr_map.items():
            try:
                index = int(pcr)
                digest = bytes.fromhex(value) if isinstance(value, str) else b""
            except ValueError:
                fail(f"--pcrs: {bank} PCR {pcr!r} is not an index with a hex value",
                     as_json=as_json)
            if not 0 <= index <= 23 or len(digest) != size:
                fail(f"--pcrs: {bank} PCR {pcr}: need index 0-23 and {size} bytes of hex",
                     as_json=as_json)
            bank_values[index] = digest
        values[bank] = bank_values
    return values


def _quoted_values_from_log(raw_attest: bytes,
                            replayed: dict[str, dict[int, bytes]]) -> dict[str, dict[int, bytes]]:
    """Without --pcrs, offer the log's replay for the PCRs the quote selects.

    verify_quote then proves (by the signed digest) that the TPM held exactly those values.
    """
    info = parse_attest(raw_attest).attested
    if not isinstance(info, QuoteInfo):
        return {}
    values: dict[str, dict[int, bytes]] = {}
    for bank, pcrs in info.pcr_select.as_dict().items():
        bank_values = replayed.get(bank, {})
        size = DIGEST_SIZES.get(HASH_IDS.get(bank, 0), 32)
        # a PCR the log never extends still holds its reset value in the quote: zeros, but
        # all ones for the dynamic-launch PCRs 17-22 (PC Client PTP §4.6.2)
        values[bank] = {
            pcr: bank_values.get(pcr, b"\xff" * size if 17 <= pcr <= 22 else bytes(size))
            for pcr in pcrs}
    return values
