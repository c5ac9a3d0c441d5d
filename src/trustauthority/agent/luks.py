"""LUKS2 volumes opened by attested key release, through `cryptsetup`.

The second workload format beside our own file format (`agent.workload`), for volumes that
dm-crypt maps at boot. A volume is enrolled once, the way Clevis and systemd-cryptenroll bind
theirs:

- a new keyslot whose passphrase is derived from the workload key (KEK) with HKDF-SHA256, bound
  to the workload's name, so the KEK itself is never a LUKS passphrase;
- a LUKS2 token of type ``trustauthority`` in the volume's header that names that keyslot and
  holds the workload's name and its key's blob, so the volume alone says which key to ask for.

Opening reads the token, gets the KEK by attested release (the caller's job) and gives the
derived passphrase to ``cryptsetup open`` for that keyslot only.

Secrets never appear on a command line or on disk: each one reaches cryptsetup through a pipe
named ``/dev/fd/N``. The keyslot uses PBKDF2 with 1,000 iterations, as systemd-cryptenroll does
for TPM2 and FIDO2 keys: the passphrase is a 256-bit key, which a slow KDF would not make any
stronger, only slower to open on every boot.

cryptsetup has no Python binding in Debian that is kept up to date, and its command line is its
stable interface (``luksDump --dump-json-metadata`` and ``token import`` are made for tools like
this one), so this module runs it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from trustauthority.errors import (
    BackendUnavailable,
    TrustAuthorityError,
    UsageError,
    WrappedKeyInvalid,
)

#: the type of our LUKS2 token ("luks2-" types are cryptsetup's own)
TOKEN_TYPE = "trustauthority"  # noqa: S105 - a type name, not a secret
LUKS_MAGIC = b"LUKS\xba\xbe"
#: a high-entropy passphrase needs no slow KDF (see the module docstring)
_KEYSLOT_PBKDF = ("--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000")
_PASSPHRASE_INFO = b"trustauthority luks2 keyslot\x00"
#: how long one cryptsetup call may take (opening runs the keyslot's KDF once)
_TIMEOUT_SECONDS = 120
#: the token's fields are the volume header's, so anyone who can write the device can edit them
_MAX_FIELD = 8192
#: cryptsetup's exit code for "no key available with this passphrase"
_WRONG_KEY = 2


@dataclass(frozen=True)
class Enrolment:
    """What a volume's ``trustauthority`` token says."""

    token_id: int
    #: -1 when the token names none (read with require_keyslot off)
    keyslot: int
    workload: str
    blob: str


def cryptsetup_available() -> bool:
    return shutil.which("cryptsetup") is not None


def is_luks2(path: Path) -> bool:
    """Whether `path` starts with a LUKS2 header (magic, then version 2)."""
    try:
        with path.open("rb") as stream:
            head = stream.read(8)
    except OSError:
        return False
    return head[:6] == LUKS_MAGIC and head[6:8] == b"\x00\x02"


