"""The host agent's TPM layer: EK certificates and keys, AKs, quotes, PCRs, ActivateCredential.

Built on tpm2-pytss (ESAPI); callers get TPM wire-format bytes and frozen dataclasses, never pytss
objects, because the verifier side parses TPM structures itself.

The TCTI string picks the TPM: ``device:/dev/tpmrm0`` in production (the kernel resource manager),
``swtpm:path=...`` for a software TPM. swtpm has no resource manager and only three transient
object slots, so every method here loads what it needs and flushes it in ``finally``: no handle
outlives a call, and an `AgentTpm` keeps working across a TPM reboot (see `SoftwareTpm.reboot`).

Key hierarchy (TCG EK Credential Profile 2.x; TPM 2.0 Part 1 "Credential Protection")::

    endorsement hierarchy
      EK (primary, re-created from its template each time; RSA-2048 L-1 or ECC H-3 / L-2)
        AK (restricted signing key, ECC P-256/ECDSA-SHA256 or RSA-2048/RSASSA-SHA256)
        binding key (RSA-2048 decryption key, certified by the AK; secrets come OAEP-encrypted
                     to it and are decrypted inside the TPM)
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal

from trustauthority.errors import BackendUnavailable, TpmFormatError, UsageError
from trustauthority.tpm import (
    PcrSelection,
    QuoteInfo,
    RsaParms,
    parse_attest,
    parse_tpm2b_public,
    pcr_digest,
)
from trustauthority.tpm.constants import alg_name, hash_supported
from trustauthority.tpm.pcr import pcrs_of_bitmap
from trustauthority.verify.ekcert import trim_der

try:
    from tpm2_pytss import (
        ESAPI,
        ESYS_TR,
        TPM2_ALG,
        TPM2_CAP,
        TPM2_PT_NV,
        TPM2_RC,
        TPM2_SE,
        TPM2_SU,
        TPM2B_DATA,
        TPM2B_DIGEST,
        TPM2B_ENCRYPTED_SECRET,
        TPM2B_ID_OBJECT,
        TPM2B_PRIVATE,
        TPM2B_PUBLIC,
        TPM2B_SENSITIVE_CREATE,
        TPM2B_SENSITIVE_DATA,
        TPMA_OBJECT,
        TPML_DIGEST_VALUES,
        TPML_PCR_SELECTION,
        TPMS_KEYEDHASH_PARMS,
        TPMS_SCHEME_HASH,
        TPMS_SENSITIVE_CREATE,
        TPMT_HA,
        TPMT_KEYEDHASH_SCHEME,
        TPMT_PUBLIC,
        TPMT_RSA_DECRYPT,
        TPMT_SIG_SCHEME,
        TPMT_SYM_DEF,
        TPMU_ASYM_SCHEME,
        TPMU_HA,
        TPMU_PUBLIC_PARMS,
        TSS2_Exception,
    )
    from tpm2_pytss.utils import NoSuchIndex, create_ek_template

    _IMPORT_ERROR: ImportError | None = None
except ImportError as _e:  # the agent extra is optional; fail at use, with a hint
    _IMPORT_ERROR = _e

__all__ = ["AgentTpm", "AkHandleInfo", "AkKind", "BindingKeyInfo", "EkKind", "Quote",
           "SealedSecret"]

EkKind = Literal["rsa", "ecc"]
AkKind = Literal["ecc", "rsa"]

# EK profiles per kind, in order of preference: (pytss template name, certificate NV index).
# TCG EK Credential Profile 2.4 §2.2.1.4 (low range) and §2.2.1.5 (high range). A profile is used
# when its certificate index exists; otherwise the first one (low range needs no certificate).
_EK_PROFILES: dict[str, tuple[tuple[str, int], ...]] = {
    "rsa": (("EK-RSA2048", 0x01C00002),),  # L-1
    "ecc": (("EK-ECC256", 0x01C0000A), ("EK-HIGH-ECC384", 0x01C00016)),  # L-2, H-3 (swtpm)
}

_AK_TEMPLATES: dict[str, str] = {
    # ":null" = no symmetric algorithm, required for a signing (non-storage) key.
    "ecc": "ecc256:ecdsa-sha256:null",
    "rsa": "rsa2048:rsassa-sha256:null",
}

# Scheme NULL: the padding is named by each TPM2_RSA_Decrypt (always OAEP-SHA256 here); ":null"
# symmetric, as for the AKs, because only a storage (restricted decrypt) key may have one.
_BINDING_TEMPLATE = "rsa2048:null:null"

_BANKS: dict[str, tuple[str, int]] = {  # bank name -> (TPM2_ALG name, digest size)
    "sha1": ("SHA1", 20),
    "sha256": ("SHA256", 32),
    "sha384": ("SHA384", 48),
    "sha512": ("SHA512", 64),
}

_PCR_COUNT = 24  # TCG PC Client Platform TPM Profile: 24 PCRs per bank
_MAX_SEALED = 128  # MAX_SYM_DATA (Part 2 §10.4.7): the most a sealed data object holds
_MAX_NONCE = 64  # TPM2B_DATA holds at most sizeof(TPMT_HA) - 2 (Part 2 §10.4.3)
_QUOTE_ATTEMPTS = 3
_NV_INDEX_FIRST = 0x01000000  # TPM_HT_NV_INDEX << 24 (Part 2 §7.2)
_TPM_RC_HANDLE_P1 = 0x18B  # TPM_RC_HANDLE for the first handle: no such NV index


@dataclass(frozen=True)
class AkHandleInfo:
    """An attestation key as the agent stores it between runs (all TPM wire format).

    ``private`` is wrapped by the parent EK's seed: it only loads on this TPM, under that EK.
    """

    kind: AkKind
    ek_kind: EkKind
    public: bytes  # marshalled TPM2B_PUBLIC
    private: bytes  # marshalled TPM2B_PRIVATE
    name: bytes  # TPM2B_NAME contents: nameAlg (u16) || H_nameAlg(TPMT_PUBLIC), Part 1 "Names"


@dataclass(frozen=True)
class BindingKeyInfo:
    """A binding key as the agent stores it between runs (all TPM wire format).

    An RSA-2048 decryption key under the EK of ``ek_kind``; like an AK's, ``private`` is wrapped
    by that EK's seed, so it only loads on this TPM.
    """

    ek_kind: EkKind
    public: bytes  # marshalled TPM2B_PUBLIC
    private: bytes  # marshalled TPM2B_PRIVATE
    name: bytes  # TPM2B_NAME contents: nameAlg (u16) || H_nameAlg(TPMT_PUBLIC)


@dataclass(frozen=True)
class SealedSecret:
    """A secret sealed to this TPM under a PCR policy (TPM2_Create of a keyed-hash data object
    under the EK, authPolicy = PolicyPCR): it unseals only on this TPM, and only while the
    PCRs hold the values they held when it was sealed."""

    ek_kind: EkKind
    public: bytes  # marshalled TPM2B_PUBLIC
    private: bytes  # marshalled TPM2B_PRIVATE
    bank: str
    pcrs: tuple[int, ...]


@dataclass(frozen=True)
class Quote:
    """A TPM2_Quote and the PCR values it covers (Part 3 §18.4)."""

    attest: bytes  # marshalled TPMS_ATTEST (the TPM2B_ATTEST contents, without the size)
    signature: bytes  # marshalled TPMT_SIGNATURE
    bank: str
    pcr_values: dict[int, bytes]  # ascending PCR order; their digest equals the quoted pcrDigest


def _require_pytss() -> None:
    if _IMPORT_ERROR is not None:
        raise BackendUnavailable(
            f"tpm2-pytss is not installed ({_IMPORT_ERROR}); install trustauthority[agent]"
        )


def _check_kind(kind: str, allowed: Mapping[str, object], what: str) -> None:
    if kind not in allowed:
        raise UsageError(f"unknown {what} {kind!r}; expected one of {sorted(allowed)}")


def _selection(bank: str, pcrs: Sequence[int]) -> tuple[list[int], Any]:
    _check_kind(bank, _BANKS, "PCR bank")
    wanted = sorted(set(pcrs))
    if not wanted:
        raise UsageError("select at least one PCR")
    if wanted[0] < 0 or wanted[-1] >= _PCR_COUNT:
        raise UsageError(f"PCR indices must be in 0..{_PCR_COUNT - 1}, got {list(pcrs)}")
    return wanted, TPML_PCR_SELECTION.parse(f"{bank}:{','.join(map(str, wanted))}")


def _selected(pcr_selection_out: Any) -> list[int]:
    """PCR indices set in a TPML_PCR_SELECTION with one bank (Part 2 §10.6.2: bit n of byte n/8)."""
    if int(pcr_selection_out.count) == 0:
        return []
    sel = pcr_selection_out.pcrSelections[0]
    return sorted(pcrs_of_bitmap(bytes(sel.pcrSelect)[: int(sel.sizeofSelect)]) or ())


class AgentTpm:
    """One open ESAPI connection to a TPM; use as a context manager (closes the connection)."""

    def __init__(self, tcti: str) -> None:
        _require_pytss()
        self.tcti = tcti
        try:
            self._ectx: Any = ESAPI(tcti)
        except TSS2_Exception as e:
            raise BackendUnavailable(f"cannot open the TPM via TCTI {tcti!r}: {e}") from e
        self._ek_templates: dict[str, tuple[str, int, Any]] = {}
        self._nv_indices: set[int] | None = None
        self._nv_buffer_max: int | None = None

    def close(self) -> None:
        if self._ectx is not None:
            self._ectx.close()
            self._ectx = None

    def __enter__(self) -> AgentTpm:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- plumbing --------------------------------------------------------------------------

    def _call(self, command: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if self._ectx is None:
            raise UsageError("the AgentTpm is closed")
        try:
            return fn(*args, **kwargs)
        except TSS2_Exception as e:
            raise BackendUnavailable(f"{command} failed: {e}") from e

    def _flush(self, handle: Any) -> None:
        # Only fails if the handle is already gone (a TPM reset in between); nothing leaks.
        with contextlib.suppress(TSS2_Exception):
            self._ectx.flush_context(handle)

    def _defined_nv_indices(self) -> set[int]:
        # Listing the indices first, instead of probing with NV_ReadPublic, keeps libtss2 from
        # logging an ESYS error for every absent index (no need to silence TSS2_LOG globally).
        if self._nv_indices is None:
            found: set[int] = set()
            start, more = _NV_INDEX_FIRST, True
            while more:
                more, data = self._call(
                    "TPM2_GetCapability", self._ectx.get_capability, TPM2_CAP.HANDLES, start, 256
                )
                handles = data.data.handles
                batch = [int(handles.handle[i]) for i in range(int(handles.count))]
                if not batch:
                    break
                found.update(batch)
                start = max(batch) + 1
            self._nv_indices = found
        return self._nv_indices

    def _nv_read(self, index: int) -> bytes:
        if index not in self._defined_nv_indices():
            raise NoSuchIndex(index)
        ectx = self._ectx
        if self._nv_buffer_max is None:
            _, data = self._call(
                "TPM2_GetCapability",
                ectx.get_capability,
                TPM2_CAP.TPM_PROPERTIES,
                TPM2_PT_NV.BUFFER_MAX,
                1,
            )
            props = data.data.tpmProperties
            # 512: the smallest NV buffer the PC Client TPM profile allows
            self._nv_buffer_max = int(props.tpmProperty[0].value) if int(props.count) else 512
        chunk = self._nv_buffer_max
        try:
            nvh = ectx.tr_from_tpmpublic(index)
        except TSS2_Exception as e:
            if e.rc == _TPM_RC_HANDLE_P1:
                raise NoSuchIndex(index) from e
            raise BackendUnavailable(f"TPM2_NV_ReadPublic(0x{index:08x}) failed: {e}") from e
        try:
            nv_public, _ = self._call("TPM2_NV_ReadPublic", ectx.nv_read_public, nvh)
            size = int(nv_public.nvPublic.dataSize)
            out = b""
            while len(out) < size:
                part = self._call(
                    "TPM2_NV_Read", ectx.nv_read, nvh, min(chunk, size - len(out)), len(out)
                )
                out += bytes(part)
            return out
        finally:
            ectx.tr_close(nvh)  # frees the ESYS_TR only; NV indices are not TPM objects

    def _ek_profile(self, kind: EkKind) -> tuple[str, int, Any]:
        """(template name, certificate index, TPM2B_PUBLIC template) for this TPM's EK."""
        _check_kind(kind, _EK_PROFILES, "EK kind")
        if kind not in self._ek_templates:
            profiles = _EK_PROFILES[kind]
            defined = self._defined_nv_indices()
            name, cert_index = next((p for p in profiles if p[1] in defined), profiles[0])
            try:
                _, template = create_ek_template(name, self._nv_read)
            except ValueError as e:  # high range profile without its certificate
                raise BackendUnavailable(f"no {name} on this TPM: {e}") from e
            self._ek_templates[kind] = (name, cert_index, template)
        return self._ek_templates[kind]

    @contextmanager
    def _ek(self, kind: EkKind) -> Iterator[tuple[Any, Any]]:
        """Create the EK as a transient primary (deterministic from its template); flush after."""
        _, _, template = self._ek_profile(kind)
        handle, public, _, _, _ = self._call(
            "TPM2_CreatePrimary(EK)",
            self._ectx.create_primary,
            TPM2B_SENSITIVE_CREATE(),
            template,
            ESYS_TR.ENDORSEMENT,
        )
        try:
            yield handle, public
        finally:
            self._flush(handle)

    @contextmanager
    def _ek_auth(self, ek_public: Any) -> Iterator[Any]:
        """A session authorising the USER role of the EK, for one command.

        The L-1/L-2 EKs (EK Credential Profile templates) have userWithAuth clear and authPolicy =
        PolicySecret(TPM_RH_ENDORSEMENT); the H-templates as swtpm provisions them set
        userWithAuth, so their empty authValue works and the policy would fail.
        """
        if int(ek_public.publicArea.objectAttributes) & int(TPMA_OBJECT.USERWITHAUTH):
            yield ESYS_TR.PASSWORD
            return
        session = self._call(
            "TPM2_StartAuthSession",
            self._ectx.start_auth_session,
            ESYS_TR.NONE,
            ESYS_TR.NONE,
            TPM2_SE.POLICY,
            TPMT_SYM_DEF(algorithm=TPM2_ALG.NULL),
            TPM2_ALG.SHA256,
        )
        try:
            self._call("TPM2_PolicySecret", self._ectx.policy_secret, ESYS_TR.ENDORSEMENT, session)
            yield session
        finally:
            self._flush(session)

    @contextmanager
    def _loaded_ak(self, ak: AkHandleInfo, parent: tuple[Any, Any] | None = None) -> Iterator[Any]:
        """Load the AK under its EK (created here unless given), drop the EK, yield the AK."""
        public = _unmarshal(TPM2B_PUBLIC, ak.public, "AK public")
        private = _unmarshal(TPM2B_PRIVATE, ak.private, "AK private")
        if parent is None:
            with self._ek(ak.ek_kind) as ek, self._ek_auth(ek[1]) as auth:
                handle = self._call(
                    "TPM2_Load(AK)", self._ectx.load, ek[0], private, public, session1=auth
                )
        else:
            with self._ek_auth(parent[1]) as auth:
                handle = self._call(
                    "TPM2_Load(AK)", self._ectx.load, parent[0], private, public, session1=auth
                )
        try:
            yield handle
        finally:
            self._flush(handle)

    @contextmanager
    def _loaded_keys(self, *keys: tuple[EkKind, bytes, bytes, str]) -> Iterator[list[Any]]:
        """Load each (ek_kind, public, private, what) under its EK; yield handles in that order.

        Each EK is created once and flushed before the yield: swtpm has three object slots, so
        an EK and two keys fit while loading, and a second EK fits once the first is gone.
        """
        blobs = [
            (
                ek_kind,
                _unmarshal(TPM2B_PUBLIC, public, f"{what} public"),
                _unmarshal(TPM2B_PRIVATE, private, f"{what} private"),
                what,
            )
            for ek_kind, public, private, what in keys
        ]
        handles: dict[int, Any] = {}
        try:
            for ek_kind in dict.fromkeys(blob[0] for blob in blobs):
                with self._ek(ek_kind) as (ek, ek_public):
                    for index, (kind, public, private, what) in enumerate(blobs):
                        if kind != ek_kind:
                            continue
                        # a fresh session per load: a policy session is spent by each command
                        with self._ek_auth(ek_public) as auth:
                            handles[index] = self._call(
                                f"TPM2_Load({what})",
                                self._ectx.load,
                                ek,
                                private,
                                public,
                                session1=auth,
                            )
            yield [handles[index] for index in range(len(blobs))]
        finally:
            for handle in handles.values():
                self._flush(handle)

    def _create_under_ek(self, ek_kind: EkKind, template: Any, what: str) -> tuple[Any, Any]:
        """TPM2_Create of a key from ``template`` under the EK: (TPM2B_PRIVATE, TPM2B_PUBLIC)."""
        with self._ek(ek_kind) as (ek, ek_public), self._ek_auth(ek_public) as auth:
            private, public, _, _, _ = self._call(
                f"TPM2_Create({what})",
                self._ectx.create,
                ek,
                TPM2B_SENSITIVE_CREATE(),
                template,
                session1=auth,
            )
        return private, public

    # -- endorsement key -------------------------------------------------------------------

    def ek_certificate(self, kind: EkKind) -> bytes | None:
        """The EK certificate (DER) from its NV index, or None if the TPM has none."""
        _, cert_index, _ = self._ek_profile(kind)
        try:
            return trim_der(self._nv_read(cert_index))
        except NoSuchIndex:
            return None

    def ek_public(self, kind: EkKind) -> bytes:
        """Marshalled TPM2B_PUBLIC of the EK created from the standard template (+ NV template)."""
        with self._ek(kind) as (_, public):
            return bytes(public.marshal())

    # -- attestation key -------------------------------------------------------------------

    def create_ak(self, kind: AkKind = "ecc", ek_kind: EkKind = "rsa") -> AkHandleInfo:
        """Create a restricted signing key under the EK (not loaded afterwards)."""
        _check_kind(kind, _AK_TEMPLATES, "AK kind")
        template = TPM2B_PUBLIC.parse(
            _AK_TEMPLATES[kind],
            # Part 2 §8.3 (TPMA_OBJECT): restricted + sign makes it an attestation key, which
            # only signs TPM-generated structures (TPM_GENERATED_VALUE); fixedTPM: never leaves.
            objectAttributes=(
                TPMA_OBJECT.FIXEDTPM
                | TPMA_OBJECT.FIXEDPARENT
                | TPMA_OBJECT.SENSITIVEDATAORIGIN
                | TPMA_OBJECT.USERWITHAUTH
                | TPMA_OBJECT.RESTRICTED
                | TPMA_OBJECT.SIGN_ENCRYPT
            ),
            nameAlg="sha256",
        )
        private, public = self._create_under_ek(ek_kind, template, "AK")
        return AkHandleInfo(
            kind=kind,
            ek_kind=ek_kind,
            public=bytes(public.marshal()),
            private=bytes(private.marshal()),
            name=bytes(public.get_name()),
        )

    def load_ak(self, public: bytes, private: bytes, ek_kind: EkKind = "rsa") -> AkHandleInfo:
        """Check that a stored AK loads under this TPM's EK; return it with its TPM-given Name."""
        pub = _unmarshal(TPM2B_PUBLIC, public, "AK public")
        alg = int(pub.publicArea.type)
        kinds: dict[int, AkKind] = {int(TPM2_ALG.ECC): "ecc", int(TPM2_ALG.RSA): "rsa"}
        if alg not in kinds:
            raise UsageError(f"AK public area has unsupported type 0x{alg:04x}")
        ak = AkHandleInfo(kinds[alg], ek_kind, bytes(public), bytes(private), b"")
        with self._loaded_ak(ak) as handle:
            name = self._call("Esys_TR_GetName", self._ectx.tr_get_name, handle)
        return AkHandleInfo(kinds[alg], ek_kind, bytes(public), bytes(private), bytes(name))

    # -- binding key ----------------------------------------------------------------------

    def create_binding_key(self, ek_kind: EkKind = "rsa") -> BindingKeyInfo:
        """Create an RSA-2048 decryption key under the EK (not loaded afterwards)."""
        template = TPM2B_PUBLIC.parse(
            _BINDING_TEMPLATE,
            # Part 2 §8.3: fixedTPM/fixedParent keep the private key in this TPM (what makes a
            # secret encrypted to it bound to the host); decrypt without restricted lets it
            # decrypt data from outside the TPM; no sign, so the key has exactly one use.
            objectAttributes=(
                TPMA_OBJECT.FIXEDTPM
                | TPMA_OBJECT.FIXEDPARENT
                | TPMA_OBJECT.SENSITIVEDATAORIGIN
                | TPMA_OBJECT.USERWITHAUTH
                | TPMA_OBJECT.DECRYPT
            ),
            nameAlg="sha256",
        )
        private, public = self._create_under_ek(ek_kind, template, "binding key")
        return BindingKeyInfo(
            ek_kind=ek_kind,
            public=bytes(public.marshal()),
            private=bytes(private.marshal()),
            name=bytes(public.get_name()),
        )

    def certify(self, ak: AkHandleInfo, key: BindingKeyInfo, nonce: bytes) -> tuple[bytes, bytes]:
        """TPM2_Certify (Part 3 §18.2) of ``key`` by ``ak``, with ``nonce`` as qualifyingData.

        Returns (TPMS_ATTEST without its size, marshalled TPMT_SIGNATURE), as `quote` does; the
        attest's TPMS_CERTIFY_INFO names the binding key, so a verifier can trust its public area.
        """
        if len(nonce) > _MAX_NONCE:
            raise UsageError(f"nonce is {len(nonce)} bytes; at most {_MAX_NONCE}")
        with self._loaded_keys(
            (ak.ek_kind, ak.public, ak.private, "AK"),
            (key.ek_kind, key.public, key.private, "binding key"),
        ) as (ak_handle, key_handle):
            attest, signature = self._call(
                "TPM2_Certify",
                self._ectx.certify,
                key_handle,
                ak_handle,
                nonce,
                TPMT_SIG_SCHEME(scheme=TPM2_ALG.NULL),  # the AK's own scheme
                # objectHandle: ADMIN role, and adminWithPolicy is clear, so the empty authValue;
                # signHandle: USER role, userWithAuth is set
                session1=ESYS_TR.PASSWORD,
                session2=ESYS_TR.PASSWORD,
            )
        return bytes(attest), bytes(signature.marshal())

    def rsa_decrypt(self, key: BindingKeyInfo, ciphertext: bytes, label: bytes = b"") -> bytes:
        """TPM2_RSA_Decrypt (Part 3 §14.3) with RSAES-OAEP-SHA256 (MGF1-SHA256).

        ``label`` is the OAEP label exactly as the encryptor used it. The TPM only accepts an
        empty label or one ending in a zero byte (IsLabelProperlyFormatted, Part 4), and that
        zero is part of the label: encrypt with ``OAEP(..., label=b"purpose\0")`` and pass the
        same bytes here. An empty label matches `cryptography`'s ``OAEP(label=None)``.
        """
        if label and label[-1] != 0:
            raise UsageError("a non-empty OAEP label must end with a zero byte (TPM convention)")
        if len(label) > _MAX_NONCE:
            raise UsageError(f"label is {len(label)} bytes; at most {_MAX_NONCE}")
        try:
            parms = parse_tpm2b_public(key.public).parms
        except TpmFormatError as e:
            raise UsageError(f"binding key public: {e}") from e
        if not isinstance(parms, RsaParms):
            raise UsageError("the binding key is not an RSA key")
        # RSA ciphertexts are exactly as long as the modulus (RFC 8017 §7.1.2)
        size = len(parms.modulus)
        if len(ciphertext) != size:
            raise UsageError(f"ciphertext is {len(ciphertext)} bytes; the key needs {size}")
        scheme = TPMT_RSA_DECRYPT(
            scheme=TPM2_ALG.OAEP,
            details=TPMU_ASYM_SCHEME(oaep=TPMS_SCHEME_HASH(hashAlg=TPM2_ALG.SHA256)),
        )
        with self._loaded_keys((key.ek_kind, key.public, key.private, "binding key")) as (handle,):
            message = self._call(
                "TPM2_RSA_Decrypt",
                self._ectx.rsa_decrypt,
                handle,
                ciphertext,
                scheme,
                TPM2B_DATA(label),
                session1=ESYS_TR.PASSWORD,  # USER role; userWithAuth is set
            )
        return bytes(message)

    # -- sealing -----------------------------------------------------------------------------

    @contextmanager
    def _pcr_policy(self, selection: Any, *, trial: bool) -> Iterator[Any]:
        """A (trial) policy session with PolicyPCR over the PCRs' current values (an empty
        pcrDigest: the TPM takes the values it holds now, Part 3 §23.7)."""
        session = self._call(
            "TPM2_StartAuthSession",
            self._ectx.start_auth_session,
            ESYS_TR.NONE,
            ESYS_TR.NONE,
            TPM2_SE.TRIAL if trial else TPM2_SE.POLICY,
            TPMT_SYM_DEF(algorithm=TPM2_ALG.NULL),
            TPM2_ALG.SHA256,
        )
        try:
            self._call("TPM2_PolicyPCR", self._ectx.policy_pcr, session, TPM2B_DIGEST(),
                       selection)
            yield session
        finally:
            self._flush(session)

    def seal(self, secret: bytes, pcrs: Sequence[int], bank: str = "sha256",
             ek_kind: EkKind = "rsa") -> SealedSecret:
        """Seal ``secret`` (at most 128 bytes) to this TPM and the current values of ``pcrs``."""
        if not 0 < len(secret) <= _MAX_SEALED:
            raise UsageError(f"a sealed secret is 1..{_MAX_SEALED} bytes, not {len(secret)}")
        wanted, selection = _selection(bank, pcrs)
        with self._pcr_policy(selection, trial=True) as trial:
            policy = self._call("TPM2_PolicyGetDigest", self._ectx.policy_get_digest, trial)
        template = TPM2B_PUBLIC(publicArea=TPMT_PUBLIC(
            type=TPM2_ALG.KEYEDHASH,
            nameAlg=TPM2_ALG.SHA256,
            # fixedTPM/fixedParent: only this TPM, under this EK, loads it; no userWithAuth:
            # the policy (these PCR values) is the only way to unseal; data from outside, so no
            # sensitiveDataOrigin; neither sign nor decrypt: a sealed data object
            objectAttributes=TPMA_OBJECT.FIXEDTPM | TPMA_OBJECT.FIXEDPARENT,
            authPolicy=policy,
            parameters=TPMU_PUBLIC_PARMS(keyedHashDetail=TPMS_KEYEDHASH_PARMS(
                scheme=TPMT_KEYEDHASH_SCHEME(scheme=TPM2_ALG.NULL))),
        ))
        sensitive = TPM2B_SENSITIVE_CREATE(
            sensitive=TPMS_SENSITIVE_CREATE(data=TPM2B_SENSITIVE_DATA(secret)))
        with self._ek(ek_kind) as (ek, ek_public), self._ek_auth(ek_public) as auth:
            private, public, _, _, _ = self._call(
                "TPM2_Create(sealed data)", self._ectx.create, ek, sensitive, template,
                session1=auth)
        return SealedSecret(ek_kind, bytes(public.marshal()), bytes(private.marshal()), bank,
                            tuple(wanted))

    def unseal(self, sealed: SealedSecret) -> bytes | None:
        """The sealed secret, or None when the PCRs no longer hold the values it was sealed
        to (another boot); a TPM that cannot be used raises BackendUnavailable."""
        _, selection = _selection(sealed.bank, sealed.pcrs)
        with self._loaded_keys((sealed.ek_kind, sealed.public, sealed.private,
                                "sealed data")) as (handle,), \
                self._pcr_policy(selection, trial=False) as session:
            if self._ectx is None:
                raise UsageError("the AgentTpm is closed")
            try:
                data = self._ectx.unseal(handle, session1=session)
            except TSS2_Exception as e:
                if e.error == TPM2_RC.POLICY_FAIL:
                    return None
                raise BackendUnavailable(f"TPM2_Unseal failed: {e}") from e
        return bytes(data)

    # -- PCRs and quotes -------------------------------------------------------------------

    def _pcr_read(self, bank: str, wanted: list[int]) -> tuple[int, dict[int, bytes]]:
        """PCR values and the pcrUpdateCounter they were read at (Part 3 §22.4).

        PCR_Read returns at most 8 digests (TPML_DIGEST); read on until all are in, and start
        over if the update counter moved between calls, so the set is one consistent snapshot.
        """
        for _ in range(_QUOTE_ATTEMPTS):
            values: dict[int, bytes] = {}
            counter: int | None = None
            consistent = True
            while len(values) < len(wanted):
                remaining = [p for p in wanted if p not in values]
                _, selection = _selection(bank, remaining)
                update_counter, selection_out, digests = self._call(
                    "TPM2_PCR_Read", self._ectx.pcr_read, selection
                )
                got = [p for p in _selected(selection_out) if p in remaining]
                if not got:
                    raise BackendUnavailable(f"PCR bank {bank} is not active on this TPM")
                if counter is not None and int(update_counter) != counter:
                    consistent = False
                    break
                counter = int(update_counter)
                for pcr, digest in zip(got, digests, strict=False):
                    values[pcr] = bytes(digest)
            if consistent and counter is not None:
                return counter, dict(sorted(values.items()))
        raise BackendUnavailable("PCRs kept changing while being read")

    def pcr_read(self, pcrs: Sequence[int], bank: str = "sha256") -> dict[int, bytes]:
        """Current values of the given PCRs in one bank, as a consistent snapshot."""
        wanted, _ = _selection(bank, pcrs)
        return self._pcr_read(bank, wanted)[1]

    def pcr_extend(self, pcr: int, digests: Mapping[str, bytes]) -> None:
        """TPM2_PCR_Extend (Part 3 §22.2): for each bank, PCR := H(PCR || digest)."""
        _selection("sha256", [pcr])  # range check
        if not digests:
            raise UsageError("pcr_extend needs at least one bank digest")
        values = []
        for bank, digest in digests.items():
            _check_kind(bank, _BANKS, "PCR bank")
            alg_name, size = _BANKS[bank]
            if len(digest) != size:
                raise UsageError(f"a {bank} digest has {size} bytes, got {len(digest)}")
            # TPMT_HA(digest=bytes) raises TypeError in pytss 3.0: the union member must be named.
            values.append(
                TPMT_HA(hashAlg=getattr(TPM2_ALG, alg_name), digest=TPMU_HA(**{bank: digest}))
            )
        self._call(
            "TPM2_PCR_Extend", self._ectx.pcr_extend, ESYS_TR(pcr), TPML_DIGEST_VALUES(values)
        )

    def quote(
        self, ak: AkHandleInfo, nonce: bytes, pcrs: Sequence[int], bank: str = "sha256"
    ) -> Quote:
        """TPM2_Quote over ``pcrs`` of ``bank`` with ``nonce`` as qualifyingData (Part 3 §18.4).

        The PCR values returned are read around the quote and kept only if their digest is the
        pcrDigest the TPM signed (else read and quote again), so they always match the quote.
        """
        if len(nonce) > _MAX_NONCE:
            raise UsageError(f"nonce is {len(nonce)} bytes; at most {_MAX_NONCE}")
        wanted, selection = _selection(bank, pcrs)
        try:
            # pcrDigest uses the hash of the signing scheme (Part 3 §18.4), not the bank's.
            scheme_hash = parse_tpm2b_public(ak.public).scheme.hash_alg
        except TpmFormatError as e:
            raise UsageError(f"AK public: {e}") from e
        if not hash_supported(scheme_hash):
            raise UsageError(f"AK signing scheme hash {alg_name(scheme_hash)} is not supported")
        quoted_selection = PcrSelection.of({bank: wanted})
        with self._loaded_ak(ak) as handle:
            for _ in range(_QUOTE_ATTEMPTS):
                _, values = self._pcr_read(bank, wanted)
                attest, signature = self._call(
                    "TPM2_Quote",
                    self._ectx.quote,
                    handle,
                    selection,
                    nonce,
                    TPMT_SIG_SCHEME(scheme=TPM2_ALG.NULL),  # the AK's own scheme
                )
                attest_bytes = bytes(attest)
                quoted = parse_attest(attest_bytes).attested
                expected = pcr_digest(scheme_hash, quoted_selection, {bank: values})
                if isinstance(quoted, QuoteInfo) and quoted.pcr_digest == expected:
                    return Quote(
                        attest=attest_bytes,
                        signature=bytes(signature.marshal()),
                        bank=bank,
                        pcr_values=values,
                    )
        raise BackendUnavailable("PCRs kept changing during the quote")

    # -- credential activation and power -------------------------------------------------

    def activate_credential(
        self,
        ak: AkHandleInfo,
        credential_blob: bytes,
        encrypted_secret: bytes,
        ek_kind: EkKind | None = None,
    ) -> bytes:
        """TPM2_ActivateCredential (Part 3 §12.5): recover the secret a verifier bound to the AK.

        Inputs are a marshalled TPM2B_ID_OBJECT and TPM2B_ENCRYPTED_SECRET made for the EK of
        ``ek_kind`` (default: the AK's parent EK). The TPM only releases the secret if the AK
        with the Name used in MakeCredential is loaded here, and that EK can decrypt the seed.
        """
        blob = _unmarshal(TPM2B_ID_OBJECT, credential_blob, "credential blob")
        secret = _unmarshal(TPM2B_ENCRYPTED_SECRET, encrypted_secret, "encrypted secret")
        kind = ek_kind or ak.ek_kind
        with self._ek(kind) as ek:
            parent = ek if kind == ak.ek_kind else None
            with self._loaded_ak(ak, parent) as ak_handle, self._ek_auth(ek[1]) as ek_auth:
                cert_info = self._call(
                    "TPM2_ActivateCredential",
                    self._ectx.activate_credential,
                    ak_handle,
                    ek[0],
                    blob,
                    secret,
                    session1=ESYS_TR.PASSWORD,  # AK, ADMIN role: adminWithPolicy is clear
                    session2=ek_auth,  # EK, USER role
                )
        return bytes(cert_info)

    def startup_clear(self) -> None:
        """TPM2_Startup(CLEAR) (Part 3 §9.3), for a TPM that was just initialised (TPM_Init)."""
        self._call("TPM2_Startup", self._ectx.startup, TPM2_SU.CLEAR)


def _unmarshal(cls: Any, data: bytes, what: str) -> Any:
    try:
        value, used = cls.unmarshal(bytes(data))
    except (TSS2_Exception, ValueError, TypeError) as e:
        raise UsageError(f"{what} does not parse as {cls.__name__}: {e}") from e
    if used != len(data):
        raise UsageError(f"{what}: {len(data) - used} trailing bytes after {cls.__name__}")
    return value
