"""The claims of an attestation token, laid out as an IETF EAT Attestation Result (EAR).

One JSON payload carries JWT claims (RFC 7519), EAR claims (draft-ietf-rats-ear, in the Veraison
profile) and, under ``x-ta``, the product's own claims, which EAR leaves room for as extensions::

    {
      "eat_profile": "tag:github.com,2023:veraison/ear",   EAR profile: tells a reader the layout
      "iss": "<issuer>",  "sub": "<host id>",  "jti": "<unique token id>",        RFC 7519 §4.1
      "iat": <NumericDate>,  "exp": <NumericDate>,        EAR requires iat; exp per RFC 7519
      "cnf": {"jkt": "<RFC 7638 thumbprint of the host's TPM binding key>"}, RFC 7800, RFC 9449 §6.1
      "ear.verifier-id": {"developer": "...", "build": "..."},       which verifier appraised
      "submods": {                                        EAR: one appraisal per attester
        "tpm": {                                          the host, attested by its TPM
          "ear.status": "affirming" | "contraindicated",  trusted | untrusted
          "ear.appraisal-policy-id": "policy://trustauthority/baseline/<name>/<version>",
                                                          only when a baseline matched
          "x-ta": {"baseline": {"name": "...", "version": <int>} | null,
                   "pcr-digest": "<hex SHA-256 over the quoted SHA-256 PCRs>",
                   "secure-boot": true | false | null}    null: the event log did not say
        }
      },
      "x-ta": {"cluster": "<cluster name>"}
    }

EAR claims not used: ``ear.trustworthiness-vector`` (AR4SI's per-dimension codes would claim a
finer judgement than a baseline match makes), ``ear.raw-evidence`` (evidence stays with the
service), ``eat_nonce`` (the nonce belongs to the quote, not to the token). The labels are the
dotted ones of the Veraison profile, which its Go and Rust EAR libraries read; later IETF drafts
spell them ``ear_status`` etc. under another profile tag, which is why the profile is checked.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from trustauthority import __version__
from trustauthority.errors import TokenMalformed
from trustauthority.token._codec import shown

EAR_PROFILE = "tag:github.com,2023:veraison/ear"
#: the name of our one appraisal in ``submods``
SUBMOD = "tpm"
#: where the product's own claims live, at the top level and in the appraisal
NAMESPACE = "x-ta"
#: the design's default token lifetime
DEFAULT_LIFETIME = timedelta(minutes=10)
#: ids, names and issuers longer than this are refused
MAX_TEXT_LENGTH = 256
#: NumericDate (RFC 7519 §2) bounds we accept: the epoch to the end of year 9999
MAX_NUMERIC_DATE = 253402300799

_PCR_DIGEST = re.compile(r"[0-9a-f]{64}")
_THUMBPRINT = re.compile(r"[A-Za-z0-9_-]{42}[AEIMQUYcgkosw048]")  # 32 bytes, canonical base64url


class TrustStatus(StrEnum):
    """The appraisal's verdict on the host."""

    TRUSTED = "trusted"
    UNTRUSTED = "untrusted"

    @property
    def ear_status(self) -> str:
        """The EAR trust tier for this verdict (AR4SI: affirming / contraindicated)."""
        return "affirming" if self is TrustStatus.TRUSTED else "contraindicated"


_STATUS_BY_EAR = {status.ear_status: status for status in TrustStatus}


@dataclass(frozen=True)
class BaselineRef:
    """The baseline (named, versioned set of reference values) the host matched."""

    name: str
    version: int

    def __post_init__(self) -> None:
        _check_text(self.name, "baseline name")
        if self.version < 1:
            raise ValueError("baseline version must be 1 or more")

    @property
    def policy_id(self) -> str:
        """``ear.appraisal-policy-id``: derived, so it can never disagree with the baseline."""
        return f"policy://trustauthority/baseline/{self.name}/{self.version}"


@dataclass(frozen=True)
class VerifierId:
    """``ear.verifier-id``: who built the verifier that appraised the evidence."""

    developer: str = "Trust Authority"
    build: str = f"trustauthority {__version__}"

    def __post_init__(self) -> None:
        _check_text(self.developer, "verifier developer")
        _check_text(self.build, "verifier build")


