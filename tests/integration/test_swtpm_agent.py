"""The software TPM lifecycle and the agent's TPM layer against a real swtpm.

Structures are parsed here by hand (only the fields checked), independent of the product's parsers.
"""

from __future__ import annotations

import hashlib
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from tests.conftest import SwtpmFactory
from trustauthority.agent.swtpm import SoftwareTpm, SoftwareTpmCa
from trustauthority.agent.tpm import AgentTpm, AkHandleInfo, AkKind, EkKind
from trustauthority.errors import BackendUnavailable, UsageError

pytestmark = pytest.mark.swtpm

TPM_GENERATED_VALUE = 0xFF544347
TPM_ST_ATTEST_QUOTE = 0x8018
TPM_ALG_SHA256 = 0x000B
TPM_ALG_RSASSA = 0x0014
TPM_ALG_ECDSA = 0x0018
QUOTED_PCRS = [0, 1, 2, 3, 4, 5, 6, 7, 16, 23]  # more than 8: PCR_Read needs several calls


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, n: int) -> bytes:
        assert self.pos + n <= len(self.data), "truncated"
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return int(struct.unpack(">H", self.take(2))[0])

    def u32(self) -> int:
        return int(struct.unpack(">I", self.take(4))[0])

    def u64(self) -> int:
        return int(struct.unpack(">Q", self.take(8))[0])

    def tpm2b(self) -> bytes:
        return self.take(self.u16())


@dataclass(frozen=True)
class _QuoteInfo:
    magic: int
    type: int
    extra_data: bytes
    reset_count: int
    restart_count: int
    selection: dict[int, list[int]]  # hash alg -> PCR indices
    pcr_digest: bytes


