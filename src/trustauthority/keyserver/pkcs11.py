"""`Pkcs11KeyServer`: primary keys in one token of an HSM's PKCS#11 module (SoftHSM2 in the tests).

Primary keys are token AES-256 keys made on the token: private, sensitive, not extractable, with
the WRAP and UNWRAP capabilities only. A key's id is the lowercase hex of its CKA_ID: 16 random
bytes for a key made here (unique, and stable: CKA_ID does not change, while CKA_LABEL is just the
name given, need not be unique and may be edited by an HSM admin); a key made with the HSM's own
tools is named by the hex of its CKA_ID too.

Wrapping. A workload key is wrapped as the 64 bytes `key || SHA-256(aad)` with AES key wrap
(RFC 3394, CKM_AES_KEY_WRAP) under the primary key, inside the token; the result is one version
byte (0x01) and the 72 wrapped bytes. SoftHSM2 2.6 offers CKM_AES_KEY_WRAP (and _PAD) to
C_WrapKey/C_UnwrapKey only: C_Encrypt with it is CKR_MECHANISM_INVALID, and a key with ENCRYPT or
DECRYPT would also serve as a raw AES-ECB oracle. So the 64 bytes enter the token as a session
generic secret (extractable, so it can be wrapped) that C_WrapKey wraps and that is destroyed
right after; unwrapping makes a session generic secret (extractable, not sensitive) whose value
is read and which is destroyed. Session objects never reach the token's storage and go with
their session.

Why this is sound: the primary key cannot leave the token (sensitive and never extractable,
attributes PKCS#11 lets no one relax), so a blob opens only through the token, for a holder of
the PIN. AES-KW carries a 64-bit integrity check over the whole 64 bytes: a blob altered
anywhere, or wrapped under another key, fails C_UnwrapKey. The caller's `aad` is bound through
its SHA-256 inside the wrapped bytes, compared in constant time: a blob presented with other
associated data (moved to another workload, relabelled) is refused even though it unwraps.
Each failure is `WrappedKeyInvalid` with the same message, so nothing tells which check failed.
AES-KW is deterministic (the same key and aad give the same blob), which is harmless for random
keys. A blob of another length or version is refused before the token sees it.
SoftHSM2 reports a failed AES-KW integrity check as CKR_GENERAL_ERROR (not
CKR_WRAPPED_KEY_INVALID); a general error is therefore taken as a bad blob only once the token
has just wrapped and unwrapped a random value under the same key (it works; the blob is at
fault), and as the token's failure otherwise.

Concurrency. python-pkcs11 calls C_Initialize with no arguments, which tells a module that no
two threads call it at once, and it releases the GIL around each call: SoftHSM2 then disables
its own locks, and eight threads on separate sessions crash the process (SIGSEGV). Every
call into a module therefore holds that module's process-wide lock; one session per server is
then as fast as a pool (an unwrap takes ~0.2 ms).

Logins. PKCS#11 logs in an application, not a session: once one session of this process is
logged in to a token every session is, C_Login answers CKR_USER_ALREADY_LOGGED_IN without
looking at the PIN, and closing a logged-in session logs every session out. So each token has
one login per process, held by a dedicated session and shared by the servers of that token;
it ends when the last of them lets go. A server whose PIN differs from the one the token
accepted for that login is refused (one token has one user PIN). A PIN the token refused is not
presented again by operations — each try counts against the token's retry limit, and a locked
token stops every process that uses it — until `check()` presents it once more.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar, cast

import pkcs11
from pkcs11 import exceptions as p11e
from pkcs11.constants import Attribute, MechanismFlag, ObjectClass
from pkcs11.mechanisms import KeyType, Mechanism
from pkcs11.types import Key, Object, Session, Token, UnwrapMixin, WrapMixin

from trustauthority.errors import KeyServerUnavailable, NotFound, WrappedKeyInvalid
from trustauthority.keyserver import KEY_BYTES, HealthReport, Pkcs11Endpoint, PrimaryKeyInfo

if TYPE_CHECKING:
    from pkcs11._pkcs11 import lib as _Lib

_T = TypeVar("_T")

#: the first byte of every blob; another value is a format this code does not know
VERSION = b"\x01"
_AAD_DIGEST_BYTES = 32
_PAYLOAD_BYTES = KEY_BYTES + _AAD_DIGEST_BYTES
#: AES-KW adds one 8-byte integrity block
_WRAPPED_BYTES = _PAYLOAD_BYTES + 8
_ID_BYTES = 16
_KEY_ID = re.compile(r"(?:[0-9a-f]{2}){1,64}")
_MECHANISM = Mechanism.AES_KEY_WRAP

#: errors by which a token says the wrapped bytes themselves are bad
_BLOB_REFUSED = (p11e.WrappedKeyInvalid, p11e.WrappedKeyLenRange, p11e.EncryptedDataInvalid,
                 p11e.EncryptedDataLenRange)
#: errors by which a token says the PIN is not accepted
_PIN_REFUSED = (p11e.PinIncorrect, p11e.PinInvalid, p11e.PinLenRange, p11e.PinLocked,
                p11e.PinExpired)
#: errors that mean our session or login went away (token reset, logged out elsewhere): the
#: operation did not happen, and a fresh session may do it
_STALE = (p11e.SessionHandleInvalid, p11e.SessionClosed, p11e.UserNotLoggedIn)

#: PINs are compared as HMACs under a key of this process: equal PINs compare equal, and the
#: login table holds nothing that is the PIN
_PIN_KEY = secrets.token_bytes(32)


class _TokenUnreachable(KeyServerUnavailable):
    """The module does not load, or the token is not there."""


class _PinRefused(KeyServerUnavailable):
    """The token does not accept our PIN."""


@dataclass
class _Login:
    """The user login of one token for this process, held by `anchor` (a session used for
    nothing else) for `users` servers."""

    anchor: Session
    pin_digest: bytes
    users: int = 0


class _Module:
    """One loaded PKCS#11 module: the lock every call into it takes, and its logins by slot."""

    def __init__(self, lib: _Lib) -> None:
        self.lib = lib
        self.lock = threading.RLock()
        self.logins: dict[int, _Login] = {}