@dataclass(frozen=True)
class AttestationClaims:
    """What a token says about a host, as issued (and as returned by `verify`)."""

    iss: str
    #: the host id
    sub: str
    cluster: str
    #: whole seconds, timezone-aware
    iat: datetime
    exp: datetime
    jti: str
    status: TrustStatus
    #: the matched baseline; required when trusted
    baseline: BaselineRef | None
    #: lowercase hex SHA-256 over the quoted SHA-256 PCR values (the quote's pcrDigest)
    pcr_digest: str
    #: Secure Boot enabled per the event log; None when the log does not say
    secure_boot: bool | None
    #: ``cnf.jkt``: RFC 7638 SHA-256 thumbprint of the host's TPM-resident binding key
    cnf_jkt: str
    verifier_id: VerifierId = field(default_factory=VerifierId)

    def __post_init__(self) -> None:
        for value, what in ((self.iss, "iss"), (self.sub, "sub"), (self.cluster, "cluster"),
                            (self.jti, "jti")):
            _check_text(value, what)
        for moment, what in ((self.iat, "iat"), (self.exp, "exp")):
            if moment.tzinfo is None or moment.microsecond:
                raise ValueError(f"{what} must be timezone-aware and in whole seconds")
            if not 0 <= moment.timestamp() <= MAX_NUMERIC_DATE:
                raise ValueError(f"{what} is outside the NumericDate range we accept")
        if self.exp <= self.iat:
            raise ValueError("exp must be after iat")
        if self.status is TrustStatus.TRUSTED and self.baseline is None:
            raise ValueError("a trusted host has matched a baseline: baseline is required")
        if not _PCR_DIGEST.fullmatch(self.pcr_digest):
            raise ValueError("pcr_digest must be 64 lowercase hex digits (SHA-256)")
        if not _THUMBPRINT.fullmatch(self.cnf_jkt):
            raise ValueError("cnf.jkt must be a base64url SHA-256 JWK thumbprint (43 characters)")

    @classmethod
    def create(cls, *, issuer: str, host_id: str, cluster: str, status: TrustStatus,
               baseline: BaselineRef | None, pcr_digest: str, secure_boot: bool | None,
               binding_key_thumbprint: str, now: datetime,
               lifetime: timedelta = DEFAULT_LIFETIME, jti: str | None = None,
               verifier_id: VerifierId | None = None) -> AttestationClaims:
        """Claims issued at `now` (cut to whole seconds), valid for `lifetime`, with a new jti."""
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        iat = now.replace(microsecond=0)
        return cls(iss=issuer, sub=host_id, cluster=cluster, iat=iat, exp=iat + lifetime,
                   jti=jti if jti is not None else secrets.token_urlsafe(16), status=status,
                   baseline=baseline, pcr_digest=pcr_digest, secure_boot=secure_boot,
                   cnf_jkt=binding_key_thumbprint,
                   verifier_id=verifier_id if verifier_id is not None else VerifierId())

    @property
    def trusted(self) -> bool:
        return self.status is TrustStatus.TRUSTED

    def to_payload(self) -> dict[str, object]:
        """The JWT payload (module docstring), ready for JSON."""
        appraisal: dict[str, object] = {"ear.status": self.status.ear_status}
        if self.baseline is not None:
            appraisal["ear.appraisal-policy-id"] = self.baseline.policy_id
        appraisal[NAMESPACE] = {
            "baseline": (None if self.baseline is None
                         else {"name": self.baseline.name, "version": self.baseline.version}),
            "pcr-digest": self.pcr_digest,
            "secure-boot": self.secure_boot,
        }
        return {
            "eat_profile": EAR_PROFILE,
            "iss": self.iss,
            "sub": self.sub,
            "iat": int(self.iat.timestamp()),
            "exp": int(self.exp.timestamp()),
            "jti": self.jti,
            "cnf": {"jkt": self.cnf_jkt},
            "ear.verifier-id": {"developer": self.verifier_id.developer,
                                "build": self.verifier_id.build},
            "submods": {SUBMOD: appraisal},
            NAMESPACE: {"cluster": self.cluster},
        }

    @classmethod
    def from_payload(cls, unverified_payload: Mapping[str, object]) -> AttestationClaims:
        """Read a payload, checking every type and value strictly; `TokenMalformed` otherwise.

        Claims we do not know (``nbf``, other extensions) are ignored (RFC 7519 §4); `verify`
        has checked ``nbf`` already.
        """
        raw = unverified_payload
        profile = raw.get("eat_profile")
        if profile != EAR_PROFILE:
            raise TokenMalformed(f"eat_profile {shown(profile)} is not {EAR_PROFILE}")
        verifier = _member(raw, "ear.verifier-id")
        submods = _member(raw, "submods")
        if set(submods) != {SUBMOD}:
            raise TokenMalformed(f"submods must hold exactly one appraisal, {SUBMOD!r}")
        appraisal = _member(submods, SUBMOD, "submods")
        ear_status = appraisal.get("ear.status")
        status = _STATUS_BY_EAR.get(ear_status) if isinstance(ear_status, str) else None
        if status is None:
            raise TokenMalformed(f"ear.status {shown(ear_status)} is not affirming or "
                                 "contraindicated")
        ours = _member(appraisal, NAMESPACE, "appraisal")
        baseline = _baseline(ours.get("baseline"))
        policy_id = appraisal.get("ear.appraisal-policy-id")
        if policy_id != (None if baseline is None else baseline.policy_id):
            raise TokenMalformed("ear.appraisal-policy-id does not name the matched baseline")
        secure_boot = ours.get("secure-boot")
        if secure_boot is not None and not isinstance(secure_boot, bool):
            raise TokenMalformed("secure-boot is not true, false or null")
        try:
            return cls(
                iss=_text(raw, "iss"), sub=_text(raw, "sub"),
                cluster=_text(_member(raw, NAMESPACE), "cluster", NAMESPACE),
                iat=_numeric_date(raw, "iat"), exp=_numeric_date(raw, "exp"),
                jti=_text(raw, "jti"), status=status, baseline=baseline,
                pcr_digest=_text(ours, "pcr-digest", NAMESPACE), secure_boot=secure_boot,
                cnf_jkt=_text(_member(raw, "cnf"), "jkt", "cnf"),
                verifier_id=VerifierId(developer=_text(verifier, "developer", "ear.verifier-id"),
                                       build=_text(verifier, "build", "ear.verifier-id")),
            )
        except ValueError as error:
            raise TokenMalformed(f"claims: {error}") from None


