"""Numbers the TCG PC Client PFP and UEFI specs fix: event types, algorithm ids, GUIDs, limits.

Section numbers refer to the TCG PC Client Platform Firmware Profile (PFP) Specification,
Family 2.0, Revision 1.05, unless another document is named.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from enum import IntEnum
from typing import Final
from uuid import UUID

from trustauthority.tpm.constants import DIGEST_SIZES as TPM_DIGEST_SIZES
from trustauthority.tpm.constants import HASH_NAMES, HASHLIB


class EventType(IntEnum):
    """Event types (PFP §10.4.1, Table 9). Logs may carry values not listed here."""

    EV_PREBOOT_CERT = 0x00000000
    EV_POST_CODE = 0x00000001
    EV_UNUSED = 0x00000002
    EV_NO_ACTION = 0x00000003
    EV_SEPARATOR = 0x00000004
    EV_ACTION = 0x00000005
    EV_EVENT_TAG = 0x00000006
    EV_S_CRTM_CONTENTS = 0x00000007
    EV_S_CRTM_VERSION = 0x00000008
    EV_CPU_MICROCODE = 0x00000009
    EV_PLATFORM_CONFIG_FLAGS = 0x0000000A
    EV_TABLE_OF_DEVICES = 0x0000000B
    EV_COMPACT_HASH = 0x0000000C
    EV_IPL = 0x0000000D
    EV_IPL_PARTITION_DATA = 0x0000000E
    EV_NONHOST_CODE = 0x0000000F
    EV_NONHOST_CONFIG = 0x00000010
    EV_NONHOST_INFO = 0x00000011
    EV_OMIT_BOOT_DEVICE_EVENTS = 0x00000012
    EV_EFI_EVENT_BASE = 0x80000000
    EV_EFI_VARIABLE_DRIVER_CONFIG = 0x80000001
    EV_EFI_VARIABLE_BOOT = 0x80000002
    EV_EFI_BOOT_SERVICES_APPLICATION = 0x80000003
    EV_EFI_BOOT_SERVICES_DRIVER = 0x80000004
    EV_EFI_RUNTIME_SERVICES_DRIVER = 0x80000005
    EV_EFI_GPT_EVENT = 0x80000006
    EV_EFI_ACTION = 0x80000007
    EV_EFI_PLATFORM_FIRMWARE_BLOB = 0x80000008
    EV_EFI_HANDOFF_TABLES = 0x80000009
    EV_EFI_PLATFORM_FIRMWARE_BLOB2 = 0x8000000A
    EV_EFI_HANDOFF_TABLES2 = 0x8000000B
    EV_EFI_VARIABLE_BOOT2 = 0x8000000C
    EV_EFI_HCRTM_EVENT = 0x80000010
    EV_EFI_VARIABLE_AUTHORITY = 0x800000E0
    EV_EFI_SPDM_FIRMWARE_BLOB = 0x800000E1
    EV_EFI_SPDM_FIRMWARE_CONFIG = 0x800000E2


#: name of every known event type value, for logs that carry the bare number
EVENT_TYPE_NAMES: Final[dict[int, str]] = {member.value: member.name for member in EventType}


def event_type_name(value: int) -> str:
    """`EV_IPL` for a known type, `0x0000abcd` for any other value."""
    return EVENT_TYPE_NAMES.get(value, f"0x{value:08x}")


#: PCR banks we can replay, in the order reports list them
BANKS: Final[tuple[str, ...]] = ("sha1", "sha256", "sha384", "sha512")

#: TPM_ALG_ID values (TPM 2.0 Part 2 §6.3) of the hash algorithms a log may name: the same
#: table the TPM structures use, keyed here by id and by bank name
ALGORITHM_NAMES: Final[dict[int, str]] = {int(alg): name for alg, name in HASH_NAMES.items()}
ALGORITHM_IDS: Final[dict[str, int]] = {name: alg for alg, name in ALGORITHM_NAMES.items()}

#: digest size of each known algorithm; a Spec ID header declaring another size is malformed
DIGEST_SIZES: Final[dict[str, int]] = {
    name: TPM_DIGEST_SIZES[alg] for alg, name in ALGORITHM_NAMES.items()}

#: hashlib constructors of the replayable banks, bound once: hashlib.new(name) is slower
HASHES: Final[dict[str, Callable[[bytes], hashlib._Hash]]] = {
    ALGORITHM_NAMES[alg]: constructor for alg, constructor in HASHLIB.items()}


def algorithm_name(alg_id: int) -> str:
    """`sha256` for a known TPM_ALG_ID, `alg_0x00ab` for one only the log's header declares."""
    return ALGORITHM_NAMES.get(alg_id, f"alg_0x{alg_id:04x}")


# Signatures that open EV_NO_ACTION event data (PFP §10.4.5): 16 bytes, NUL-padded.
SPEC_ID_EVENT03: Final = b"Spec ID Event03\x00"
STARTUP_LOCALITY: Final = b"StartupLocality\x00"

# Well-known GUIDs (UEFI 2.10 §3.3 global variables, §32.6.1 image security database; shim).
EFI_GLOBAL_VARIABLE: Final = UUID("8be4df61-93ca-11d2-aa0d-00e098032b8c")
EFI_IMAGE_SECURITY_DATABASE: Final = UUID("d719b2cb-3d3a-4596-a3bc-dad00e67656f")
SHIM_LOCK_GUID: Final = UUID("605dab50-e046-4300-abb6-3dd810dd8b23")
EFI_CERT_X509_GUID: Final = UUID("a5c059a1-94e4-4aa7-87b5-ab155c2bf072")
EFI_CERT_SHA256_GUID: Final = UUID("c1c41626-504c-4092-aca9-41f936934328")

#: EFI_SIGNATURE_LIST types we name (UEFI 2.10 §32.4.1)
SIGNATURE_TYPES: Final[dict[UUID, str]] = {
    EFI_CERT_X509_GUID: "x509",
    EFI_CERT_SHA256_GUID: "sha256",
    UUID("3c5766e8-269c-4e34-aa14-ed776e85b3b6"): "rsa2048",
    UUID("826ca512-cf10-4ac9-b187-be01496631bd"): "sha1",
    UUID("3bd2a492-96c0-4079-b420-fcf98ef103ed"): "x509_sha256",
    UUID("7076876e-80c2-4ee6-aad2-28b349a6865b"): "x509_sha384",
    UUID("446dbf63-2502-4cda-bcfa-2465d2b0fe9d"): "x509_sha512",
}

# Bounds on untrusted input: a real firmware log is tens of KiB with a few hundred events, so
# these are generous, yet keep a hostile log from costing more than a bounded amount of memory
# and time.
MAX_LOG_SIZE: Final = 16 * 1024 * 1024
MAX_EVENT_DATA_SIZE: Final = 1024 * 1024
MAX_DIGESTS: Final = 8
MAX_EVENTS: Final = 100_000
#: a PC Client TPM has 24 PCRs (PFP §3.3.3); EV_NO_ACTION events are exempt (never extended)
PCR_COUNT: Final = 24
#: the largest TPM digest (SHA-512, SHA3-512); a header declaring more is malformed
MAX_DIGEST_SIZE: Final = 64