_MODULES: dict[str, _Module] = {}
_MODULES_LOCK = threading.Lock()


def _load_module(path: str) -> _Module:
    """The module at `path`, loaded and C_Initialize'd once per process: a second C_Initialize
    fails, also for another spelling of the same file, hence the real path as key."""
    real = os.path.realpath(path)
    with _MODULES_LOCK:
        module = _MODULES.get(real)
        if module is None:
            module = _Module(pkcs11.lib(real))
            _MODULES[real] = module
        return module


def _release_login(module: _Module, slot: int, login: _Login) -> None:
    login.users -= 1
    if login.users <= 0:
        _forget_login(module, slot, login)


def _forget_login(module: _Module, slot: int, login: _Login) -> None:
    if module.logins.get(slot) is login:
        del module.logins[slot]
        _close_quietly(login.anchor)  # C_Logout, then C_CloseSession


def _pin_digest(pin: str) -> bytes:
    return hmac.new(_PIN_KEY, pin.encode("utf-8"), hashlib.sha256).digest()


def _one_line(text: str) -> str:
    return " ".join(text.split())[:200]


def _reason(error: p11e.PKCS11Error) -> str:
    """The error's class (python-pkcs11 names one per CKR_ code) and its message, if any."""
    message = _one_line(str(error))
    return f"{type(error).__name__}: {message}" if message else type(error).__name__


def _close_quietly(session: Session) -> None:
    # a session that fails to close is already gone, or goes with the module
    with contextlib.suppress(p11e.PKCS11Error):
        session.close()


def _aad_digest(aad: bytes) -> bytes:
    return hashlib.sha256(aad).digest()


def _wrap_on(session: Session, key: WrapMixin, payload: bytes) -> bytes:
    """`payload` wrapped under `key` by the token, entering it as a session object."""
    carrier = session.create_object({
        Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.KEY_TYPE: KeyType.GENERIC_SECRET,
        Attribute.TOKEN: False, Attribute.PRIVATE: True, Attribute.SENSITIVE: True,
        Attribute.EXTRACTABLE: True, Attribute.VALUE: payload})
    try:
        # an object of class SECRET_KEY is a Key (python-pkcs11 types it as a plain Object)
        return key.wrap_key(cast(Key, carrier), mechanism=_MECHANISM)
    finally:
        carrier.destroy()


def _unwrap_on(key: UnwrapMixin, wrapped: bytes) -> bytes:
    """The bytes `wrapped` holds, unwrapped by the token into a session object read once."""
    target = key.unwrap_key(
        ObjectClass.SECRET_KEY, KeyType.GENERIC_SECRET, wrapped, mechanism=_MECHANISM,
        capabilities=MechanismFlag(0),
        template={Attribute.PRIVATE: True, Attribute.SENSITIVE: False,
                  Attribute.EXTRACTABLE: True})
    try:
        return bytes(target[Attribute.VALUE])
    finally:
        target.destroy()


