"""Mutated enrollment requests and evidence, straight into the use cases (SQLite, in process):
whatever a host sends, the service answers with a verdict or one of its typed errors — never a
bare exception, which the API would turn into a 500.

The hosts are simulated with software keys (`tests.support.sim_host`), so thousands of
mutations run in seconds; the swtpm end-to-end tests check the same paths with real TPMs.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.inprocess import CLUSTER, InProcessService
from tests.support.sim_host import SimHost, golden
from trustauthority.errors import TrustAuthorityError
from trustauthority.service.attestation import AttestationResult, Evidence
from trustauthority.service.authz import Caller
from trustauthority.service.platform import Platform

REQUEST = "fuzz"


@dataclass
class World:
    service: InProcessService
    host: SimHost  # enrolled, trusted
    host_caller: Caller

    @property
    def platform(self) -> Platform:
        return self.service.platform


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    service = InProcessService.create(tmp_path_factory.mktemp("fuzz"), REQUEST)
    platform, admin = service.platform, service.admin
    platform.tpm_trust.set_settings(admin, REQUEST, require_ek_certificate=False,
                                    allow_ek_allowlist=True)
    raw_log, _b64, _values = golden()
    platform.baselines.import_event_log(admin, REQUEST, name="golden", raw_event_log=raw_log)
    platform.baselines.add_to_cluster(admin, REQUEST, CLUSTER, "golden", None)
    host = SimHost.create("fuzzed")
    service.allow(host)
    _state, credential = service.enroll(host)
    yield World(service, host, service.caller(credential))
    service.close()


def _mutate(data: st.DataObject, raw: bytes) -> bytes:
    """A truncation, an extension, a flipped byte, or something else altogether."""
    kind = data.draw(st.sampled_from(["truncate", "extend", "flip", "replace"]))
    if kind == "truncate":
        return raw[:data.draw(st.integers(0, max(len(raw) - 1, 0)))]
    if kind == "extend":
        return raw + data.draw(st.binary(min_size=1, max_size=16))
    if kind == "flip" and raw:
        position = data.draw(st.integers(0, len(raw) - 1))
        return raw[:position] + bytes([raw[position] ^ data.draw(st.integers(1, 255))]) \
            + raw[position + 1:]
    return data.draw(st.binary(max_size=400))


FUZZ = settings(max_examples=150, deadline=None, database=None,
                suppress_health_check=list(HealthCheck))


@FUZZ
@given(data=st.data())
def test_a_mutated_enrollment_gets_a_typed_refusal(world: World, data: st.DataObject) -> None:
    host = world.host
    field = data.draw(st.sampled_from(["ek_public", "ak_public", "ek_certificate",
                                       "ek_intermediates", "activation"]))
    try:
        if field == "ek_public":
            world.platform.hosts.start_enrollment(REQUEST, "test", world.service.enrollment_request(
                host, ek_public=_mutate(data, host.ek.tpm2b)))
        elif field == "ak_public":
            world.platform.hosts.start_enrollment(REQUEST, "test", world.service.enrollment_request(
                host, ak_public=_mutate(data, host.ak.public.tpm2b)))
        elif field == "ek_certificate":
            world.platform.hosts.start_enrollment(REQUEST, "test", world.service.enrollment_request(
                host, ek_certificate=data.draw(st.binary(max_size=600))))
        elif field == "ek_intermediates":
            world.platform.hosts.start_enrollment(REQUEST, "test", world.service.enrollment_request(
                host, ek_certificate=data.draw(st.binary(min_size=1, max_size=300)),
                ek_intermediates=(data.draw(st.binary(max_size=300)),)))
        else:
            challenge = world.platform.hosts.start_enrollment(REQUEST, "test",
                                                              world.service.enrollment_request(host))
            world.platform.hosts.activate(REQUEST, "test", challenge.enrollment_id,
                                          data.draw(st.binary(max_size=64)))
    except TrustAuthorityError:
        pass


def _evidence(world: World) -> dict[str, object]:
    challenge = world.platform.attestation.challenge(world.host_caller)
    return world.host.evidence_document(challenge.nonce, list(challenge.pcrs))


def _decoded(document: dict[str, object]) -> Evidence:
    quote = document["quote"]
    binding = document["binding_key"]
    pcrs = document["pcrs"]
    assert isinstance(quote, dict)
    assert isinstance(binding, dict)
    assert isinstance(pcrs, dict)
    return Evidence(
        nonce=base64.b64decode(str(document["nonce"])),
        quote_attest=base64.b64decode(quote["attest"]),
        quote_signature=base64.b64decode(quote["signature"]),
        pcrs={bank: {int(pcr): bytes.fromhex(value) for pcr, value in values.items()}
              for bank, values in pcrs.items()},
        event_log=base64.b64decode(str(document["event_log"])),
        binding_key_public=base64.b64decode(binding["public"]),
        certify_attest=base64.b64decode(binding["certify_attest"]),
        certify_signature=base64.b64decode(binding["certify_signature"]))


def test_the_unmutated_evidence_is_trusted(world: World) -> None:
    result = world.platform.attestation.submit(world.host_caller, REQUEST,
                                               _decoded(_evidence(world)))
    assert result.status == "trusted", result.failure
    assert result.token is not None


@FUZZ
@given(data=st.data())
def test_mutated_evidence_gets_a_verdict_or_a_typed_refusal(world: World,
                                                            data: st.DataObject) -> None:
    evidence = _decoded(_evidence(world))
    field = data.draw(st.sampled_from(["quote_attest", "quote_signature", "event_log",
                                       "binding_key_public", "certify_attest",
                                       "certify_signature", "pcrs", "nonce"]))
    changed: dict[str, object]
    if field == "pcrs":
        values = dict(evidence.pcrs["sha256"])
        pcr = data.draw(st.sampled_from(sorted(values)))
        values[pcr] = _mutate(data, values[pcr])
        changed = {"pcrs": {"sha256": values}}
    else:
        changed = {field: _mutate(data, getattr(evidence, field))}
    mutated = Evidence(**{**evidence.__dict__, **changed})
    try:
        result = world.platform.attestation.submit(world.host_caller, REQUEST, mutated)
    except TrustAuthorityError:
        return
    assert isinstance(result, AttestationResult)
    if result.status == "trusted":  # only a mutation the TPM's signatures do not cover
        assert field == "event_log", changed  # event data the digests do not cover
