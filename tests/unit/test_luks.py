"""LUKS2 enrolment and opening through the real cryptsetup, on image files.

Mapping a volume needs device-mapper, which a test machine may not have; the checks that the
released key opens its keyslot use `cryptsetup open --test-passphrase`, which runs the same key
derivation and keyslot decryption without mapping anything.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from trustauthority.agent import luks
from trustauthority.errors import BackendUnavailable, UsageError, WrappedKeyInvalid

pytestmark = pytest.mark.skipif(not luks.cryptsetup_available(),
                                reason="cryptsetup is not installed (scripts/bootstrap adds it)")

RECOVERY = b"recovery passphrase\n"


def _cryptsetup(*arguments: str, stdin: bytes | None = None) -> str:
    return subprocess.run(["cryptsetup", *arguments], input=stdin, capture_output=True,
                          check=True).stdout.decode()


@pytest.fixture
def volume(tmp_path: Path) -> Path:
    """A 32 MiB (sparse) LUKS2 image that the recovery passphrase opens (keyslot 0)."""
    image = tmp_path / "volume.img"
    with image.open("wb") as stream:
        stream.truncate(32 * 1024 * 1024)
    _cryptsetup("luksFormat", "--type", "luks2", "--batch-mode", "--pbkdf", "pbkdf2",
                "--pbkdf-force-iterations", "1000", "--key-file", "-", str(image),
                stdin=RECOVERY)
    return image


def _enroll(volume: Path, *, kek: bytes, blob: str = "tak1.x", workload: str = "vm-1",
            existing_key: bytes = RECOVERY, replace: bool = False,
            earlier_kek: bytes | None = None) -> luks.Enrolment:
    enrolled = luks.enroll(volume, workload=workload, blob=blob, kek=kek,
                           existing_key=existing_key, replace=replace, earlier_kek=earlier_kek)
    assert enrolled.kept_keyslots == ()
    return enrolled.enrolment


def _keyslots(image: Path) -> set[str]:
    return set(json.loads(_cryptsetup("luksDump", "--dump-json-metadata", str(image)))["keyslots"])


def test_an_enrolled_volume_opens_with_its_key_only(volume: Path) -> None:
    assert luks.is_luks2(volume)
    assert luks.read_enrolment(volume) is None
    kek = os.urandom(32)
    enrolment = _enroll(volume, kek=kek, workload="vm-1/data", blob="tak1.first")
    assert enrolment == luks.read_enrolment(volume)
    assert (enrolment.workload, enrolment.blob, enrolment.keyslots) == ("vm-1/data",
                                                                       "tak1.first", (1,))
    assert _keyslots(volume) == {"0", "1"}

    luks.open_volume(volume, enrolment, kek, name=None)
    with pytest.raises(WrappedKeyInvalid, match="does not open keyslot 1"):
        luks.open_volume(volume, enrolment, os.urandom(32), name=None)
    # the KEK itself is no passphrase of the volume: only the derived one is
    kek_file = volume.with_name("kek")
    kek_file.write_bytes(kek)
    refused = subprocess.run(["cryptsetup", "open", "--test-passphrase", "--key-file",
                              str(kek_file), str(volume)], capture_output=True, check=False)
    assert refused.returncode == 2


def test_enrolling_again_needs_replace_and_leaves_one_keyslot_and_token(volume: Path) -> None:
    first = _enroll(volume, kek=bytes(32), blob="tak1.first")
    with pytest.raises(UsageError, match="already enrolled"):
        _enroll(volume, kek=bytes(32), blob="tak1.first")
    with pytest.raises(WrappedKeyInvalid, match="existing key"):
        _enroll(volume, kek=b"\x01" * 32, blob="tak1.second", existing_key=b"wrong",
                replace=True, earlier_kek=bytes(32))
    assert luks.read_enrolment(volume) == first  # a refused enrolment changed nothing
    assert _keyslots(volume) == {"0", "1"}

    second = _enroll(volume, kek=b"\x01" * 32, blob="tak1.second", replace=True,
                     existing_key=luks.volume_passphrase(bytes(32), "vm-1"),
                     earlier_kek=bytes(32))
    assert luks.read_enrolment(volume) == second
    assert second.token_id == first.token_id  # the token was replaced in place
    assert _keyslots(volume) == {"0", str(second.keyslot)}
    assert second.keyslot != first.keyslot
    luks.open_volume(volume, second, b"\x01" * 32, name=None)
    with pytest.raises(WrappedKeyInvalid):
        luks.open_volume(volume, second, bytes(32), name=None)


def test_a_token_naming_the_recovery_keyslot_does_not_get_it_removed(volume: Path) -> None:
    """The header is writable by whoever can write the device: a token that names keyslot 0
    must not make --replace kill the recovery keyslot."""
    _cryptsetup("token", "import", "--json-file", "-", str(volume), stdin=json.dumps(
        {"type": "trustauthority", "keyslots": ["0"], "workload": "vm-1",
         "blob": "tak1.x"}).encode())
    planted = luks.read_enrolment(volume)
    assert planted is not None
    assert planted.keyslots == (0,)
    enrolled = luks.enroll(volume, workload="vm-1", blob="tak1.y", kek=bytes(32),
                           existing_key=RECOVERY, replace=True, earlier_kek=b"\x02" * 32)
    assert enrolled.kept_keyslots == (0,)
    assert _keyslots(volume) == {"0", str(enrolled.enrolment.keyslot)}
    _cryptsetup("open", "--test-passphrase", "--key-slot", "0", "--key-file", "-", str(volume),
                stdin=RECOVERY)


def test_a_token_that_cannot_be_stored_leaves_no_keyslot_behind(volume: Path) -> None:
    # the LUKS2 JSON area (16 KiB here) cannot hold this blob, so `token import` fails
    with pytest.raises(BackendUnavailable, match="store the token"):
        _enroll(volume, kek=bytes(32), blob="tak1." + "x" * 20000)
    assert _keyslots(volume) == {"0"}
    assert luks.read_enrolment(volume) is None


@pytest.mark.parametrize("token", [
    {"type": "trustauthority", "keyslots": ["0"], "workload": 7, "blob": "tak1.x"},
    {"type": "trustauthority", "keyslots": ["0"], "workload": "", "blob": "tak1.x"},
    {"type": "trustauthority", "keyslots": ["0"], "workload": "vm-1"},
])
def test_a_malformed_token_is_a_usage_error(volume: Path, token: dict[str, object]) -> None:
    _cryptsetup("token", "import", "--json-file", "-", str(volume),
                stdin=json.dumps(token).encode())
    with pytest.raises(UsageError, match="malformed"):
        luks.read_enrolment(volume)


def test_a_token_whose_keyslot_is_gone_is_refused_until_enrolled_again(volume: Path) -> None:
    first = _enroll(volume, kek=bytes(32))
    _cryptsetup("luksKillSlot", "--batch-mode", str(volume), str(first.keyslot))
    with pytest.raises(UsageError, match="names no keyslot the volume has"):
        luks.read_enrolment(volume)
    again = _enroll(volume, kek=bytes(32), replace=True)
    assert luks.read_enrolment(volume) == again
    luks.open_volume(volume, again, bytes(32), name=None)


def test_other_tokens_are_left_alone(volume: Path) -> None:
    _cryptsetup("token", "import", "--json-file", "-", str(volume), stdin=json.dumps(
        {"type": "clevis", "keyslots": ["0"], "jwe": {}}).encode())
    assert luks.read_enrolment(volume) is None
    assert _enroll(volume, kek=bytes(32)).token_id == 1


def test_what_is_not_a_luks2_volume_is_refused_by_name(tmp_path: Path) -> None:
    plain = tmp_path / "plain.img"
    plain.write_bytes(b"\x00" * 4096)
    assert not luks.is_luks2(plain)
    assert not luks.is_luks2(tmp_path / "missing")
    os.mkfifo(tmp_path / "fifo")  # opening one would block until a writer came
    assert not luks.is_luks2(tmp_path / "fifo")
    with pytest.raises(UsageError, match="not a LUKS2 volume"):
        luks.read_enrolment(plain)


def test_mapping_without_device_mapper_is_a_clear_backend_error(volume: Path) -> None:
    kek = bytes(32)
    enrolment = _enroll(volume, kek=kek)
    with pytest.raises(UsageError, match="no device-mapper name"):
        luks.open_volume(volume, enrolment, kek, name="/dev/mapper/data")
    if "device-mapper" in Path("/proc/misc").read_text():
        pytest.skip("device-mapper is available here: mapping would succeed")
    with pytest.raises(BackendUnavailable, match="device-mapper"):
        luks.open_volume(volume, enrolment, kek, name="ta-test")


def test_cryptsetup_that_cannot_be_started_is_a_backend_error(
        volume: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_args: object, **_kwargs: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(subprocess, "run", refuse)
    with pytest.raises(BackendUnavailable, match=r"cannot run cryptsetup.*Permission denied"):
        luks.read_enrolment(volume)


def test_the_passphrase_is_bound_to_key_and_workload() -> None:
    kek = bytes(range(32))
    passphrase = luks.volume_passphrase(kek, "vm-1")
    assert len(passphrase) == 32
    assert passphrase != kek
    assert passphrase == luks.volume_passphrase(kek, "vm-1")
    assert passphrase != luks.volume_passphrase(kek, "vm-2")
    assert passphrase != luks.volume_passphrase(bytes(32), "vm-1")
