"""A sealed key copy that cannot be used never hides the outage that sent the agent to it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trustauthority.agent import keys
from trustauthority.agent.host import AgentState, StateDir
from trustauthority.errors import BackendUnavailable, UsageError
from trustauthority.keyrelease.blob import WrappedKeyBlob

pytest.importorskip("tpm2_pytss")

KEY_ID = "0b5e1c2d-0000-4000-8000-000000000001"


def _state_dir(tmp_path: Path) -> StateDir:
    state_dir = StateDir(tmp_path / "agent")
    state_dir.save(AgentState(
        server="https://ta.invalid", ca_file=None, tcti="swtpm:host=127.0.0.1,port=1",
        event_log="/nonexistent", host_id="h", host_name="web-1", cluster="prod",
        ek_kind="rsa", ak_kind="ecc", ak_public="", ak_private="", ak_name="",
        binding_public="", binding_private="", binding_name=""))
    return state_dir


class _RefusingTpm:
    """A TPM that cannot unseal the copy (gone, or it refuses the sealed object)."""

    def __init__(self, _tcti: str) -> None:
        pass

    def __enter__(self) -> _RefusingTpm:
        return self

    def __exit__(self, *_exc: object) -> None:
        pass

    def unseal(self, _sealed: object) -> bytes:
        raise UsageError("the TPM refuses the sealed object")


@pytest.mark.parametrize("content", [
    "{not json",  # unreadable
    json.dumps({"key_id": KEY_ID, "ek_kind": "rsa", "bank": "sha256", "pcrs": [0],
                "public": "AA==", "private": "AA=="}),  # read, but the TPM does not open it
])
def test_an_unusable_copy_is_no_key_and_the_outage_stands(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: str) -> None:
    monkeypatch.setattr(keys, "AgentTpm", _RefusingTpm)
    state_dir = _state_dir(tmp_path)
    sealed = keys._sealed_file(state_dir, KEY_ID)
    sealed.parent.mkdir()
    sealed.write_text(content)
    assert keys.persisted_key(state_dir, KEY_ID) is None

    outage = BackendUnavailable("the service is unreachable")

    def unreachable(*_args: object, **_kwargs: object) -> keys.ReleasedKey:
        raise outage

    monkeypatch.setattr(keys, "_release_online", unreachable)
    blob = WrappedKeyBlob(KEY_ID, "vm-1", "provider-1", 1, "kmip", bytes(40)).encode()
    with pytest.raises(BackendUnavailable) as raised:
        keys.release_key(state_dir, blob, "vm-1", persist=True)
    assert raised.value is outage
    assert sealed.exists()  # an outage is no refusal: the copy stays