def _parse_attest(attest: bytes) -> _QuoteInfo:
    """TPMS_ATTEST with TPMS_QUOTE_INFO (TPM 2.0 Part 2, structures named so)."""
    r = _Reader(attest)
    magic, type_ = r.u32(), r.u16()
    r.tpm2b()  # qualifiedSigner
    extra_data = r.tpm2b()
    r.u64()  # clockInfo.clock
    reset_count, restart_count = r.u32(), r.u32()
    r.u8()  # clockInfo.safe
    r.u64()  # firmwareVersion
    selection: dict[int, list[int]] = {}
    for _ in range(r.u32()):
        alg = r.u16()
        bitmap = r.take(r.u8())
        selection[alg] = [i for i in range(8 * len(bitmap)) if bitmap[i // 8] >> (i % 8) & 1]
    pcr_digest = r.tpm2b()
    assert r.pos == len(attest)
    return _QuoteInfo(magic, type_, extra_data, reset_count, restart_count, selection, pcr_digest)


def _public_key(tpm2b_public: bytes) -> rsa.RSAPublicKey | ec.EllipticCurvePublicKey:
    from tpm2_pytss import TPM2B_PUBLIC

    public, _ = TPM2B_PUBLIC.unmarshal(tpm2b_public)
    key = serialization.load_der_public_key(bytes(public.to_der()))
    assert isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey)
    return key


def _verify_signature(ak: AkHandleInfo, attest: bytes, signature: bytes) -> None:
    """TPMT_SIGNATURE (Part 2) over the attest bytes, checked with `cryptography`."""
    key = _public_key(ak.public)
    r = _Reader(signature)
    sig_alg, hash_alg = r.u16(), r.u16()
    assert hash_alg == TPM_ALG_SHA256
    if isinstance(key, ec.EllipticCurvePublicKey):
        assert sig_alg == TPM_ALG_ECDSA
        der = encode_dss_signature(
            int.from_bytes(r.tpm2b(), "big"), int.from_bytes(r.tpm2b(), "big")
        )
        key.verify(der, attest, ec.ECDSA(hashes.SHA256()))
    else:
        assert sig_alg == TPM_ALG_RSASSA
        key.verify(r.tpm2b(), attest, padding.PKCS1v15(), hashes.SHA256())
    assert r.pos == len(signature)


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")  # zombies are gone too


# -- swtpm lifecycle ----------------------------------------------------------------------


def test_provision_start_stop(swtpm_ca: SoftwareTpmCa, tmp_path: Path) -> None:
    tpm = SoftwareTpm(tmp_path / "tpm", swtpm_ca)
    with pytest.raises(UsageError, match="not provisioned"):
        tpm.start()
    tpm.provision()
    assert tpm.provisioned
    tpm.start()
    pid = tpm.pid
    assert pid is not None
    assert _alive(pid)
    assert tpm.tcti == f"swtpm:path={tmp_path / 'tpm' / 'swtpm.sock'}"
    tpm.start()  # idempotent
    assert tpm.pid == pid
    tpm.stop()
    assert not _alive(pid)
    assert not tpm.running
    assert not (tmp_path / "tpm" / "swtpm.sock").exists()
    tpm.stop()  # idempotent


def test_context_manager_and_long_path(swtpm_ca: SoftwareTpmCa, tmp_path: Path) -> None:
    # Unix socket paths are limited to 108 bytes: a long state dir gets a short private socket dir.
    state = tmp_path / ("x" * 120)
    with SoftwareTpm(state, swtpm_ca) as tpm:
        socket_dir = tpm.socket_path.parent
        assert socket_dir != state
        pid = tpm.pid
        assert pid is not None
        with AgentTpm(tpm.tcti) as agent:
            assert agent.pcr_read([0]) == {0: bytes(32)}
    assert not _alive(pid)
    assert not socket_dir.exists()


def test_start_failure_reports_swtpm_log(swtpm_ca: SoftwareTpmCa, tmp_path: Path) -> None:
    tpm = SoftwareTpm(tmp_path / "tpm", swtpm_ca)
    tpm.provision()
    (tmp_path / "tpm" / "tpm2-00.permall").write_bytes(b"not a TPM state")
    with pytest.raises(BackendUnavailable, match=r"swtpm log: .*libtpms"):
        tpm.start()
    assert not tpm.running


def test_agent_on_a_missing_tpm_is_backend_unavailable(tmp_path: Path) -> None:
    pytest.importorskip("tpm2_pytss")
    with pytest.raises(BackendUnavailable, match="cannot open the TPM"):
        AgentTpm(f"swtpm:path={tmp_path / 'nothing.sock'}")


# -- endorsement key ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["rsa", "ecc"])
def test_ek_certificate_chains_to_ca_and_matches_ek(
    swtpm: SoftwareTpm, swtpm_ca: SoftwareTpmCa, kind: EkKind, capfd: pytest.CaptureFixture[str]
) -> None:
    root_pem, intermediate_pem = swtpm_ca.certificates()
    root = x509.load_pem_x509_certificate(root_pem)
    intermediate = x509.load_pem_x509_certificate(intermediate_pem)
    with AgentTpm(swtpm.tcti) as agent:
        der = agent.ek_certificate(kind)
        ek_public = agent.ek_public(kind)
    assert der is not None
    # Probing absent NV indices (the ECC L-2 slot, template/nonce indices) must stay silent.
    assert "ERROR" not in capfd.readouterr().err

    cert = x509.load_der_x509_certificate(der)
    assert cert.issuer == intermediate.subject
    cert.verify_directly_issued_by(intermediate)
    intermediate.verify_directly_issued_by(root)
    assert root.subject == root.issuer

    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    assert _public_key(ek_public).public_bytes(*spki) == cert.public_key().public_bytes(*spki)
    expected = ec.EllipticCurvePublicKey if kind == "ecc" else rsa.RSAPublicKey
    assert isinstance(cert.public_key(), expected)


# -- attestation key and quote ------------------------------------------------------------


@pytest.mark.parametrize(("ak_kind", "ek_kind"), [("ecc", "rsa"), ("rsa", "rsa"), ("ecc", "ecc")])
def test_ak_quote_verifies(swtpm: SoftwareTpm, ak_kind: AkKind, ek_kind: EkKind) -> None:
    nonce = os.urandom(32)
    with AgentTpm(swtpm.tcti) as agent:
        created = agent.create_ak(ak_kind, ek_kind)
        ak = agent.load_ak(created.public, created.private, ek_kind)
        quote = agent.quote(ak, nonce, QUOTED_PCRS)
    assert ak == created
    assert (ak.kind, ak.ek_kind) == (ak_kind, ek_kind)
    assert ak.name[:2] == struct.pack(">H", TPM_ALG_SHA256)

    info = _parse_attest(quote.attest)
    assert info.magic == TPM_GENERATED_VALUE
    assert info.type == TPM_ST_ATTEST_QUOTE
    assert info.extra_data == nonce
    assert info.selection == {TPM_ALG_SHA256: QUOTED_PCRS}
    assert list(quote.pcr_values) == QUOTED_PCRS
    assert info.pcr_digest == hashlib.sha256(b"".join(quote.pcr_values.values())).digest()
    _verify_signature(ak, quote.attest, quote.signature)


def test_quote_signature_does_not_verify_other_bytes(swtpm: SoftwareTpm) -> None:
    with AgentTpm(swtpm.tcti) as agent:
        ak = agent.create_ak("ecc")
        quote = agent.quote(ak, b"n", [0])
    tampered = quote.attest[:-1] + bytes([quote.attest[-1] ^ 1])
    with pytest.raises(InvalidSignature):
        _verify_signature(ak, tampered, quote.signature)


def test_pcr_extend_changes_quoted_values(swtpm: SoftwareTpm) -> None:
    d256, d1 = hashlib.sha256(b"event").digest(), hashlib.sha1(b"event").digest()  # noqa: S324
    with AgentTpm(swtpm.tcti) as agent:
        ak = agent.create_ak("ecc")
        before = agent.quote(ak, b"1", [7, 16])
        sha1_before = agent.pcr_read([16], "sha1")[16]
        agent.pcr_extend(16, {"sha256": d256, "sha1": d1})
        after = agent.quote(ak, b"2", [7, 16])
        assert agent.pcr_read([16], "sha1")[16] == hashlib.sha1(sha1_before + d1).digest()  # noqa: S324
        with pytest.raises(UsageError):
            agent.pcr_extend(16, {"sha256": d1})
        with pytest.raises(UsageError):
            agent.pcr_extend(24, {"sha256": d256})
    assert after.pcr_values[16] == hashlib.sha256(before.pcr_values[16] + d256).digest()
    assert after.pcr_values[7] == before.pcr_values[7]
    assert (
        _parse_attest(after.attest).pcr_digest
        == hashlib.sha256(after.pcr_values[7] + after.pcr_values[16]).digest()
    )


def test_reboot_resets_pcrs_and_increments_reset_count(swtpm: SoftwareTpm) -> None:
    with AgentTpm(swtpm.tcti) as agent:
        ak = agent.create_ak("ecc")
        agent.pcr_extend(16, {"sha256": bytes(range(32))})
        before = agent.quote(ak, b"before", [16])
        assert before.pcr_values[16] != bytes(32)
        swtpm.reboot()  # the open AgentTpm keeps working: it holds no handles between calls
        after = agent.quote(ak, b"after", [16])
    assert after.pcr_values[16] == bytes(32)
    info_before, info_after = _parse_attest(before.attest), _parse_attest(after.attest)
    assert info_after.reset_count == info_before.reset_count + 1
    assert info_after.restart_count == 0


# -- credential activation ----------------------------------------------------------------


def _make_credential(
    tcti: str, ek_public: bytes, ak_name: bytes, secret: bytes
) -> tuple[bytes, bytes]:
    """MakeCredential (Part 3 §12.6) by tpm2-pytss, on the EK public as a verifier loads it."""
    from tpm2_pytss import ESAPI, ESYS_TR, TPM2B_DIGEST, TPM2B_NAME, TPM2B_PUBLIC

    ectx = ESAPI(tcti)
    try:
        public, _ = TPM2B_PUBLIC.unmarshal(ek_public)
        handle = ectx.load_external(public, hierarchy=ESYS_TR.NULL)
        try:
            blob, encrypted = ectx.make_credential(
                handle, TPM2B_DIGEST(secret), TPM2B_NAME(ak_name)
            )
        finally:
            ectx.flush_context(handle)
    finally:
        ectx.close()
    return bytes(blob.marshal()), bytes(encrypted.marshal())


@pytest.mark.parametrize("ek_kind", ["rsa", "ecc"])
def test_activate_credential_round_trip(swtpm: SoftwareTpm, ek_kind: EkKind) -> None:
    secret = os.urandom(32)
    with AgentTpm(swtpm.tcti) as agent:
        ak = agent.create_ak("ecc", ek_kind)
        other = agent.create_ak("ecc", ek_kind)
        ek_public = agent.ek_public(ek_kind)
        blob, encrypted = _make_credential(swtpm.tcti, ek_public, ak.name, secret)
        assert agent.activate_credential(ak, blob, encrypted) == secret
        # The TPM refuses to release it to another AK (the Name is bound into the blob's HMAC).
        with pytest.raises(BackendUnavailable, match="ActivateCredential"):
            agent.activate_credential(other, blob, encrypted)
        with pytest.raises(UsageError, match="trailing"):
            agent.activate_credential(ak, blob + b"\0", encrypted)


def test_activate_credential_with_ek_other_than_ak_parent(swtpm: SoftwareTpm) -> None:
    secret = b"s" * 16
    with AgentTpm(swtpm.tcti) as agent:
        ak = agent.create_ak("ecc", "ecc")  # AK under the P-384 EK, secret for the RSA EK
        blob, encrypted = _make_credential(swtpm.tcti, agent.ek_public("rsa"), ak.name, secret)
        assert agent.activate_credential(ak, blob, encrypted, ek_kind="rsa") == secret


def test_several_tpms_are_independent(swtpm_factory: SwtpmFactory) -> None:
    first, second = swtpm_factory(), swtpm_factory()
    assert first.tcti != second.tcti
    with AgentTpm(first.tcti) as a, AgentTpm(second.tcti) as b:
        assert a.ek_public("ecc") != b.ek_public("ecc")
        a.pcr_extend(16, {"sha256": bytes(32)})
        assert b.pcr_read([16]) == {16: bytes(32)}
        assert a.pcr_read([16]) != {16: bytes(32)}
