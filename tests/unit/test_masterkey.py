"""The master key: an owner-only file that is never replaced, and sealing bound to a purpose."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st

from trustauthority.errors import ConfigError
from trustauthority.store.masterkey import (
    KEY_BYTES,
    AesGcmMasterKey,
    create_master_key_file,
    load_master_key_file,
)

KEY = AesGcmMasterKey(bytes(range(KEY_BYTES)))
OTHER_KEY = AesGcmMasterKey(bytes(range(1, KEY_BYTES + 1)))
PURPOSE = "service-key:0123456789abcdef"


@pytest.fixture
def no_umask() -> Iterator[None]:
    """Mode bits exactly as the code asks for them (a umask would hide a too-wide mode)."""
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


# -- the key file -------------------------------------------------------------------------------

@pytest.mark.usefixtures("no_umask")
def test_a_new_key_file_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    created = create_master_key_file(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(path.read_bytes()) == KEY_BYTES
    loaded = load_master_key_file(path)
    assert loaded.key_id == created.key_id
    assert loaded.open(created.seal(b"sealed before a restart", purpose=PURPOSE),
                       purpose=PURPOSE) == b"sealed before a restart"


def test_two_new_key_files_hold_different_keys(tmp_path: Path) -> None:
    first = create_master_key_file(tmp_path / "one.key")
    second = create_master_key_file(tmp_path / "two.key")
    assert first.key_id != second.key_id
    assert (tmp_path / "one.key").read_bytes() != (tmp_path / "two.key").read_bytes()


@pytest.mark.parametrize("mode", [0o640, 0o620, 0o610, 0o604, 0o602, 0o601, 0o644, 0o660,
                                  0o666, 0o700 | 0o070])
def test_a_key_file_group_or_others_can_access_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "master.key"
    create_master_key_file(path)
    path.chmod(mode)
    with pytest.raises(ConfigError, match="group or others") as info:
        load_master_key_file(path)
    assert f"{mode:o}" in str(info.value)


@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_an_owner_only_key_file_is_accepted(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "master.key"
    created = create_master_key_file(path)
    path.chmod(mode)
    assert load_master_key_file(path).key_id == created.key_id


def test_an_existing_key_file_is_never_replaced(tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    create_master_key_file(path)
    before = path.read_bytes()
    with pytest.raises(ConfigError, match="already exists"):
        create_master_key_file(path)
    assert path.read_bytes() == before


def test_an_existing_empty_file_is_not_taken_over(tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    path.touch()
    with pytest.raises(ConfigError, match="already exists"):
        create_master_key_file(path)
    assert path.read_bytes() == b""


@pytest.mark.parametrize("length", [0, 1, 16, KEY_BYTES - 1, KEY_BYTES + 1, 64])
def test_a_key_file_of_the_wrong_length_is_refused(tmp_path: Path, length: int) -> None:
    path = tmp_path / "master.key"
    path.write_bytes(b"k" * length)
    path.chmod(0o600)
    with pytest.raises(ConfigError, match=f"must be {KEY_BYTES} bytes, not {length}"):
        load_master_key_file(path)


@pytest.mark.parametrize("length", [0, 16, 24, KEY_BYTES - 1, KEY_BYTES + 1])
def test_a_key_of_the_wrong_length_is_refused(length: int) -> None:
    with pytest.raises(ConfigError, match=f"must be {KEY_BYTES} bytes"):
        AesGcmMasterKey(b"k" * length)


def test_a_missing_key_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the master key"):
        load_master_key_file(tmp_path / "absent.key")


# -- sealing ------------------------------------------------------------------------------------

@settings(max_examples=200, deadline=None)
@given(plaintext=st.binary(max_size=2048), purpose=st.text(max_size=64))
def test_what_is_sealed_opens_for_the_same_purpose(plaintext: bytes, purpose: str) -> None:
    assert KEY.open(KEY.seal(plaintext, purpose=purpose), purpose=purpose) == plaintext


@settings(max_examples=100, deadline=None)
@given(plaintext=st.binary(min_size=16, max_size=2048))
def test_sealed_bytes_never_contain_the_plaintext(plaintext: bytes) -> None:
    sealed = KEY.seal(plaintext, purpose=PURPOSE)
    assert plaintext not in sealed
    assert len(sealed) > len(plaintext)  # header and tag: nothing was dropped


def test_a_sealed_private_key_shows_nothing_of_it() -> None:
    private = ec.generate_private_key(ec.SECP256R1())
    der = private.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    scalar = private.private_numbers().private_value.to_bytes(32, "big")
    sealed = KEY.seal(der, purpose=PURPOSE)
    assert der not in sealed
    assert scalar not in sealed
    with pytest.raises(ValueError, match="Could not deserialize key data"):
        serialization.load_der_private_key(sealed, password=None)


def test_sealing_twice_gives_different_bytes() -> None:
    first = KEY.seal(b"the same secret", purpose=PURPOSE)
    second = KEY.seal(b"the same secret", purpose=PURPOSE)
    assert first != second  # a fresh nonce each time
    assert KEY.open(first, purpose=PURPOSE) == KEY.open(second, purpose=PURPOSE)


@pytest.mark.parametrize("other", ["service-key:fedcba9876543210", "", PURPOSE + "x",
                                   PURPOSE.upper(), "key-server-credential"])
def test_another_purpose_does_not_open(other: str) -> None:
    sealed = KEY.seal(b"bound to one row", purpose=PURPOSE)
    with pytest.raises(ConfigError, match="does not open"):
        KEY.open(sealed, purpose=other)


def test_every_flipped_byte_is_refused() -> None:
    sealed = KEY.seal(b"a secret of some length", purpose=PURPOSE)
    for position in range(len(sealed)):
        for mask in (0x01, 0x80):
            altered = bytearray(sealed)
            altered[position] ^= mask
            with pytest.raises(ConfigError):
                KEY.open(bytes(altered), purpose=PURPOSE)


@pytest.mark.parametrize("keep", [0, 1, 9, 21, 36, -1])
def test_a_truncated_sealed_value_is_refused(keep: int) -> None:
    sealed = KEY.seal(b"a secret", purpose=PURPOSE)
    with pytest.raises(ConfigError):
        KEY.open(sealed[:keep], purpose=PURPOSE)


def test_another_master_key_does_not_open() -> None:
    sealed = KEY.seal(b"sealed under KEY", purpose=PURPOSE)
    assert KEY.key_id != OTHER_KEY.key_id
    with pytest.raises(ConfigError, match="another master key") as info:
        OTHER_KEY.open(sealed, purpose=PURPOSE)
    assert KEY.key_id in str(info.value)
    assert b"sealed under KEY" not in str(info.value).encode()


def test_another_master_key_with_a_forged_key_id_does_not_open() -> None:
    """The key id in the header is a hint only; the AEAD tag is what refuses."""
    sealed = KEY.seal(b"sealed under KEY", purpose=PURPOSE)
    relabelled = sealed[:1] + bytes.fromhex(OTHER_KEY.key_id) + sealed[1 + 8:]
    with pytest.raises(ConfigError, match="does not open"):
        OTHER_KEY.open(relabelled, purpose=PURPOSE)
