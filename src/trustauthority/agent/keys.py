"""Attested key release on the host: ask the service for a workload's key with the latest
attestation token (attesting first when there is none or it is about to expire), and open the
answer inside the TPM — the service encrypted it to the binding key only this TPM holds.

The key is returned to the caller and kept nowhere: not on disk, not in the agent's state.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from trustauthority.agent.host import StateDir, attest, open_client
from trustauthority.agent.tpm import AgentTpm, SealedSecret
from trustauthority.errors import (
    AccessError,
    BackendUnavailable,
    KeyReleaseRefused,
    TokenExpired,
    TokenRejected,
    TrustAuthorityError,
    UsageError,
    WrappedKeyInvalid,
)
from trustauthority.files import write_private
from trustauthority.keyrelease.blob import WrappedKeyBlob, parse_blob
from trustauthority.keyrelease.jwe import decrypt_with_tpm
from trustauthority.keyserver import KEY_BYTES
from trustauthority.schemas import KeyReleaseIn

log = logging.getLogger("trustauthority.agent")

#: attest again rather than present a token this close to its expiry
TOKEN_MARGIN = timedelta(seconds=30)


def unverified_expiry(token: str) -> datetime | None:
    """When the held token expires, read without verifying it (None if unreadable): only the
    service's verdict counts; this just saves a refused round trip."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return datetime.fromtimestamp(int(claims["exp"]), UTC)
    except (IndexError, ValueError, KeyError, TypeError, OverflowError, OSError,
            binascii.Error):
        return None


def _expires_soon(token: str) -> bool:
    """Whether the held token is (nearly) expired."""
    expires = unverified_expiry(token)
    return expires is None or expires - datetime.now(UTC) < TOKEN_MARGIN


def current_token(state_dir: StateDir, *, attest_if_needed: bool,
                  event_log: str | None = None) -> str:
    token = state_dir.token()
    if (token is None or _expires_soon(token)) and attest_if_needed:
        result = attest(state_dir, event_log=event_log)
        if result.token is None:
            detail = result.failure.detail if result.failure else result.status
            raise KeyReleaseRefused(f"attestation did not pass, so no key: {detail}")
        token = result.token
    if token is None:
        raise KeyReleaseRefused("this host holds no attestation token: run `agent attest`")
    return token


@dataclass(frozen=True)
class ReleasedKey:
    #: the workload's key (32 bytes), opened in this TPM
    key: bytes = field(repr=False)
    #: the key's blob as the service stores it now, when `blob` was wrapped under an older
    #: primary key version (the service re-wrapped it since); None when `blob` is current
    current_blob: str | None = None
    #: True when the service could not be asked and the copy sealed to this TPM opened it
    from_sealed_copy: bool = False


def fetch_key(state_dir: StateDir, blob: str, workload: str, *, attest_if_needed: bool = True,
              event_log: str | None = None) -> bytes:
    """The workload's key (32 bytes), released by the service and opened in this TPM."""
    return release_key(state_dir, blob, workload, attest_if_needed=attest_if_needed,
                       event_log=event_log).key


def release_key(state_dir: StateDir, blob: str, workload: str, *, attest_if_needed: bool = True,
                event_log: str | None = None, persist: bool = False) -> ReleasedKey:
    """`fetch_key`, with what the service says of the blob presented.

    `persist` (vTA's key persistence): a released key is also sealed to this TPM under the
    boot's PCR values (`PERSIST_PCRS`), and when the service or its key servers cannot be
    reached, that sealed copy opens the key as long as the host booted the same way. A refusal
    by the service (the host is untrusted, the key or its grant is gone) removes the copy.
    """
    parsed = parse_blob(blob)
    try:
        released = _release_online(state_dir, blob, parsed, workload,
                                   attest_if_needed=attest_if_needed, event_log=event_log)
    except BackendUnavailable:
        kept = persisted_key(state_dir, parsed.key_id) if persist else None
        if kept is None:
            raise
        log.warning("the service or its key servers are unreachable: the key of workload %s "
                    "was opened from its copy sealed to this TPM", workload)
        return ReleasedKey(kept, from_sealed_copy=True)
    except (KeyReleaseRefused, TokenRejected, WrappedKeyInvalid, AccessError):
        forget_key(state_dir, parsed.key_id)  # the service said no: so does the sealed copy
        raise
    if persist:
        persist_key(state_dir, parsed.key_id, released.key)
    return released


