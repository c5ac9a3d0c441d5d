"""TPMS_ATTEST (TPM 2.0 Part 2 §10.12): the structure a TPM signs in Quote, Certify, ...

Parsing only: whether to believe it is `trustauthority.verify`'s job.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from trustauthority.tpm.constants import St
from trustauthority.tpm.pcr import (
    PcrBankSelection,
    PcrSelection,
    pcrs_of_bitmap,
    read_pcr_selection,
)
from trustauthority.tpm.reader import Reader, new_frozen

#: attestation structures are small; a TPM2B_ATTEST holds at most ~1 KiB on real TPMs
MAX_ATTEST_SIZE = 4096


@dataclass(frozen=True)
class ClockInfo:
    """TPMS_CLOCK_INFO (Part 2 §10.11.1)."""

    clock: int  # ms the TPM has been powered, advanced in NV
    reset_count: int  # TPM Resets (reboots) since the TPM was cleared
    restart_count: int  # TPM Restarts / Resumes since the last Reset
    safe: bool  # clock has not gone back since it was last reported


@dataclass(frozen=True)
class QuoteInfo:
    """TPMS_QUOTE_INFO (Part 2 §10.12.1)."""

    pcr_select: PcrSelection
    pcr_digest: bytes


@dataclass(frozen=True)
class CertifyInfo:
    """TPMS_CERTIFY_INFO (Part 2 §10.12.3): names of the object a key vouched for."""

    name: bytes
    qualified_name: bytes


@dataclass(frozen=True)
class OtherInfo:
    """Attested data of a kind we do not interpret (kept raw for completeness)."""

    raw: bytes


@dataclass(frozen=True)
class TpmsAttest:
    magic: int
    type: int
    qualified_signer: bytes
    extra_data: bytes
    clock_info: ClockInfo
    firmware_version: int
    attested: QuoteInfo | CertifyInfo | OtherInfo
    raw: bytes  # exactly the signed bytes


_BANK = struct.Struct(">HB")  # TPMS_PCR_SELECTION.hash, sizeofSelect
_ATTEST_QUOTE = int(St.ATTEST_QUOTE)  # an int: Enum member access is slow in a hot path
_MAX_NAME = 2 + 64
_MAX_DATA = 64


def parse_attest(data: bytes) -> TpmsAttest:
    """Parse a marshalled TPMS_ATTEST (the contents of a TPM2B_ATTEST).

    Quotes take a fast path (one pass with struct, no per-field calls) since a verifier parses
    thousands per second; anything it does not accept goes through the careful reader, which
    names the field and byte offset of the damage.
    """
    try:
        fast = _parse_quote_fast(data)
    except (struct.error, ValueError, IndexError):
        fast = None
    return fast if fast is not None else _parse_careful(data)


#: marshalled TPML_PCR_SELECTION -> its parsed form. A fleet quotes a handful of selections, so
#: decoding each once saves the bitmap walk and two objects per quote. Sharing is safe: the
#: objects are frozen. Bounded, so odd selections from hostile hosts cannot grow it.
_SELECTIONS: dict[bytes, PcrSelection] = {}
_MAX_SELECTIONS = 256


#: (qualifiedSigner size, extraData size) -> the quote's layout up to the selection count, so
#: the fixed fields unpack in one call. Bounded by the size limits (at most 67 × 65 layouts);
#: a fleet uses one or two.
_LAYOUTS: dict[tuple[int, int], struct.Struct] = {}


def _layout(signer_size: int, extra_size: int) -> struct.Struct:
    # magic, type, signer (sized), extraData (sized), clockInfo, firmwareVersion, bank count
    layout = struct.Struct(f">IHH{signer_size}sH{extra_size}sQIIBQI")
    _LAYOUTS[signer_size, extra_size] = layout
    return layout


def _parse_quote_fast(data: bytes) -> TpmsAttest | None:
    """A well-formed quote, or None to let the careful parser find the problem."""
    end = len(data)
    if end > MAX_ATTEST_SIZE:
        return None
    signer_size = (data[6] << 8) | data[7]
    if signer_size > _MAX_NAME:
        return None
    extra_size = (data[8 + signer_size] << 8) | data[9 + signer_size]
    if extra_size > _MAX_DATA:
        return None
    layout = _LAYOUTS.get((signer_size, extra_size)) or _layout(signer_size, extra_size)
    (magic, attest_type, _, signer, _, extra, clock, reset_count, restart_count, safe, firmware,
     count) = layout.unpack_from(data, 0)
    if attest_type != _ATTEST_QUOTE or safe > 1 or count > 16:
        return None
    selection_start = pos = layout.size - 4
    pos += 4
    for _ in range(count):  # hash (2), sizeofSelect (1), the bitmap
        pos += 3 + data[pos + 2]
    selection = _selection(data[selection_start:pos])
    if selection is None:
        return None
    digest_size = (data[pos] << 8) | data[pos + 1]
    pos += 2
    if digest_size > 64 or pos + digest_size != end:
        return None
    clock_info = new_frozen(ClockInfo, {"clock": clock, "reset_count": reset_count,
                                        "restart_count": restart_count, "safe": safe == 1})
    quote_info = new_frozen(QuoteInfo, {"pcr_select": selection, "pcr_digest": data[pos:]})
    return new_frozen(TpmsAttest, {
        "magic": magic, "type": attest_type, "qualified_signer": signer, "extra_data": extra,
        "clock_info": clock_info, "firmware_version": firmware, "attested": quote_info,
        "raw": data})


def _selection(raw: bytes) -> PcrSelection | None:
    """The parsed TPML_PCR_SELECTION `raw` (whole, bounds already walked), or None if bad."""
    cached = _SELECTIONS.get(raw)
    if cached is not None:
        return cached
    banks = []
    pos = 4
    while pos < len(raw):
        hash_alg, select_size = _BANK.unpack_from(raw, pos)
        pcrs = pcrs_of_bitmap(raw[pos + 3 : pos + 3 + select_size])
        if pcrs is None:
            return None
        banks.append(PcrBankSelection(hash_alg, pcrs))
        pos += 3 + select_size
    if pos != len(raw):  # the walk ran past the end of the data
        return None
    selection = PcrSelection(tuple(banks))
    if len(_SELECTIONS) < _MAX_SELECTIONS:
        _SELECTIONS[raw] = selection
    return selection


def _parse_careful(data: bytes) -> TpmsAttest:
    if len(data) > MAX_ATTEST_SIZE:
        raise Reader(data, "TPMS_ATTEST").error(
            f"{len(data)} bytes exceed the maximum {MAX_ATTEST_SIZE}", 0)
    reader = Reader(data, "TPMS_ATTEST")
    magic = reader.u32("magic")
    attest_type = reader.u16("type")
    qualified_signer = reader.tpm2b("qualifiedSigner", 2 + 64)
    extra_data = reader.tpm2b("extraData", 64)
    clock_info = ClockInfo(
        reader.u64("clockInfo.clock"),
        reader.u32("clockInfo.resetCount"),
        reader.u32("clockInfo.restartCount"),
        _yes_no(reader),
    )
    firmware_version = reader.u64("firmwareVersion")
    attested: QuoteInfo | CertifyInfo | OtherInfo
    if attest_type == St.ATTEST_QUOTE:
        attested = QuoteInfo(read_pcr_selection(reader), reader.tpm2b("pcrDigest", 64))
    elif attest_type == St.ATTEST_CERTIFY:
        attested = CertifyInfo(reader.tpm2b("certify.name", 2 + 64),
                               reader.tpm2b("certify.qualifiedName", 2 + 64))
    else:
        attested = OtherInfo(reader.raw(reader.remaining, "attested"))
    reader.expect_end()
    return TpmsAttest(magic, attest_type, qualified_signer, extra_data, clock_info,
                      firmware_version, attested, data)


def _yes_no(reader: Reader) -> bool:
    value = reader.u8("clockInfo.safe")
    if value > 1:
        raise reader.error(f"clockInfo.safe is {value}, not YES/NO", reader.pos - 1)
    return value == 1
