"""The released key, encrypted to the host's TPM-resident binding key (JWE, RFC 7516).

`encrypt_to_binding_key` (the service) uses joserfc: compact JWE, RSA-OAEP-256 + A256GCM, the
binding key's RFC 7638 thumbprint as `kid`. `decrypt_with_tpm` (the host) is written by hand
because the private half lives in the TPM: the content key is unwrapped there
(TPM2_RSA_Decrypt, OAEP with SHA-256, empty label — what RSA-OAEP-256 is), and only the
AES-256-GCM step (associated data: the protected header as sent) happens here. The only way to
read the answer is to hold the binding key: that is the possession proof of the release.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from joserfc import jwe
from joserfc.jwk import RSAKey

from trustauthority.errors import WrappedKeyInvalid
from trustauthority.keyrelease.blob import b64url_decode

ALG = "RSA-OAEP-256"
ENC = "A256GCM"
_REGISTRY = jwe.JWERegistry(algorithms=[ALG, ENC])
MAX_JWE_CHARS = 8192


def encrypt_to_binding_key(public_key: rsa.RSAPublicKey, payload: bytes, kid: str) -> str:
    header = {"alg": ALG, "enc": ENC, "kid": kid, "cty": "application/json"}
    return jwe.encrypt_compact(header, payload, RSAKey.import_key(public_key),
                               registry=_REGISTRY)


def decrypt_with_tpm(token: str, unwrap_content_key: Callable[[bytes], bytes]) -> bytes:
    """The payload of a compact JWE whose content key `unwrap_content_key` recovers (in the
    TPM). Anything malformed or not authentic is `WrappedKeyInvalid`."""
    if not isinstance(token, str) or len(token) > MAX_JWE_CHARS:
        raise WrappedKeyInvalid("the released key is not a compact JWE")
    parts = token.split(".")
    if len(parts) != 5:
        raise WrappedKeyInvalid("the released key is not a compact JWE (five parts)")
    protected, encrypted_key, iv, ciphertext, tag = parts
    try:
        header = json.loads(b64url_decode(protected, "JWE header"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise WrappedKeyInvalid("the JWE header is not JSON") from None
    if not isinstance(header, dict) or header.get("alg") != ALG or header.get("enc") != ENC \
            or "zip" in header or "crit" in header:
        raise WrappedKeyInvalid(f"the JWE is not {ALG} + {ENC}")
    content_key = unwrap_content_key(b64url_decode(encrypted_key, "JWE encrypted key"))
    nonce = b64url_decode(iv, "JWE iv")
    if len(content_key) != 32 or len(nonce) != 12:
        raise WrappedKeyInvalid("the JWE's content key or iv has the wrong size")
    sealed = b64url_decode(ciphertext, "JWE ciphertext") + b64url_decode(tag, "JWE tag")
    try:
        return AESGCM(content_key).decrypt(nonce, sealed, protected.encode("ascii"))
    except InvalidTag:
        raise WrappedKeyInvalid("the JWE does not authenticate") from None
