"""Binding keys against real software TPMs: created under the EK, certified by the AK, the
certify checked by the pure verifier, and secrets encrypted to the key decrypted by the TPM.

After every agent call the TPM must hold no transient object and no session: swtpm has no
resource manager and only three object slots, so a leaked handle breaks the next command.
"""

from __future__ import annotations

import os

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from tests.conftest import SwtpmFactory
from trustauthority import errors
from trustauthority.agent.swtpm import SoftwareTpm
from trustauthority.agent.tpm import AgentTpm, AkHandleInfo, AkKind, BindingKeyInfo, EkKind
from trustauthority.tpm import (
    TPM_RH_ENDORSEMENT,
    CertifyInfo,
    hierarchy_qualified_name,
    parse_tpm2b_public,
)
from trustauthority.verify import CertifiedKey, verify_certify
from trustauthority.verify.ekcert import check_ak_attributes

pytestmark = pytest.mark.swtpm

_TRANSIENT_FIRST = 0x80000000  # TPM_HT_TRANSIENT << 24 (Part 2 §7.2)
_SESSION_RANGES = (0x02000000, 0x03000000)  # TPM_HT_LOADED_SESSION, TPM_HT_SAVED_SESSION


def _oaep(label: bytes | None = None) -> padding.OAEP:
    return padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=label)


def _handles(tpm: SoftwareTpm, first: int) -> list[int]:
    """Handles of the type of `first` the TPM reports, asked on a second connection.

    The TPM lists only that handle type, but by each handle's own value: a loaded policy session
    comes back as 0x03xxxxxx from the 0x02000000 (loaded sessions) query.
    """
    from tpm2_pytss import ESAPI, TPM2_CAP

    ectx = ESAPI(tpm.tcti)
    try:
        _, data = ectx.get_capability(TPM2_CAP.HANDLES, first, 64)
    finally:
        ectx.close()
    handles = data.data.handles
    return [int(handles.handle[i]) for i in range(int(handles.count))]


def _assert_nothing_loaded(tpm: SoftwareTpm) -> None:
    assert _handles(tpm, _TRANSIENT_FIRST) == [], "transient objects left in the TPM"
    for first in _SESSION_RANGES:
        assert _handles(tpm, first) == [], "sessions left in the TPM"


def _qualified_signer(agent: AgentTpm, ak: AkHandleInfo) -> bytes:
    """QN(AK) = nameAlg || H(QN(EK) || Name(AK)), QN(EK) from the EK this TPM presents."""
    ek = parse_tpm2b_public(agent.ek_public(ak.ek_kind))
    ek_qn = ek.qualified_name(hierarchy_qualified_name(TPM_RH_ENDORSEMENT))
    return parse_tpm2b_public(ak.public).qualified_name(ek_qn)


def _certified(agent: AgentTpm, tpm: SoftwareTpm, ak: AkHandleInfo,
               key: BindingKeyInfo) -> CertifiedKey:
    nonce = os.urandom(32)
    attest, signature = agent.certify(ak, key, nonce)
    _assert_nothing_loaded(tpm)
    return verify_certify(ak=parse_tpm2b_public(ak.public), certified_public=key.public,
                          raw_attest=attest, raw_signature=signature, expected_nonce=nonce,
                          expected_qualified_signer=_qualified_signer(agent, ak))