def _check_logged_in(session: Session) -> None:
    """Raise `UserNotLoggedIn` unless the session is logged in: a search by a session that is not
    finds no private object and raises nothing, so "no such key" is believed only after this."""
    probe = session.create_object({
        Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.KEY_TYPE: KeyType.GENERIC_SECRET,
        Attribute.TOKEN: False, Attribute.PRIVATE: True, Attribute.VALUE: bytes(16)})
    probe.destroy()


def _token_works(session: Session, key: Object) -> bool:
    """Whether the token wraps and unwraps a random value under `key` right now."""
    if not isinstance(key, WrapMixin) or not isinstance(key, UnwrapMixin):
        return False
    probe = secrets.token_bytes(_PAYLOAD_BYTES)
    try:
        return hmac.compare_digest(_unwrap_on(key, _wrap_on(session, key, probe)), probe)
    except p11e.PKCS11Error:
        return False


def _blob_refused(error: p11e.PKCS11Error, token_works: Callable[[], bool]) -> bool:
    """Whether an unwrap error means the wrapped bytes do not open (`WrappedKeyInvalid`) rather
    than that the token failed (`KeyServerUnavailable`). A general error is ambiguous (SoftHSM2
    reports a failed integrity check that way), so the token is asked to prove it works."""
    if isinstance(error, _BLOB_REFUSED):
        return True
    return isinstance(error, p11e.GeneralError) and token_works()


def _blob_invalid() -> WrappedKeyInvalid:
    return WrappedKeyInvalid("the wrapped key does not open under this primary key with this "
                             "associated data")


def _key_faults(attributes: dict[Attribute, object]) -> list[str]:
    """Why a secret key is not fit to be a primary key (empty when it is)."""
    faults = []
    if attributes.get(Attribute.KEY_TYPE) != KeyType.AES:
        faults.append("not an AES key")
    if attributes.get(Attribute.VALUE_LEN) != KEY_BYTES:
        faults.append("not 256 bits")
    if attributes.get(Attribute.WRAP) is not True or attributes.get(Attribute.UNWRAP) is not True:
        faults.append("cannot wrap and unwrap")
    if attributes.get(Attribute.EXTRACTABLE) is not False:
        faults.append("extractable: its value can leave the token")
    if attributes.get(Attribute.SENSITIVE) is not True:
        faults.append("not sensitive: its value can be read")
    return faults


