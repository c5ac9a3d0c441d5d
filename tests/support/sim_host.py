"""A machine whose TPM is software keys (RSA-2048 EK from the TCG default template, ECC P-256
AK, RSA-2048 binding key) that produces spec-exact enrollment answers and evidence.

For the benchmark and for fuzzing the service in-process; correctness tests use swtpm.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from functools import cache
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa

from tests.support.fake_tpm import FakeAk, binding_public_bytes
from tests.support.soft_activate import soft_activate
from trustauthority.agent import simboot
from trustauthority.eventlog import parse_event_log, replay_bank
from trustauthority.tpm import Alg, Credential, TpmPublic, parse_tpmt_public
from trustauthority.tpm.constants import ObjectAttributes
from trustauthority.tpm.reader import tpm2b, u16, u32

BANK = "sha256"
ZERO = bytes(32)
#: TCG EK Credential Profile 2.5 §B.3.3 (template L-1): PolicySecret(TPM_RH_ENDORSEMENT)
EK_POLICY = bytes.fromhex("837197674484b3f81a90cc8d46a5d724fd52d76e06520b64f2a1da1b331469aa")
EK_ATTRIBUTES = (ObjectAttributes.FIXED_TPM | ObjectAttributes.FIXED_PARENT
                 | ObjectAttributes.SENSITIVE_DATA_ORIGIN | ObjectAttributes.ADMIN_WITH_POLICY
                 | ObjectAttributes.RESTRICTED | ObjectAttributes.DECRYPT)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def ek_public_bytes(key: rsa.RSAPublicKey) -> bytes:
    """The TPMT_PUBLIC of an RSA-2048 EK made from the TCG default template: a restricted
    decryption (storage) key, AES-128-CFB, nameAlg SHA-256, the EK policy, exponent default."""
    modulus = key.public_numbers().n.to_bytes(256, "big")
    return (u16(Alg.RSA) + u16(Alg.SHA256) + u32(EK_ATTRIBUTES) + tpm2b(EK_POLICY)
            + u16(Alg.AES) + u16(128) + u16(Alg.CFB) + u16(Alg.NULL) + u16(2048) + u32(0)
            + tpm2b(modulus))


@cache
def golden() -> tuple[bytes, str, dict[int, bytes]]:
    """The golden simulated boot: its event log, the log in base64, and its SHA-256 PCRs."""
    _events, raw_log = simboot.boot_log(simboot.GOLDEN_IMAGE)
    return raw_log, b64(raw_log), replay_bank(parse_event_log(raw_log), BANK)


@dataclass
class SimHost:
    """A machine whose TPM is software keys: EK (RSA-2048), AK (ECC P-256), binding key."""

    name: str
    ek_private: rsa.RSAPrivateKey
    ek: TpmPublic
    ak: FakeAk
    binding: TpmPublic
    credential: str = ""  # the host's API token, once enrolled

    @classmethod
    def create(cls, name: str) -> SimHost:
        ek_private = rsa.generate_private_key(65537, 2048)
        ek = parse_tpmt_public(ek_public_bytes(ek_private.public_key()))
        ak = FakeAk.ecc()
        ak.ek_name = ek.name  # qualifiedSigner = QN(AK) under this EK, as the service computes
        binding_key = rsa.generate_private_key(65537, 2048)
        binding = parse_tpmt_public(binding_public_bytes(binding_key.public_key()))
        return cls(name, ek_private, ek, ak, binding)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.credential}"}

    def activate(self, credential_blob: bytes, encrypted_secret: bytes) -> bytes:
        """TPM2_ActivateCredential for this host's AK, done with the EK's private key."""
        return soft_activate(self.ek_private, self.ek, self.ak.public.name,
                             Credential(credential_blob, encrypted_secret))

    def evidence_document(self, nonce: bytes, pcrs: list[int]) -> dict[str, Any]:
        """The body of `POST /v1/attestation/evidence` answering a challenge."""
        _raw, raw_b64, values = golden()
        quoted = {BANK: {pcr: values.get(pcr, ZERO) for pcr in pcrs}}
        self.ak.clock += 1  # a TPM's clock moves on between quotes
        attest, signature = self.ak.quote(nonce, quoted)
        certify_attest, certify_signature = self.ak.certify(nonce, self.binding)
        return {
            "nonce": b64(nonce),
            "quote": {"attest": b64(attest), "signature": b64(signature)},
            "pcrs": {BANK: {str(pcr): value.hex() for pcr, value in quoted[BANK].items()}},
            "event_log": raw_b64,
            "binding_key": {"public": b64(self.binding.tpm2b),
                            "certify_attest": b64(certify_attest),
                            "certify_signature": b64(certify_signature)},
        }
