"""TPM 2.0 wire formats, pure: bytes in, frozen dataclasses out (TPM 2.0 Library Part 2).

Public API: `parse_public`, `parse_tpm2b_public`, `parse_tpmt_public`, `TpmPublic`,
`hierarchy_qualified_name`, `public_from_key`; `parse_attest`, `TpmsAttest`, `ClockInfo`,
`QuoteInfo`, `CertifyInfo`; `parse_signature`, `Signature`; `PcrSelection`, `pcr_digest`;
`make_credential`, `Credential`, `kdfa`, `kdfe`; constants in `trustauthority.tpm.constants`.
"""

from trustauthority.tpm.attest import (
    CertifyInfo,
    ClockInfo,
    OtherInfo,
    QuoteInfo,
    TpmsAttest,
    parse_attest,
)
from trustauthority.tpm.constants import TPM_GENERATED_VALUE, TPM_RH_ENDORSEMENT, Alg, St
from trustauthority.tpm.credential import Credential, kdfa, kdfe, make_credential
from trustauthority.tpm.pcr import PcrBankSelection, PcrSelection, pcr_digest
from trustauthority.tpm.public import (
    EccParms,
    RsaParms,
    TpmPublic,
    hierarchy_qualified_name,
    parse_public,
    parse_tpm2b_public,
    parse_tpmt_public,
    public_from_key,
)
from trustauthority.tpm.signature import (
    EccSignature,
    HmacSignature,
    RsaSignature,
    Signature,
    parse_signature,
)

__all__ = [
    "TPM_GENERATED_VALUE",
    "TPM_RH_ENDORSEMENT",
    "Alg",
    "CertifyInfo",
    "ClockInfo",
    "Credential",
    "EccParms",
    "EccSignature",
    "HmacSignature",
    "OtherInfo",
    "PcrBankSelection",
    "PcrSelection",
    "QuoteInfo",
    "RsaParms",
    "RsaSignature",
    "Signature",
    "St",
    "TpmPublic",
    "TpmsAttest",
    "hierarchy_qualified_name",
    "kdfa",
    "kdfe",
    "make_credential",
    "parse_attest",
    "parse_public",
    "parse_signature",
    "parse_tpm2b_public",
    "parse_tpmt_public",
    "pcr_digest",
    "public_from_key",
]
