"""TPMT_SIGNATURE (TPM 2.0 Part 2 §11.3.4): RSASSA, RSAPSS, ECDSA (and HMAC, parsed only)."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from trustauthority.tpm.constants import Alg, alg_name
from trustauthority.tpm.reader import Reader, new_frozen, tpm2b, u16

_ECC_SIG_ALGS = frozenset({Alg.ECDSA, Alg.ECDAA, Alg.SM2, Alg.ECSCHNORR})


@dataclass(frozen=True)
class RsaSignature:
    sig_alg: int  # RSASSA or RSAPSS
    hash_alg: int
    sig: bytes

    def marshal(self) -> bytes:
        return u16(self.sig_alg) + u16(self.hash_alg) + tpm2b(self.sig)


@dataclass(frozen=True)
class EccSignature:
    sig_alg: int  # ECDSA (others parsed, refused by the verifier)
    hash_alg: int
    r: bytes
    s: bytes

    def marshal(self) -> bytes:
        return u16(self.sig_alg) + u16(self.hash_alg) + tpm2b(self.r) + tpm2b(self.s)


@dataclass(frozen=True)
class HmacSignature:
    hash_alg: int
    digest: bytes

    sig_alg: int = Alg.HMAC


Signature = RsaSignature | EccSignature | HmacSignature


_HEAD = struct.Struct(">HHH")  # sigAlg, hash, first TPM2B size
_RSA_FAST = frozenset({int(Alg.RSASSA), int(Alg.RSAPSS)})  # ints: Enum access is slow
_ECDSA = int(Alg.ECDSA)


def parse_signature(data: bytes) -> Signature:
    """Parse a marshalled TPMT_SIGNATURE that must fill `data` exactly.

    RSA and ECDSA signatures take a struct fast path; anything else, or anything malformed,
    goes through the careful reader that names the offset of the damage.
    """
    if len(data) >= 6:
        sig_alg, hash_alg, size = _HEAD.unpack_from(data, 0)
        if sig_alg in _RSA_FAST and size <= 512 and len(data) == 6 + size:
            return new_frozen(RsaSignature, {"sig_alg": sig_alg, "hash_alg": hash_alg,
                                             "sig": data[6:]})
        if sig_alg == _ECDSA and size <= 128 and len(data) >= 8 + size:
            (s_size,) = struct.unpack_from(">H", data, 6 + size)
            if s_size <= 128 and len(data) == 8 + size + s_size:
                return new_frozen(EccSignature, {"sig_alg": sig_alg, "hash_alg": hash_alg,
                                                 "r": data[6 : 6 + size], "s": data[8 + size :]})
    return _parse_careful(data)


def _parse_careful(data: bytes) -> Signature:
    reader = Reader(data, "TPMT_SIGNATURE")
    sig_alg = reader.u16("sigAlg")
    result: Signature
    if sig_alg in (Alg.RSASSA, Alg.RSAPSS):
        result = RsaSignature(sig_alg, reader.u16("hash"), reader.tpm2b("sig", 512))
    elif sig_alg in _ECC_SIG_ALGS:
        result = EccSignature(sig_alg, reader.u16("hash"), reader.tpm2b("signatureR", 128),
                              reader.tpm2b("signatureS", 128))
    elif sig_alg == Alg.HMAC:
        hash_alg = reader.u16("hash")
        result = HmacSignature(hash_alg, reader.raw(reader.remaining, "digest"))
    else:
        raise reader.error(f"unsupported signature algorithm {alg_name(sig_alg)}", 0)
    reader.expect_end()
    return result