def _release_online(state_dir: StateDir, blob: str, parsed: WrappedKeyBlob, workload: str, *,
                    attest_if_needed: bool, event_log: str | None) -> ReleasedKey:
    state = state_dir.load()
    token = current_token(state_dir, attest_if_needed=attest_if_needed, event_log=event_log)
    request = KeyReleaseIn(blob=blob, workload=workload, token=token)
    with open_client(state, state_dir.credential()) as client:
        try:
            release = client.release_key(request)
        except TokenExpired:
            if not attest_if_needed:
                raise
            token = current_token(state_dir, attest_if_needed=True, event_log=event_log)
            release = client.release_key(KeyReleaseIn(blob=blob, workload=workload,
                                                      token=token))
    with AgentTpm(state.tcti) as tpm:
        payload = decrypt_with_tpm(
            release.jwe, lambda encrypted: tpm.rsa_decrypt(state.binding_key, encrypted))
    try:
        document = json.loads(payload)
        key = base64.urlsafe_b64decode(document["key"] + "=" * (-len(document["key"]) % 4))
        same = document["workload"] == parsed.workload and document["key_id"] == parsed.key_id
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise WrappedKeyInvalid("the released key is not in the expected form") from None
    if not same or len(key) != KEY_BYTES:
        raise WrappedKeyInvalid("the service released another key than the one asked for")
    log.info("key of workload %s released (provider %s, primary key v%d)", workload,
             release.provider, release.primary_version)
    current = release.current_blob
    if current is not None:
        try:
            fresher = parse_blob(current)
        except WrappedKeyInvalid:
            current = None  # not offered in a form we could use: keep the blob we have
        else:
            if (fresher.key_id, fresher.workload, fresher.provider_id) != (
                    parsed.key_id, parsed.workload, parsed.provider_id) \
                    or fresher.primary_version <= parsed.primary_version:
                current = None  # another key, or no newer wrapping: never a replacement
    return ReleasedKey(key, current)


# -- key persistence ------------------------------------------------------------------------

#: the PCRs a persisted key is sealed to: those a cluster's appraisal compares by default
#: (firmware, option ROM code, boot manager and applications, Secure Boot, GRUB and the kernel)
PERSIST_PCRS = (0, 2, 3, 4, 7, 8, 9)


def _sealed_file(state_dir: StateDir, key_id: str) -> Path:
    # the key id comes from a blob: hashed into a file name, it names no other path
    return state_dir.path / "sealed" / f"{hashlib.sha256(key_id.encode()).hexdigest()}.json"


def persist_key(state_dir: StateDir, key_id: str, key: bytes) -> None:
    """Seal `key` to this TPM and the current values of `PERSIST_PCRS`, under the state dir."""
    state = state_dir.load()
    with AgentTpm(state.tcti) as tpm:
        sealed = tpm.seal(key, PERSIST_PCRS, ek_kind=state.ek_kind)
    target = _sealed_file(state_dir, key_id)
    try:
        target.parent.mkdir(mode=0o700, exist_ok=True)
        write_private(target, json.dumps({
            "key_id": key_id, "ek_kind": sealed.ek_kind, "bank": sealed.bank,
            "pcrs": list(sealed.pcrs), "public": base64.b64encode(sealed.public).decode(),
            "private": base64.b64encode(sealed.private).decode(),
            "sealed_at": datetime.now(UTC).isoformat()}, indent=2) + "\n")
    except OSError as error:
        raise UsageError(f"cannot keep the sealed key in {target.parent}: "
                         f"{error.strerror or error}") from None


def persisted_key(state_dir: StateDir, key_id: str) -> bytes | None:
    """The key sealed for `key_id`, if there is a copy and this boot's PCRs open it."""
    source = _sealed_file(state_dir, key_id)
    try:
        document = json.loads(source.read_text())
        sealed = SealedSecret(document["ek_kind"], base64.b64decode(document["public"]),
                              base64.b64decode(document["private"]), document["bank"],
                              tuple(int(pcr) for pcr in document["pcrs"]))
        if document["key_id"] != key_id:
            return None
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, binascii.Error):
        log.warning("the sealed key copy %s is unreadable; ignored", source)
        return None
    try:
        with AgentTpm(state_dir.load().tcti) as tpm:
            key = tpm.unseal(sealed)
    except TrustAuthorityError as error:  # the outage the caller met is the error to report
        log.warning("the sealed key copy %s does not open: %s", source, error)
        return None
    if key is None:
        log.warning("the sealed copy of key %s does not open: this boot differs from the one "
                    "it was sealed in", key_id)
        return None
    return key if len(key) == KEY_BYTES else None


def forget_key(state_dir: StateDir, key_id: str) -> None:
    with contextlib.suppress(OSError):
        _sealed_file(state_dir, key_id).unlink(missing_ok=True)
