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

import contextlib
import json
import os
import re
import shutil
import stat
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
#: LUKS2 keyslots are numbered 0-31
_KEYSLOTS = 32
#: a secret is written to its pipe before cryptsetup starts, so it must fit the smallest pipe
#: buffer Linux gives (one page, once a user holds many pipes) or the write would block
MAX_SECRET = 4096
_MAPPING_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,126}")


@dataclass(frozen=True)
class Enrolment:
    """What a volume's ``trustauthority`` token says."""

    token_id: int
    #: the keyslots the token names: one, unless read for re-enrolment (then any number,
    #: each unchecked: the header is writable by whoever can write the device)
    keyslots: tuple[int, ...]
    workload: str
    blob: str

    @property
    def keyslot(self) -> int:
        """The one keyslot of an enrolment read with `require_keyslot` (the default)."""
        return self.keyslots[0]


@dataclass(frozen=True)
class Enrolled:
    """The result of `enroll`: the new enrolment, and the earlier keyslots left in place
    because the earlier key could not be shown to open them."""

    enrolment: Enrolment
    kept_keyslots: tuple[int, ...] = ()


def cryptsetup_available() -> bool:
    return shutil.which("cryptsetup") is not None


def is_luks2(path: Path) -> bool:
    """Whether `path` is a file or block device that starts with a LUKS2 header."""
    try:
        mode = path.stat().st_mode
        if not (stat.S_ISREG(mode) or stat.S_ISBLK(mode)):  # a FIFO would block the open
            return False
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
    """The volume's ``trustauthority`` token, or None when it has none.

    By default the token must name exactly one keyslot that the volume has. With
    `require_keyslot` off (to enroll a volume again) it may name any number, gone ones included.
    """
    return _enrolment(device, _metadata(device), require_keyslot=require_keyslot)


def _number(value: object) -> int | None:
    text = str(value)
    return int(text) if text.isascii() and text.isdigit() and len(text) < 6 else None


def _enrolment(device: Path, metadata: dict[str, Any], *,
               require_keyslot: bool) -> Enrolment | None:
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
    number = _number(token_id)
    if (not isinstance(keyslots, list) or not isinstance(workload, str)
            or not isinstance(blob, str) or not 0 < len(workload) <= _MAX_FIELD
            or not 0 < len(blob) <= _MAX_FIELD or number is None):
        raise UsageError(f"{device}: its {TOKEN_TYPE} token (id {token_id}) is malformed; "
                         "remove it with `cryptsetup token remove` and enroll the volume again")
    # cryptsetup drops a killed keyslot from the tokens that named it
    named = tuple(slot for slot in map(_number, keyslots) if slot is not None)
    if require_keyslot and (len(named) != 1 or len(keyslots) != 1
                            or str(named[0]) not in metadata.get("keyslots", {})):
        raise UsageError(f"{device}: its {TOKEN_TYPE} token names no keyslot the volume has; "
                         "enroll the volume again with --replace")
    return Enrolment(number, named, workload, blob)


def enroll(device: Path, *, workload: str, blob: str, kek: bytes, existing_key: bytes,
           replace: bool = False, earlier_kek: bytes | None = None) -> Enrolled:
    """Add a keyslot for `workload`'s key and a token naming it.

    `existing_key` is a passphrase or key file content that opens the volume now. With
    `replace`, an earlier token is replaced in place (one atomic header update) and the earlier
    keyslots it names are removed — only those that `earlier_kek` is shown to open, since the
    token itself could name any keyslot, the recovery one included. Without, it is refused.
    Until the token is written, a failure removes the keyslot added.
    """
    metadata = _metadata(device)
    earlier = _enrolment(device, metadata, require_keyslot=False)
    if earlier is not None and not replace:
        raise UsageError(f"{device} is already enrolled for workload {earlier.workload}; give "
                         "--replace to enroll it again")
    present = set(metadata.get("keyslots", {}))
    keyslot = next((slot for slot in range(_KEYSLOTS) if str(slot) not in present), None)
    if keyslot is None:
        raise UsageError(f"{device} has no free keyslot; remove one with `cryptsetup "
                         "luksKillSlot` first")
    _run(["luksAddKey", "--batch-mode", *_KEYSLOT_PBKDF, "--key-file", _Pipe(1),
          "--new-key-slot", str(keyslot), "--", str(device), _Pipe(0)],
         [volume_passphrase(kek, workload), existing_key], what=f"add a keyslot to {device}",
         wrong_key=f"the existing key given does not open {device}")
    token = json.dumps({"type": TOKEN_TYPE, "keyslots": [str(keyslot)], "workload": workload,
                        "blob": blob})
    in_place = [] if earlier is None else ["--token-id", str(earlier.token_id), "--token-replace"]
    try:
        _run(["token", "import", *in_place, "--json-file", "-", "--", str(device)], [],
             stdin=token.encode(), what=f"store the token in {device}")
    except TrustAuthorityError:
        # no keyslot left behind that no token names; if that fails too, the error that
        # matters is still the first one
        with contextlib.suppress(TrustAuthorityError):
            _kill_keyslot(device, keyslot)
        raise
    kept: list[int] = []
    if earlier is not None:
        proof = None if earlier_kek is None else volume_passphrase(earlier_kek, earlier.workload)
        for old in earlier.keyslots:
            if old == keyslot or str(old) not in present:
                continue
            if proof is not None and _opens(device, old, proof):
                _kill_keyslot(device, old)
            else:
                kept.append(old)
    enrolment = read_enrolment(device)
    if enrolment is None or enrolment.keyslots != (keyslot,):
        raise BackendUnavailable(f"{device}: the token was not stored as written")
    return Enrolled(enrolment, tuple(kept))


