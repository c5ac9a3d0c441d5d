"""Attested key release on the host: ask the service for a workload's key with the latest
attestation token (attesting first when there is none or it is about to expire), and open the
answer inside the TPM — the service encrypted it to the binding key only this TPM holds.

The key is returned to the caller and kept nowhere: not on disk, not in the agent's state.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from trustauthority.agent.host import StateDir, attest, open_client
from trustauthority.agent.tpm import AgentTpm
from trustauthority.errors import KeyReleaseRefused, TokenExpired, WrappedKeyInvalid
from trustauthority.keyrelease.blob import parse_blob
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


def fetch_key(state_dir: StateDir, blob: str, workload: str, *, attest_if_needed: bool = True,
              event_log: str | None = None) -> bytes:
    """The workload's key (32 bytes), released by the service and opened in this TPM."""
    return release_key(state_dir, blob, workload, attest_if_needed=attest_if_needed,
                       event_log=event_log).key


def release_key(state_dir: StateDir, blob: str, workload: str, *, attest_if_needed: bool = True,
                event_log: str | None = None) -> ReleasedKey:
    """`fetch_key`, with what the service says of the blob presented."""
    parsed = parse_blob(blob)
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
            if fresher.key_id != parsed.key_id or fresher.workload != parsed.workload:
                current = None  # another key is never a replacement for this one
    return ReleasedKey(key, current)