class Pkcs11KeyServer:
    """The key server of one token (`Pkcs11Endpoint`): safe to share between threads; a session
    that fails is dropped and the next call opens another."""

    kind = "pkcs11"

    def __init__(self, endpoint: Pkcs11Endpoint) -> None:
        self._endpoint = endpoint
        self._module: _Module | None = None
        # the rest is guarded by the module's lock
        self._session: Session | None = None
        self._login: _Login | None = None
        self._slot = 0
        self._refused: str | None = None

    def __repr__(self) -> str:
        return f"Pkcs11KeyServer({self._endpoint!r})"

    # --- the protocol -------------------------------------------------------------------------

    def check(self) -> HealthReport:
        """Module loads, token found, PIN accepted, a random number generated (client_trusts_server
        is None: a local module has no TLS identity)."""
        started = time.perf_counter()
        try:
            module = self._load()
            with module.lock:
                # afresh: a new session, and the PIN presented again if it was refused
                self._refused = None
                self._discard(module, None)
                self._run("round trip", lambda session: session.generate_random(256))
        except _TokenUnreachable as error:
            return HealthReport(reachable=False, client_trusts_server=None,
                                server_trusts_client=None, round_trip=False, latency_ms=None,
                                detail=str(error))
        except _PinRefused as error:
            return HealthReport(reachable=True, client_trusts_server=None,
                                server_trusts_client=False, round_trip=False, latency_ms=None,
                                detail=str(error))
        except KeyServerUnavailable as error:
            return HealthReport(reachable=True, client_trusts_server=None,
                                server_trusts_client=True, round_trip=False, latency_ms=None,
                                detail=str(error))
        latency = (time.perf_counter() - started) * 1000
        return HealthReport(reachable=True, client_trusts_server=None, server_trusts_client=True,
                            round_trip=True, latency_ms=latency,
                            detail=self._say(f"logged in, round trip in {latency:.1f} ms"))

    def describe_key(self, key_id: str) -> PrimaryKeyInfo:
        cka_id = self._cka_id(key_id)
        if cka_id is None:
            raise NotFound(f"no key {key_id[:140]!r} on PKCS#11 token "
                           f"{self._endpoint.token_label!r} (key ids are hex CKA_IDs)")
        return self._run("describe a key", lambda session: self._describe(session, key_id,
                                                                          cka_id))

    def create_primary_key(self, name: str) -> str:
        cka_id = secrets.token_bytes(_ID_BYTES)
        self._run("create a key", lambda session: session.generate_key(
            KeyType.AES, KEY_BYTES * 8, id=cka_id, label=name, store=True,
            capabilities=MechanismFlag.WRAP | MechanismFlag.UNWRAP,
            template={Attribute.PRIVATE: True, Attribute.SENSITIVE: True,
                      Attribute.EXTRACTABLE: False}))
        return cka_id.hex()

    def wrap(self, key_id: str, key: bytes, aad: bytes) -> bytes:
        if len(key) != KEY_BYTES:
            raise ValueError(f"a workload key is {KEY_BYTES} bytes")
        payload = key + _aad_digest(aad)

        def wrap_on(session: Session) -> bytes:
            primary = self._primary(session, key_id)
            if not isinstance(primary, WrapMixin):
                raise self._unavailable(f"key {key_id} cannot wrap")
            return _wrap_on(session, primary, payload)

        wrapped = self._run("wrap", wrap_on)
        if len(wrapped) != _WRAPPED_BYTES:
            raise self._unavailable(f"wrap returned {len(wrapped)} bytes, not {_WRAPPED_BYTES}")
        return VERSION + wrapped

    def unwrap(self, key_id: str, wrapped: bytes, aad: bytes) -> bytes:
        if len(wrapped) != 1 + _WRAPPED_BYTES or wrapped[:1] != VERSION:
            raise WrappedKeyInvalid("not a PKCS#11 wrapped key of a version and length we know")
        payload = self._run("unwrap", lambda session: self._unwrap(session, key_id, wrapped[1:]))
        if len(payload) != _PAYLOAD_BYTES or not hmac.compare_digest(payload[KEY_BYTES:],
                                                                       _aad_digest(aad)):
            raise _blob_invalid()
        return payload[:KEY_BYTES]

    def close(self) -> None:
        module = self._module
        if module is not None:
            with module.lock:
                self._discard(module, None)

    # --- operations, run on a session -------------------------------------------------------

    def _describe(self, session: Session, key_id: str, cka_id: bytes) -> PrimaryKeyInfo:
        found = list(session.get_objects({Attribute.CLASS: ObjectClass.SECRET_KEY,
                                          Attribute.ID: cka_id}))
        if not found:
            _check_logged_in(session)
            raise NotFound(f"no key {key_id} on PKCS#11 token {self._endpoint.token_label!r}")
        if len(found) > 1:
            return PrimaryKeyInfo(key_id, "unknown", 0, False,
                                  f"{len(found)} secret keys have this CKA_ID")
        attributes = found[0].get_attributes([
            Attribute.LABEL, Attribute.KEY_TYPE, Attribute.VALUE_LEN, Attribute.WRAP,
            Attribute.UNWRAP, Attribute.EXTRACTABLE, Attribute.SENSITIVE,
            Attribute.NEVER_EXTRACTABLE])
        key_type = attributes.get(Attribute.KEY_TYPE)
        algorithm = key_type.name if isinstance(key_type, KeyType) else str(key_type)
        length = attributes.get(Attribute.VALUE_LEN)
        faults = _key_faults(attributes)
        detail = f"label {attributes.get(Attribute.LABEL)!r}: " + (
            "; ".join(faults) if faults else "AES-256, wraps and unwraps, never leaves the token")
        if not faults and attributes.get(Attribute.NEVER_EXTRACTABLE) is not True:
            detail += " (imported, or extractable once: copies may exist elsewhere)"
        return PrimaryKeyInfo(key_id, algorithm, length * 8 if isinstance(length, int) else 0,
                              not faults, detail)

    def _unwrap(self, session: Session, key_id: str, wrapped: bytes) -> bytes:
        primary = self._primary(session, key_id)
        if not isinstance(primary, UnwrapMixin):
            raise self._unavailable(f"key {key_id} cannot unwrap")
        try:
            return _unwrap_on(primary, wrapped)
        except p11e.PKCS11Error as error:
            if _blob_refused(error, lambda: _token_works(session, primary)):
                raise _blob_invalid() from None
            raise

    def _primary(self, session: Session, key_id: str) -> Object:
        """The secret key `key_id`; a server without it is unavailable for it (another server of
        the provider may have it)."""
        cka_id = self._cka_id(key_id)
        found = [] if cka_id is None else list(session.get_objects({
            Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.KEY_TYPE: KeyType.AES,
            Attribute.ID: cka_id}))
        if not found:
            _check_logged_in(session)
        if len(found) != 1:
            what = "no" if not found else f"{len(found)} AES keys with"
            raise self._unavailable(f"{what} key id {key_id[:140]!r}")
        return found[0]

    # --- sessions -----------------------------------------------------------------------------

    def _run(self, what: str, operation: Callable[[Session], _T]) -> _T:
        """`operation` on this server's session, under the module's lock; a PKCS#11 error drops
        the session and is `KeyServerUnavailable`. Our own errors pass through."""
        module = self._load()
        with module.lock:
            try:
                try:
                    return self._attempt(module, operation)
                except _STALE:
                    return self._attempt(module, operation)
            except p11e.PKCS11Error as error:
                raise self._unavailable(f"cannot {what}: {_reason(error)}") from error

    def _attempt(self, module: _Module, operation: Callable[[Session], _T]) -> _T:
        session = self._open(module)
        try:
            return operation(session)
        except p11e.PKCS11Error as error:
            self._discard(module, error)
            raise

    def _load(self) -> _Module:
        if self._module is None:
            try:
                self._module = _load_module(self._endpoint.module)
            except p11e.PKCS11Error as error:
                raise _TokenUnreachable(
                    self._say(f"the module does not load: {_reason(error)}")) from error
        return self._module

    def _open(self, module: _Module) -> Session:
        """This server's session, opened (and the token logged in to) if need be."""
        if self._session is not None:
            return self._session
        if self._refused is not None:
            raise _PinRefused(self._refused)
        token = self._token(module)
        slot = token.slot.slot_id
        login = self._log_in(module, token, slot)
        try:
            session = token.open(rw=True)
        except p11e.PKCS11Error as error:
            _release_login(module, slot, login)
            raise self._unavailable(f"cannot open a session: {_reason(error)}") from error
        self._session, self._login, self._slot = session, login, slot
        return session

    def _token(self, module: _Module) -> Token:
        label = self._endpoint.token_label
        try:
            return module.lib.get_token(token_label=label)
        except p11e.NoSuchToken:
            raise _TokenUnreachable(self._say("no token has this label")) from None
        except p11e.MultipleTokensReturned:
            raise _TokenUnreachable(self._say("several tokens have this label")) from None
        except p11e.PKCS11Error as error:
            raise _TokenUnreachable(
                self._say(f"the slots cannot be listed: {_reason(error)}")) from error

    def _log_in(self, module: _Module, token: Token, slot: int) -> _Login:
        """A share of this process's login to the token, made with our PIN if there is none."""
        digest = _pin_digest(self._endpoint.pin)
        login = module.logins.get(slot)
        if login is not None:
            if not hmac.compare_digest(login.pin_digest, digest):
                raise self._refuse("user PIN refused (not the PIN the token accepted for this "
                                   "process's login)")
            login.users += 1
            return login
        try:
            anchor = token.open(user_pin=self._endpoint.pin)
        except _PIN_REFUSED as error:
            raise self._refuse(f"user PIN refused ({type(error).__name__})") from None
        except p11e.UserAlreadyLoggedIn:
            raise self._unavailable("already logged in by other code in this process, so the "
                                    "PIN cannot be checked") from None
        except p11e.PKCS11Error as error:
            raise self._unavailable(f"cannot log in: {_reason(error)}") from error
        login = _Login(anchor, digest, users=1)
        module.logins[slot] = login
        return login

    def _refuse(self, reason: str) -> _PinRefused:
        self._refused = self._say(reason)
        return _PinRefused(self._refused)

    def _discard(self, module: _Module, error: p11e.PKCS11Error | None) -> None:
        """Drop this server's session and its share of the login; a login the token says is gone
        is forgotten, so the next session logs in again."""
        session, login = self._session, self._login
        self._session = self._login = None
        if session is not None:
            _close_quietly(session)
        if login is None:
            return
        if isinstance(error, p11e.UserNotLoggedIn):
            _forget_login(module, self._slot, login)
        else:
            _release_login(module, self._slot, login)

    # --- words --------------------------------------------------------------------------------

    @staticmethod
    def _cka_id(key_id: str) -> bytes | None:
        return bytes.fromhex(key_id) if _KEY_ID.fullmatch(key_id) else None

    def _say(self, what: str) -> str:
        return (f"PKCS#11 token {self._endpoint.token_label!r} of "
                f"{_one_line(self._endpoint.module)}: {what}")

    def _unavailable(self, what: str) -> KeyServerUnavailable:
        return KeyServerUnavailable(self._say(what))