@pytest.mark.parametrize(("ak_kind", "ak_ek", "key_ek"), [
    ("ecc", "rsa", "rsa"),
    ("rsa", "rsa", "rsa"),
    ("ecc", "ecc", "ecc"),
    ("rsa", "ecc", "rsa"),  # two EKs: the second is created once the first is flushed
])
def test_certified_binding_key_verifies_and_decrypts(
    swtpm: SoftwareTpm, ak_kind: AkKind, ak_ek: EkKind, key_ek: EkKind
) -> None:
    secret = os.urandom(32)
    with AgentTpm(swtpm.tcti) as agent:
        ak = agent.create_ak(ak_kind, ak_ek)
        check_ak_attributes(parse_tpm2b_public(ak.public))
        key = agent.create_binding_key(key_ek)
        _assert_nothing_loaded(swtpm)
        assert key.ek_kind == key_ek
        assert key.name == parse_tpm2b_public(key.public).name

        certified = _certified(agent, swtpm, ak, key)
        assert certified.public.name == key.name
        # the TPM's qualified name of the key agrees with ours (its parent is the EK)
        ek = parse_tpm2b_public(agent.ek_public(key_ek))
        info = certified.attest.attested
        assert isinstance(info, CertifyInfo)
        assert info.qualified_name == certified.public.qualified_name(
            ek.qualified_name(hierarchy_qualified_name(TPM_RH_ENDORSEMENT)))

        ciphertext = certified.public_key.encrypt(secret, _oaep())
        assert agent.rsa_decrypt(key, ciphertext) == secret
        _assert_nothing_loaded(swtpm)


def test_oaep_label_is_the_nul_terminated_bytes(swtpm: SoftwareTpm) -> None:
    secret, label = os.urandom(32), b"trustauthority secret\0"
    with AgentTpm(swtpm.tcti) as agent:
        ak = agent.create_ak("ecc")
        key = agent.create_binding_key()
        public_key = _certified(agent, swtpm, ak, key).public_key
        ciphertext = public_key.encrypt(secret, _oaep(label))
        assert agent.rsa_decrypt(key, ciphertext, label) == secret
        with pytest.raises(errors.BackendUnavailable, match="RSA_Decrypt"):
            agent.rsa_decrypt(key, ciphertext)  # the label is bound into the padding
        _assert_nothing_loaded(swtpm)
        with pytest.raises(errors.UsageError, match="zero byte"):
            agent.rsa_decrypt(key, ciphertext, label[:-1])
        with pytest.raises(errors.UsageError, match="needs 256"):
            agent.rsa_decrypt(key, ciphertext[1:])
        # PKCS#1 v1.5 ciphertexts are refused: only OAEP is ever asked of the TPM
        with pytest.raises(errors.BackendUnavailable, match="RSA_Decrypt"):
            agent.rsa_decrypt(key, public_key.encrypt(secret, padding.PKCS1v15()))
        _assert_nothing_loaded(swtpm)


def test_secret_for_another_key_is_not_decrypted(swtpm: SoftwareTpm) -> None:
    with AgentTpm(swtpm.tcti) as agent:
        ak = agent.create_ak("ecc")
        key, other = agent.create_binding_key(), agent.create_binding_key()
        other_public = _certified(agent, swtpm, ak, other).public_key
        ciphertext = other_public.encrypt(b"for the other key", _oaep())
        with pytest.raises(errors.BackendUnavailable, match="RSA_Decrypt"):
            agent.rsa_decrypt(key, ciphertext)
        _assert_nothing_loaded(swtpm)


def test_certify_by_another_tpms_ak_is_refused(swtpm_factory: SwtpmFactory) -> None:
    host, attacker = swtpm_factory(), swtpm_factory()
    nonce = os.urandom(32)
    with AgentTpm(host.tcti) as agent, AgentTpm(attacker.tcti) as other:
        enrolled_ak = agent.create_ak("ecc")
        qualified_signer = _qualified_signer(agent, enrolled_ak)
        key = agent.create_binding_key()
        # the host's key does not even load in another TPM: its private part is wrapped by
        # the host EK's seed
        foreign_ak = other.create_ak("ecc")
        with pytest.raises(errors.BackendUnavailable, match="TPM2_Load"):
            other.certify(foreign_ak, key, nonce)
        _assert_nothing_loaded(attacker)
        # a key of the attacker's TPM, certified there, offered for the enrolled host
        foreign_key = other.create_binding_key()
        attest, signature = other.certify(foreign_ak, foreign_key, nonce)
        _assert_nothing_loaded(attacker)
    with pytest.raises(errors.SignatureInvalid):
        verify_certify(ak=parse_tpm2b_public(enrolled_ak.public),
                       certified_public=foreign_key.public, raw_attest=attest,
                       raw_signature=signature, expected_nonce=nonce,
                       expected_qualified_signer=qualified_signer)