def volume_passphrase(kek: bytes, workload: str) -> bytes:
    """The keyslot passphrase of `workload`'s volume: HKDF-SHA256 of its KEK, bound to its
    name, so one key given to two workloads still makes two passphrases."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                info=_PASSPHRASE_INFO + workload.encode()).derive(kek)


def read_enrolment(device: Path, *, require_keyslot: bool = True) -> Enrolment | None:
    """The volume's ``trustauthority`` token, or None when it has none. A token whose keyslot
    is gone is refused unless `require_keyslot` is off (to enroll the volume again)."""
    metadata = _metadata(device)
    tokens = metadata.get("tokens")
    if not isinstance(tokens, dict):
        raise UsageError(f"{device}: the LUKS2 metadata has no token table")
    ours = [(token_id, token) for token_id, token in tokens.items()
            if isinstance(token, dict) and token.get("type") == TOKEN_TYPE]
    if not ours:
        return None
    if len(ours) > 1:
        raise UsageError(f"{device} holds {len(ours)} {TOKEN_TYPE} tokens; remove all but one "
                         "with `cryptsetup token remove`")
    token_id, token = ours[0]
    keyslots = token.get("keyslots")
    workload, blob = token.get("workload"), token.get("blob")
    if (not isinstance(keyslots, list) or not isinstance(workload, str)
            or not isinstance(blob, str) or not 0 < len(workload) <= _MAX_FIELD
            or not 0 < len(blob) <= _MAX_FIELD or not str(token_id).isdigit()):
        raise UsageError(f"{device}: its {TOKEN_TYPE} token (id {token_id}) is malformed; "
                         "remove it with `cryptsetup token remove` and enroll the volume again")
    # cryptsetup drops a killed keyslot from the tokens that named it
    named = [int(slot) for slot in keyslots if str(slot).isdigit()]
    keyslot = named[0] if len(named) == 1 == len(keyslots) else None
    if require_keyslot and (keyslot is None or str(keyslot) not in metadata.get("keyslots", {})):
        raise UsageError(f"{device}: its {TOKEN_TYPE} token names no keyslot the volume has; "
                         "enroll the volume again with --replace")
    return Enrolment(int(token_id), -1 if keyslot is None else keyslot, workload, blob)


def enroll(device: Path, *, workload: str, blob: str, kek: bytes, existing_key: bytes,
           replace: bool = False) -> Enrolment:
    """Add a keyslot for `workload`'s key and a token naming it.

    `existing_key` is a passphrase or key file content that opens the volume now. With
    `replace`, an earlier enrolment (its token and its keyslot) is removed once the new one is
    in place; without, it is refused.
    """
    earlier = read_enrolment(device, require_keyslot=False)
    if earlier is not None and not replace:
        raise UsageError(f"{device} is already enrolled for workload {earlier.workload} "
                         f"(keyslot {earlier.keyslot}); give --replace to enroll it again")
    before = set(_metadata(device).get("keyslots", {}))
    _run(["luksAddKey", "--batch-mode", *_KEYSLOT_PBKDF, "--key-file", "{1}", str(device), "{0}"],
         [volume_passphrase(kek, workload), existing_key], what=f"add a keyslot to {device}",
         wrong_key=f"the existing key given does not open {device}")
    added = set(_metadata(device).get("keyslots", {})) - before
    if len(added) != 1:
        raise BackendUnavailable(f"{device}: cryptsetup added {len(added)} keyslots, not one")
    keyslot = int(added.pop())
    token = json.dumps({"type": TOKEN_TYPE, "keyslots": [str(keyslot)], "workload": workload,
                        "blob": blob})
    try:
        _run(["token", "import", "--json-file", "-", str(device)], [], stdin=token.encode(),
             what=f"store the token in {device}")
    except TrustAuthorityError:
        _kill_keyslot(device, keyslot)  # no keyslot left behind that no token names
        raise
    if earlier is not None:
        _run(["token", "remove", "--token-id", str(earlier.token_id), str(device)], [],
             what=f"remove the earlier token from {device}")
        if earlier.keyslot not in (keyslot, -1) and str(earlier.keyslot) in before:
            _kill_keyslot(device, earlier.keyslot)
    enrolment = read_enrolment(device)
    if enrolment is None or enrolment.keyslot != keyslot:
        raise BackendUnavailable(f"{device}: the token was not stored as written")
    return enrolment


def open_volume(device: Path, enrolment: Enrolment, kek: bytes, *, name: str | None) -> None:
    """Map the volume as /dev/mapper/`name` with the keyslot the token names; with `name`
    None, only check that the key opens that keyslot (``--test-passphrase``)."""
    target = ["--test-passphrase"] if name is None else []
    _run(["open", "--type", "luks2", "--key-slot", str(enrolment.keyslot), "--key-file", "{0}",
          *target, str(device), *([] if name is None else [name])],
         [volume_passphrase(kek, enrolment.workload)], what=f"open {device}",
         wrong_key=f"the released key does not open keyslot {enrolment.keyslot} of {device}: "
                   "the volume was enrolled with another key")


def _kill_keyslot(device: Path, keyslot: int) -> None:
    _run(["luksKillSlot", "--batch-mode", str(device), str(keyslot)], [],
         what=f"remove keyslot {keyslot} from {device}")


def _metadata(device: Path) -> dict[str, Any]:
    if not is_luks2(device):
        raise UsageError(f"{device} is not a LUKS2 volume")
    output = _run(["luksDump", "--dump-json-metadata", str(device)], [],
                  what=f"read the LUKS2 header of {device}")
    try:
        metadata = json.loads(output)
    except ValueError:
        raise BackendUnavailable(f"cryptsetup printed no JSON header for {device}") from None
    if not isinstance(metadata, dict):
        raise BackendUnavailable(f"cryptsetup printed no JSON header for {device}")
    return metadata


def _run(arguments: Sequence[str], secrets: Sequence[bytes], *, what: str,
         stdin: bytes | None = None, wrong_key: str | None = None) -> str:
    """Run cryptsetup; "{i}" in `arguments` becomes the path of a pipe that holds secrets[i].

    Returns its standard output. Its failures become our errors with its last line of stderr
    (cryptsetup never prints a passphrase).
    """
    if not cryptsetup_available():
        raise UsageError("LUKS2 volumes need cryptsetup: apt-get install cryptsetup-bin")
    readers: list[int] = []
    try:
        for secret in secrets:
            reader, writer = os.pipe()
            readers.append(reader)
            with os.fdopen(writer, "wb") as pipe:  # 32-64 bytes: fits the pipe's buffer
                pipe.write(secret)
        command = ["cryptsetup", *(_fill(argument, readers) for argument in arguments)]
        try:
            result = subprocess.run(command, input=stdin, capture_output=True,
                                    pass_fds=readers, timeout=_TIMEOUT_SECONDS, check=False)
        except subprocess.TimeoutExpired:
            raise BackendUnavailable(f"cryptsetup did not {what} within "
                                     f"{_TIMEOUT_SECONDS} s") from None
    finally:
        for reader in readers:
            os.close(reader)
    if result.returncode == 0:
        return result.stdout.decode("utf-8", "replace")
    lines = result.stderr.decode("utf-8", "replace").split("\n")
    # the cause often comes first ("Cannot initialize device-mapper"), its effect last
    reason = "; ".join(line.strip() for line in lines if line.strip())[:400]
    reason = reason or f"exit code {result.returncode}"
    if result.returncode == _WRONG_KEY and wrong_key is not None:
        raise WrappedKeyInvalid(wrong_key)
    raise BackendUnavailable(f"cryptsetup could not {what}: {reason}")


def _fill(argument: str, readers: list[int]) -> str:
    if argument.startswith("{") and argument.endswith("}") and argument[1:-1].isdigit():
        return f"/dev/fd/{readers[int(argument[1:-1])]}"
    return argument
