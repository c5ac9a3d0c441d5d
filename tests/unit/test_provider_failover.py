"""Failover across a provider's key servers, with in-memory key servers standing in (the real
KMIP and PKCS#11 runs are in tests/integration): the first available server answers, a blob
that does not authenticate stops at once, all down is one KeyServerUnavailable."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from trustauthority.errors import KeyServerUnavailable, WrappedKeyInvalid
from trustauthority.keyserver import HealthReport, PrimaryKeyInfo
from trustauthority.service.keyservers import KeyServerRegistry
from trustauthority.service.providers import ProviderServers
from trustauthority.store.masterkey import AesGcmMasterKey
from trustauthority.store.models import KeyServerRecord


class FakeServer:
    kind = "kmip"

    def __init__(self, name: str) -> None:
        self.name = name
        self.down = False
        self.calls = 0

    def _use(self) -> None:
        self.calls += 1
        if self.down:
            raise KeyServerUnavailable(f"{self.name} is down")

    def check(self) -> HealthReport:
        return HealthReport(not self.down, True, True, not self.down, 1.0, "fake")

    def describe_key(self, key_id: str) -> PrimaryKeyInfo:
        self._use()
        return PrimaryKeyInfo(key_id, "AES", 256, True, "ok")

    def create_primary_key(self, name: str) -> str:
        self._use()
        return name

    def wrap(self, key_id: str, key: bytes, aad: bytes) -> bytes:
        self._use()
        return key[::-1] + aad

    def unwrap(self, key_id: str, wrapped: bytes, aad: bytes) -> bytes:
        self._use()
        if not wrapped.endswith(aad):
            raise WrappedKeyInvalid("does not authenticate")
        return wrapped[:32][::-1]

    def close(self) -> None:
        pass


def _row(name: str) -> KeyServerRecord:
    return KeyServerRecord(id=name, name=name, kind="kmip", address="h:1", settings="{}",
                           sealed_secrets=b"")


@pytest.fixture
def fakes() -> dict[str, FakeServer]:
    return {"a": FakeServer("a"), "b": FakeServer("b")}


@pytest.fixture
def servers(fakes: dict[str, FakeServer]) -> tuple[ProviderServers, KeyServerRegistry]:
    registry = KeyServerRegistry(AesGcmMasterKey(bytes(32)), lambda: datetime.now(UTC))
    # the fakes stand in for the adapters the registry would build from stored rows
    registry.adapter = lambda row: fakes[row.name]  # type: ignore[method-assign]
    return ProviderServers(registry), registry


def test_the_first_server_answers_while_it_is_up(
        servers: tuple[ProviderServers, KeyServerRegistry], fakes: dict[str, FakeServer]) -> None:
    failover, _ = servers
    _wrapped, used = failover.run("p", [_row("a"), _row("b")],
                                 lambda s: s.wrap("k", bytes(32), b"aad"))
    assert used == "a"
    assert fakes["b"].calls == 0


def test_a_down_server_hands_over_to_the_next_and_is_marked(
        servers: tuple[ProviderServers, KeyServerRegistry], fakes: dict[str, FakeServer]) -> None:
    failover, registry = servers
    fakes["a"].down = True
    key, used = failover.run("p", [_row("a"), _row("b")],
                             lambda s: s.unwrap("k", bytes(range(32))[::-1] + b"aad", b"aad"))
    assert used == "b"
    assert key == bytes(range(32))
    health_a, health_b = registry.last_health("a"), registry.last_health("b")
    assert health_a is not None
    assert not health_a.healthy
    assert "down" in health_a.detail
    assert health_b is not None
    assert health_b.healthy


def test_a_blob_that_does_not_authenticate_is_not_tried_elsewhere(
        servers: tuple[ProviderServers, KeyServerRegistry], fakes: dict[str, FakeServer]) -> None:
    failover, _ = servers
    with pytest.raises(WrappedKeyInvalid):
        failover.run("p", [_row("a"), _row("b")],
                     lambda s: s.unwrap("k", bytes(40), b"aad"))
    assert fakes["b"].calls == 0


def test_all_down_is_one_unavailable_naming_each_server(
        servers: tuple[ProviderServers, KeyServerRegistry], fakes: dict[str, FakeServer]) -> None:
    failover, _ = servers
    fakes["a"].down = fakes["b"].down = True
    with pytest.raises(KeyServerUnavailable, match=r"no key server of provider p.*a is down.*"
                                                   r"b is down"):
        failover.run("p", [_row("a"), _row("b")], lambda s: s.wrap("k", bytes(32), b""))
    fakes["a"].down = False
    assert failover.run("p", [_row("a"), _row("b")],
                        lambda s: s.wrap("k", bytes(32), b""))[1] == "a"
