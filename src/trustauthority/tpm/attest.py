"""TPMS_ATTEST (TPM 2.0 Part 2 §10.12): the structure a TPM signs in Quote, Certify, ...

Parsing only: whether to believe it is `trustauthority.verify`'s job.
"""

from __future__ import annotations

from dataclasses import dataclass

from trustauthority.tpm.constants import St
from trustauthority.tpm.pcr import PcrSelection, read_pcr_selection
from trustauthority.tpm.reader import Reader

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


def parse_attest(data: bytes) -> TpmsAttest:
    """Parse a marshalled TPMS_ATTEST (the contents of a TPM2B_ATTEST)."""
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
