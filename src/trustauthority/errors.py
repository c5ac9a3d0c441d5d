"""The one exception tree of Trust Authority.

Every error the product raises on purpose is one of these; the CLI maps them to one-line
messages and exit codes, and the API (later) maps them to HTTP in one place::

    TrustAuthorityError
    ├── EvidenceError                 untrusted evidence is malformed or fails a check (fail closed)
    │   ├── MalformedEvidence         bytes that do not parse; carries the byte offset
    │   │   ├── TpmFormatError        TPM 2.0 structures (TPMS_ATTEST, TPM2B_PUBLIC, ...)
    │   │   └── EventLogFormatError   TCG PC Client firmware event logs
    │   ├── QuoteError                a parsed quote that must not be believed
    │   │   ├── BadMagic              not TPM_GENERATED_VALUE: not made by a TPM
    │   │   ├── WrongAttestationType  not a quote (e.g. a certify structure replayed as a quote)
    │   │   ├── AlgorithmNotAllowed   scheme/hash refused by the options (SHA-1 by default)
    │   │   ├── SignatureInvalid      the AK did not sign these bytes
    │   │   ├── NonceMismatch         extraData is not the nonce we issued (replay)
    │   │   ├── PcrSelectionMismatch  the signed selection is not the selection of the values given
    │   │   ├── PcrDigestMismatch     the values given are not the values the TPM quoted
    │   │   └── ClockRegression       clock/reset/restart counters went backwards
    │   ├── EventLogMismatch          replaying the log does not give the quoted PCR values
    │   ├── CertificateError          an EK certificate does not chain to a trusted TPM CA
    │   ├── KeyAttributesError        an AK or binding key lacks the attributes of a TPM-bound key
    │   ├── ActivationFailed          the host could not recover the credential: AK and EK differ
    │   └── ChallengeInvalid          a nonce we did not issue, already used or expired
    ├── PolicyViolation               verified evidence that the policy does not accept
    ├── AccessError                   who is calling, and may they?
    │   ├── AuthenticationFailed      no credential, an unknown, revoked or expired one (HTTP 401)
    │   ├── PermissionDenied          a valid principal outside the role for this action (HTTP 403)
    │   └── JoinTokenRefused          a join token unknown, used, revoked or expired (HTTP 403)
    ├── TokenRejected                 an attestation token not to believe
    │   ├── TokenIssuerMismatch       issued by another authority than the one trusted
    │   ├── TokenMalformed            not a well-formed JWS or JWKS, or claims off the schema
    │   ├── TokenSignatureInvalid     an algorithm we refuse, or a signature that does not verify
    │   ├── TokenKeyUnknown           kid names no usable key in the JWKS (rotated out, not ours)
    │   ├── TokenExpired              outside its validity period (exp, nbf, iat) beyond the leeway
    │   └── TokenBindingMismatch      cnf.jkt is not the thumbprint of the presenter's binding key
    ├── AuditChainBroken              the audit log was edited, truncated, reordered or spliced
    ├── ConfigError                   our own configuration is wrong
    ├── BackendUnavailable            a TPM, key server or database cannot be reached
    │   └── KeyServerUnavailable      a key server cannot be reached, is not trusted, or refused
    ├── KeyReleaseRefused             a key release the service will not make (HTTP 403)
    ├── WrappedKeyInvalid             a wrapped-key blob that does not open: altered, or not ours
    └── UsageError                    a caller (CLI user, API client) asked for something invalid
        ├── NotFound                  the named object does not exist (HTTP 404)
        ├── Conflict                  the request contradicts the stored state (HTTP 409)
        └── BackupInvalid             a backup that does not open with the key given, or altered

Security decisions raise; nothing returns ``False`` for "not verified".
"""

from __future__ import annotations


class TrustAuthorityError(Exception):
    """Root of every error Trust Authority raises on purpose."""

    #: stable machine-readable type, used by the CLI's --json output and the API
    error_type: str = "trust_authority_error"


class EvidenceError(TrustAuthorityError):
    """Evidence from a host (quote, event log, certificate) is malformed or fails a check."""

    error_type = "evidence_rejected"


class MalformedEvidence(EvidenceError):
    """Bytes that do not parse as the structure they claim to be."""

    error_type = "malformed_evidence"

    def __init__(self, message: str, offset: int | None = None) -> None:
        self.offset = offset
        self.reason = message
        where = f" at byte offset {offset}" if offset is not None else ""
        super().__init__(f"{message}{where}")


class TpmFormatError(MalformedEvidence):
    """A TPM 2.0 wire structure is truncated, oversized or invalid."""

    error_type = "malformed_tpm_structure"


class EventLogFormatError(MalformedEvidence):
    """A TCG firmware event log is truncated, oversized or invalid."""

    error_type = "malformed_event_log"


class QuoteError(EvidenceError):
    """A well-formed quote that must not be believed."""

    error_type = "quote_rejected"


class BadMagic(QuoteError):
    error_type = "quote_bad_magic"


