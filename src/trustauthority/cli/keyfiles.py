"""Public keys the operator gives the CLI as files: a PEM or DER SubjectPublicKeyInfo (what
`openssl pkey -pubout` writes) or a TPM public area, TPM2B_PUBLIC or TPMT_PUBLIC (what
`tpm2_createak -u` and `tpm2_readpublic -o` write)."""

from __future__ import annotations

from cryptography.hazmat.primitives.serialization import load_der_public_key, load_pem_public_key

from trustauthority.cli.output import EXIT_USAGE, fail
from trustauthority.errors import TrustAuthorityError
from trustauthority.tpm import TpmPublic, parse_public, public_from_key


def load_public_area(data: bytes, *, option: str, hint: str, as_json: bool) -> TpmPublic:
    """The key in `data` as a TPM public area; exit 2 naming `option` when it is none of the
    formats above."""
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            public = public_from_key(load_pem_public_key(data))
        else:
            try:
                public = parse_public(data)
            except TrustAuthorityError:
                public = public_from_key(load_der_public_key(data))
        _ = public.public_key  # an RSA or ECC key (not, say, a keyed-hash object)
        return public
    except (ValueError, TypeError, TrustAuthorityError):
        # not cryptography's ASN.1 diagnostics: which of the formats tried was meant is unknown
        fail(f"{option} is neither a PEM/DER public key nor a TPM public area (TPM2B_PUBLIC or "
             f"TPMT_PUBLIC); {hint}", EXIT_USAGE, as_json=as_json)