def test_certify_names_exactly_the_key_certified(swtpm: SoftwareTpm) -> None:
    nonce = os.urandom(32)
    with AgentTpm(swtpm.tcti) as agent:
        ak = agent.create_ak("ecc")
        key, other = agent.create_binding_key(), agent.create_binding_key()
        attest, signature = agent.certify(ak, key, nonce)
        qualified_signer = _qualified_signer(agent, ak)
        with pytest.raises(errors.UsageError, match="at most 64"):
            agent.certify(ak, key, bytes(65))
        _assert_nothing_loaded(swtpm)
    with pytest.raises(errors.KeyAttributesError, match="not the binding key offered"):
        verify_certify(ak=parse_tpm2b_public(ak.public), certified_public=other.public,
                       raw_attest=attest, raw_signature=signature, expected_nonce=nonce,
                       expected_qualified_signer=qualified_signer)
    # an AK cannot pass for a binding key even though the TPM certifies it honestly
    with AgentTpm(swtpm.tcti) as agent:
        ak_attest, ak_signature = agent.certify(ak, _as_binding(ak), nonce)
    with pytest.raises(errors.KeyAttributesError, match="must be RSA"):
        verify_certify(ak=parse_tpm2b_public(ak.public), certified_public=ak.public,
                       raw_attest=ak_attest, raw_signature=ak_signature, expected_nonce=nonce)


def _as_binding(ak: AkHandleInfo) -> BindingKeyInfo:
    return BindingKeyInfo(ek_kind=ak.ek_kind, public=ak.public, private=ak.private, name=ak.name)


def test_binding_key_survives_a_reboot(swtpm: SoftwareTpm) -> None:
    secret = os.urandom(32)
    with AgentTpm(swtpm.tcti) as agent:
        ak = agent.create_ak("ecc")
        key = agent.create_binding_key()
        public_key = _certified(agent, swtpm, ak, key).public_key
        swtpm.reboot()
        assert agent.rsa_decrypt(key, public_key.encrypt(secret, _oaep())) == secret
        _certified(agent, swtpm, ak, key)
        _assert_nothing_loaded(swtpm)


@pytest.mark.parametrize("ek_kind", ["rsa", "ecc"])
def test_a_sealed_secret_opens_only_while_the_pcrs_are_unchanged(swtpm: SoftwareTpm,
                                                                  ek_kind: EkKind) -> None:
    secret = os.urandom(32)
    with AgentTpm(swtpm.tcti) as agent:
        sealed = agent.seal(secret, [0, 7, 16], ek_kind=ek_kind)
        _assert_nothing_loaded(swtpm)
        assert secret not in sealed.private  # wrapped by the EK's seed, not stored as is
        assert agent.unseal(sealed) == secret
        assert agent.unseal(sealed) == secret  # a policy session per unseal
        agent.pcr_extend(16, {"sha256": os.urandom(32)})  # another "boot" in a sealed PCR
        assert agent.unseal(sealed) is None
        _assert_nothing_loaded(swtpm)
        with pytest.raises(errors.UsageError, match=r"1\.\.128 bytes"):
            agent.seal(bytes(129), [0])
    swtpm.reboot()  # PCR 16 back to zeros: the values sealed to
    with AgentTpm(swtpm.tcti) as agent:
        assert agent.unseal(sealed) == secret


def test_a_secret_sealed_on_one_tpm_does_not_open_on_another(
        swtpm_factory: SwtpmFactory) -> None:
    first, second = swtpm_factory(), swtpm_factory()
    with AgentTpm(first.tcti) as agent:
        sealed = agent.seal(b"k" * 32, [0])
    with AgentTpm(second.tcti) as agent, pytest.raises(errors.BackendUnavailable,
                                                         match="Load"):
        agent.unseal(sealed)