def _check_text(value: str, what: str) -> None:
    if not 0 < len(value) <= MAX_TEXT_LENGTH:
        raise ValueError(f"{what} must be 1 to {MAX_TEXT_LENGTH} characters")


def _member(raw: Mapping[str, object], name: str, parent: str = "payload") -> Mapping[str, object]:
    value = raw.get(name)
    if not isinstance(value, Mapping):
        raise TokenMalformed(f"{parent}: {name} is missing or not a JSON object")
    return value


def _text(raw: Mapping[str, object], name: str, parent: str = "payload") -> str:
    value = raw.get(name)
    if not isinstance(value, str):
        raise TokenMalformed(f"{parent}: {name} is missing or not a string")
    return value


def numeric_date(value: object, name: str) -> datetime:
    """An untrusted NumericDate (RFC 7519 §2): an integer in our range, as an aware datetime.

    Booleans (JSON true/false are ints in Python) and fractional seconds are refused: we issue
    whole seconds only.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise TokenMalformed(f"{name} is missing or not an integer NumericDate")
    if not 0 <= value <= MAX_NUMERIC_DATE:
        raise TokenMalformed(f"{name} is outside the NumericDate range we accept")
    return datetime.fromtimestamp(value, UTC)


def _numeric_date(raw: Mapping[str, object], name: str) -> datetime:
    return numeric_date(raw.get(name), name)


def _baseline(value: object) -> BaselineRef | None:
    if value is None:
        return None
    if not isinstance(value, Mapping) or set(value) != {"name", "version"}:
        raise TokenMalformed("baseline is not null or {name, version}")
    name, version = value["name"], value["version"]
    if not isinstance(name, str) or isinstance(version, bool) or not isinstance(version, int):
        raise TokenMalformed("baseline name is not a string or its version not an integer")
    try:
        return BaselineRef(name, version)
    except ValueError as error:
        raise TokenMalformed(f"claims: {error}") from None