class WrongAttestationType(QuoteError):
    error_type = "quote_wrong_type"


class AlgorithmNotAllowed(QuoteError):
    error_type = "algorithm_not_allowed"


class SignatureInvalid(QuoteError):
    error_type = "signature_invalid"


class NonceMismatch(QuoteError):
    error_type = "nonce_mismatch"


class PcrSelectionMismatch(QuoteError):
    error_type = "pcr_selection_mismatch"


class PcrDigestMismatch(QuoteError):
    error_type = "pcr_digest_mismatch"


class ClockRegression(QuoteError):
    error_type = "clock_regression"


class EventLogMismatch(EvidenceError):
    """Replaying the event log does not reproduce the quoted PCR values."""

    error_type = "event_log_mismatch"


class CertificateError(EvidenceError):
    """An EK certificate is malformed, expired, or does not chain to a trusted TPM CA."""

    error_type = "certificate_rejected"


class KeyAttributesError(EvidenceError):
    """A key's TPM attributes do not make it fit for its job (e.g. an AK that can decrypt)."""

    error_type = "key_attributes_rejected"


class ActivationFailed(EvidenceError):
    """ActivateCredential did not return our secret: the AK is not in the TPM of that EK."""

    error_type = "activation_failed"


class ChallengeInvalid(EvidenceError):
    """Evidence answers a nonce we did not issue to this host, or one used or expired."""

    error_type = "challenge_invalid"


class PolicyViolation(TrustAuthorityError):
    error_type = "policy_violation"


class AccessError(TrustAuthorityError):
    """The caller is not known, or not allowed to do what it asked."""

    error_type = "access_denied"


class AuthenticationFailed(AccessError):
    """No credential, or one that is unknown, revoked or expired. Says no more than that."""

    error_type = "unauthenticated"


class PermissionDenied(AccessError):
    """An authenticated principal asked for an action outside its roles."""

    error_type = "forbidden"


class JoinTokenRefused(AccessError):
    """A join token that is unknown, already used, revoked or expired."""

    error_type = "join_token_refused"


class AuditChainBroken(TrustAuthorityError):
    """An audit log entry does not follow from the one before it."""

    error_type = "audit_chain_broken"

    def __init__(self, message: str, sequence: int | None = None) -> None:
        self.sequence = sequence
        super().__init__(message)


class ConfigError(TrustAuthorityError):
    error_type = "config_error"


class BackendUnavailable(TrustAuthorityError):
    error_type = "backend_unavailable"


class KeyServerUnavailable(BackendUnavailable):
    """A key server that cannot be reached, whose TLS identity is not the one trusted, that
    refuses our client, or that fails the operation. The next server of a provider is tried."""

    error_type = "key_server_unavailable"


class KeyReleaseRefused(TrustAuthorityError):
    """The service will not release this key to this host: not trusted now, no grant, another
    workload, a token bound to another key. Says why, never the key."""

    error_type = "key_release_refused"


class WrappedKeyInvalid(TrustAuthorityError):
    """A wrapped-key blob that does not parse or does not authenticate: altered, truncated,
    moved to another workload, or made under a primary key we do not have."""

    error_type = "wrapped_key_invalid"


class UsageError(TrustAuthorityError):
    error_type = "usage_error"


class NotFound(UsageError):
    error_type = "not_found"


class Conflict(UsageError):
    error_type = "conflict"


class BackupInvalid(UsageError):
    """A backup file that is not one, was made with another key, or was altered or cut."""

    error_type = "backup_invalid"


# --- attestation tokens (trustauthority.token) -------------------------------------------------


class TokenRejected(TrustAuthorityError):
    """An attestation token that must not be believed."""

    error_type = "token_rejected"


class TokenExpired(TokenRejected):
    """The token is outside its validity period (exp, nbf or iat), beyond the allowed leeway."""

    error_type = "token_expired"


class TokenSignatureInvalid(TokenRejected):
    """The token's algorithm is not accepted, or its signature does not verify."""

    error_type = "token_signature_invalid"


class TokenMalformed(TokenRejected):
    """A token or JWKS that does not parse, or claims that do not follow the schema."""

    error_type = "token_malformed"


class TokenKeyUnknown(TokenRejected):
    """The token's kid names no key in the JWKS that may verify it."""

    error_type = "token_key_unknown"


class TokenBindingMismatch(TokenRejected):
    """The token is bound (cnf.jkt) to another key than the presenting host's binding key."""

    error_type = "token_binding_mismatch"


class TokenIssuerMismatch(TokenRejected):
    """The token was issued by another authority than the one the verifier trusts."""

    error_type = "token_issuer_mismatch"


def error_class_for(error_type: str) -> type[TrustAuthorityError]:
    """The class whose `error_type` is `error_type` (how the client re-raises API errors)."""
    pending: list[type[TrustAuthorityError]] = [TrustAuthorityError]
    while pending:
        cls = pending.pop()
        if cls.__dict__.get("error_type") == error_type:
            return cls
        pending.extend(cls.__subclasses__())
    return TrustAuthorityError
