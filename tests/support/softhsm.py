"""SoftHSM2 tokens for the tests: one directory per test process, with the tokens it needs.

SoftHSM2 reads `SOFTHSM2_CONF` and lists its token directory when the module is first
C_Initialize'd, and a PKCS#11 module is initialised once per process: a token made later, or in
another directory, is invisible to the process. So the first `init_softhsm` of a process makes
the directory and every token asked for; a later call returns the same directory (its `tmp_dir`
unused), adding tokens only while the module is not yet loaded.

Keys with a known value, or extractable ones (what `Pkcs11KeyServer` never makes), are put into
a token by a child process (`python -m tests.support.softhsm`): PKCS#11 logs in a whole process,
and a login made here would be the key server's, not the test's.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pkcs11
from pkcs11 import Attribute, KeyType, ObjectClass

from trustauthority.keyserver import Pkcs11Endpoint

SOFTHSM_MODULE = "/usr/lib/softhsm/libsofthsm2.so"
TEST_PIN = "4731-ta-user"
TEST_SO_PIN = "9182-ta-so"
ROOT = Path(__file__).resolve().parents[2]

_ACTIVE: SoftHsm | None = None


#: every token the test session uses: SoftHSM2 sees no token made after it is loaded, so the
#: session's one directory (the `hsm` fixture) names them all up front
#: a token only the wrong-PIN test logs in to, so the token itself judges the PIN
REFUSAL_LABEL = "ta-refusal"
#: the token of the end-to-end key-release tests (the service runs in the test process)
E2E_LABEL = "ta-e2e"
SESSION_LABELS = ("ta-test", REFUSAL_LABEL, E2E_LABEL)


def softhsm_available() -> bool:
    return Path(SOFTHSM_MODULE).exists() and shutil.which("softhsm2-util") is not None


def _module_loaded() -> bool:
    """Whether this process has C_Initialize'd SoftHSM2 (python-pkcs11 keeps its libraries in
    `pkcs11._loaded`, by the path given)."""
    real = os.path.realpath(SOFTHSM_MODULE)
    return any(os.path.realpath(path) == real for path in pkcs11._loaded)


@dataclass(frozen=True)
class SoftHsm:
    directory: Path
    conf: Path
    label: str
    labels: tuple[str, ...]
    pin: str = TEST_PIN
    so_pin: str = TEST_SO_PIN
    module: str = SOFTHSM_MODULE

    @property
    def endpoint(self) -> Pkcs11Endpoint:
        return self.endpoint_for(self.label)

    def endpoint_for(self, label: str, pin: str | None = None) -> Pkcs11Endpoint:
        return Pkcs11Endpoint(module=self.module, token_label=label,
                              pin=self.pin if pin is None else pin)

    def import_aes_key(self, value: bytes, *, name: str = "imported", extractable: bool = False,
                       label: str | None = None) -> str:
        """A token AES key of `value` (C_CreateObject, WRAP and UNWRAP); its key id (hex
        CKA_ID). `extractable` makes it extractable and not sensitive, as no primary key is."""
        cka_id = secrets.token_bytes(16)
        self._child({"action": "import-aes", "token": label or self.label, "id": cka_id.hex(),
                     "name": name, "value": value.hex(), "extractable": extractable})
        return cka_id.hex()

    def read_key_value(self, key_id: str, label: str | None = None) -> str:
        """Try to read CKA_VALUE of key `key_id`, logged in as the user: `value:<hex>`, or
        `refused:<python-pkcs11 error>`."""
        answer = self._child({"action": "read-value", "token": label or self.label,
                              "id": key_id})
        return str(answer["outcome"])

    def _child(self, request: dict[str, Any]) -> dict[str, Any]:
        env = {**os.environ, "SOFTHSM2_CONF": str(self.conf)}
        result = subprocess.run(
            [sys.executable, "-m", "tests.support.softhsm"], cwd=ROOT, env=env, check=True,
            input=json.dumps({**request, "module": self.module, "pin": self.pin}),
            capture_output=True, text=True, timeout=60)
        answer: dict[str, Any] = json.loads(result.stdout)
        return answer


def _init_token(conf: Path, label: str) -> None:
    subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", label,
                    "--so-pin", TEST_SO_PIN, "--pin", TEST_PIN],
                   env={**os.environ, "SOFTHSM2_CONF": str(conf)}, check=True,
                   capture_output=True, timeout=60)


def _make_directory(tmp_dir: Path) -> Path:
    tokens = tmp_dir / "tokens"
    tokens.mkdir(parents=True, exist_ok=True)
    conf = tmp_dir / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {tokens}\nobjectstore.backend = file\n"
                    "log.level = ERROR\n")
    return conf


def init_softhsm(tmp_dir: Path, label: str = "ta-test", *,
                 extra_labels: tuple[str, ...] = ()) -> SoftHsm:
    """This process's SoftHSM2 directory with tokens `label` and `extra_labels` (user PIN
    `TEST_PIN`), and `SOFTHSM2_CONF` pointing at it; `.endpoint` is token `label`'s."""
    global _ACTIVE
    wanted = (label, *extra_labels)
    if _ACTIVE is None:
        if _module_loaded():
            raise RuntimeError("SoftHSM2 was loaded in this process before its directory was "
                               "made: its tokens would not be seen")
        conf = _make_directory(tmp_dir)
        os.environ["SOFTHSM2_CONF"] = str(conf)
        _ACTIVE = SoftHsm(directory=tmp_dir, conf=conf, label=label, labels=())
    missing = tuple(name for name in dict.fromkeys(wanted) if name not in _ACTIVE.labels)
    if missing and _module_loaded():
        raise RuntimeError(f"tokens {missing} are asked for after SoftHSM2 was loaded in this "
                           "process; ask for every token in the first init_softhsm call")
    for name in missing:
        _init_token(_ACTIVE.conf, name)
    _ACTIVE = replace(_ACTIVE, labels=_ACTIVE.labels + missing)
    return replace(_ACTIVE, label=label)


# --- the child process -----------------------------------------------------------------------


def _child_main() -> None:
    request = json.loads(sys.stdin.read())
    answer: dict[str, object]
    token = pkcs11.lib(request["module"]).get_token(token_label=request["token"])
    with token.open(rw=True, user_pin=request["pin"]) as session:
        if request["action"] == "import-aes":
            extractable = bool(request["extractable"])
            session.create_object({
                Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.KEY_TYPE: KeyType.AES,
                Attribute.TOKEN: True, Attribute.PRIVATE: True,
                Attribute.ID: bytes.fromhex(request["id"]), Attribute.LABEL: request["name"],
                Attribute.VALUE: bytes.fromhex(request["value"]), Attribute.WRAP: True,
                Attribute.UNWRAP: True, Attribute.EXTRACTABLE: extractable,
                Attribute.SENSITIVE: not extractable})
            answer = {"ok": True}
        else:
            key = session.get_key(object_class=ObjectClass.SECRET_KEY,
                                  id=bytes.fromhex(request["id"]))
            try:
                answer = {"outcome": f"value:{bytes(key[Attribute.VALUE]).hex()}"}
            except pkcs11.PKCS11Error as error:
                answer = {"outcome": f"refused:{type(error).__name__}"}
    print(json.dumps(answer))


if __name__ == "__main__":
    _child_main()
