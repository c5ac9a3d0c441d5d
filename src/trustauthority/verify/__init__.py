"""Evidence verification, pure: quotes against AKs and nonces, event logs against quotes.

Public API: `verify_quote`, `QuoteOptions`, `VerifiedQuote`; `verify_evidence`,
`VerifiedEvidence`, `PcrReplayMismatch`. Only these functions create the verified types.
"""

from trustauthority.verify.certify import (
    CertifiedKey,
    check_binding_key_attributes,
    verify_certify,
)
from trustauthority.verify.evidence import PcrReplayMismatch, VerifiedEvidence, verify_evidence
from trustauthority.verify.quote import QuoteOptions, VerifiedQuote, verify_quote

__all__ = [
    "CertifiedKey",
    "PcrReplayMismatch",
    "QuoteOptions",
    "VerifiedEvidence",
    "VerifiedQuote",
    "check_binding_key_attributes",
    "verify_certify",
    "verify_evidence",
    "verify_quote",
]