def open_volume(device: Path, enrolment: Enrolment, kek: bytes, *, name: str | None) -> None:
    """Map the volume as /dev/mapper/`name` with the keyslot the token names; with `name`
    None, only check that the key opens that keyslot (``--test-passphrase``)."""
    if name is not None:
        check_mapping_name(name)
    _open_keyslot(device, enrolment.keyslot, volume_passphrase(kek, enrolment.workload),
                  name=name, wrong_key=f"the released key does not open keyslot "
                  f"{enrolment.keyslot} of {device}: the volume was enrolled with another key")


def check_mapping_name(name: str) -> None:
    """Refuse what cannot be a /dev/mapper name (a path given out of habit, an option)."""
    if not _MAPPING_NAME.fullmatch(name):
        raise UsageError(f"{name!r} is no device-mapper name: give a name such as vm-42-data "
                         "(letters, digits, '.', '_', '-')")


def _opens(device: Path, keyslot: int, passphrase: bytes) -> bool:
    try:
        _open_keyslot(device, keyslot, passphrase, name=None, wrong_key="")
    except WrappedKeyInvalid:
        return False
    return True


def _open_keyslot(device: Path, keyslot: int, passphrase: bytes, *, name: str | None,
                  wrong_key: str) -> None:
    """`cryptsetup open` with one keyslot: mapped as `name`, or only tested when it is None."""
    target = ["--test-passphrase", "--", str(device)] if name is None else ["--", str(device),
                                                                            name]
    _run(["open", "--type", "luks2", "--key-slot", str(keyslot), "--key-file", _Pipe(0),
          *target], [passphrase], what=f"open {device}", wrong_key=wrong_key)


def _kill_keyslot(device: Path, keyslot: int) -> None:
    _run(["luksKillSlot", "--batch-mode", "--", str(device), str(keyslot)], [],
         what=f"remove keyslot {keyslot} from {device}")


def _metadata(device: Path) -> dict[str, Any]:
    if not is_luks2(device):
        raise UsageError(f"{device} is not a LUKS2 volume")
    output = _run(["luksDump", "--dump-json-metadata", "--", str(device)], [],
                  what=f"read the LUKS2 header of {device}")
    try:
        metadata = json.loads(output)
    except ValueError:
        raise BackendUnavailable(f"cryptsetup printed no JSON header for {device}") from None
    if not isinstance(metadata, dict):
        raise BackendUnavailable(f"cryptsetup printed no JSON header for {device}")
    return metadata


@dataclass(frozen=True)
class _Pipe:
    """In `_run`'s arguments: the path of the pipe holding secrets[index]."""

    index: int


def _run(arguments: Sequence[str | _Pipe], secrets: Sequence[bytes], *, what: str,
         stdin: bytes | None = None, wrong_key: str | None = None) -> str:
    """Run cryptsetup; `_Pipe(i)` in `arguments` becomes the path of a pipe holding secrets[i].

    Returns its standard output. Its failures become our errors quoting its stderr (cryptsetup
    never prints a passphrase); exit code 2 (no key opens the keyslot) becomes
    WrappedKeyInvalid(`wrong_key`) where one is given.
    """
    if not cryptsetup_available():
        raise UsageError("LUKS2 volumes need cryptsetup: run apt-get install cryptsetup-bin")
    if any(len(secret) > MAX_SECRET for secret in secrets):
        raise UsageError(f"a key for cryptsetup must be at most {MAX_SECRET} bytes; give a "
                         "shorter one")
    readers: list[int] = []
    try:
        for secret in secrets:
            reader, writer = os.pipe()
            readers.append(reader)
            with os.fdopen(writer, "wb") as pipe:  # at most a page: fits any pipe's buffer
                pipe.write(secret)
        command = ["cryptsetup", *(_fill(argument, readers) for argument in arguments)]
        try:
            result = subprocess.run(command, input=stdin, capture_output=True,
                                    pass_fds=readers, timeout=_TIMEOUT_SECONDS, check=False)
        except subprocess.TimeoutExpired:
            raise BackendUnavailable(f"cryptsetup did not {what} within "
                                     f"{_TIMEOUT_SECONDS} s") from None
    except OSError as error:  # no pipe or no process (permissions, resources)
        raise BackendUnavailable(f"cannot run cryptsetup to {what}: "
                                 f"{error.strerror or error}") from None
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


def _fill(argument: str | _Pipe, readers: list[int]) -> str:
    return argument if isinstance(argument, str) else f"/dev/fd/{readers[argument.index]}"
