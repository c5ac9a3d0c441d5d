"""The CLI's connection profiles: server URL, CA and credential, in `~/.config/trustauthority/`.

`profiles.toml` (owner-only, since it may hold a token) has one table per profile. Flags win over
environment variables (`TA_SERVER`, `TA_CA`, `TA_TOKEN`, `TA_CLIENT_CERT`, `TA_CLIENT_KEY`,
`TA_PROFILE`; the CLI's global options read them), which win over the profile.
`TA_CONFIG_DIR` moves the directory.
"""

from __future__ import annotations

import os
import shlex
import tomllib
from dataclasses import dataclass, replace
from pathlib import Path

import tomli_w

from trustauthority.errors import ConfigError, UsageError
from trustauthority.files import write_private

PROFILES_FILE = "profiles.toml"
_KEYS = ("server", "ca", "token", "client_cert", "client_key")


def config_dir() -> Path:
    if explicit := os.environ.get("TA_CONFIG_DIR"):
        return Path(explicit)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "trustauthority"


@dataclass(frozen=True)
class Profile:
    server: str | None = None
    ca: str | None = None
    token: str | None = None
    client_cert: str | None = None
    client_key: str | None = None


def _read_all() -> dict[str, dict[str, str]]:
    path = config_dir() / PROFILES_FILE
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else error
        raise ConfigError(f"cannot read {path}: {reason}; fix it, or remove it and run "
                          "`ta login` again") from None
    return {name: {k: str(v) for k, v in table.items() if k in _KEYS}
            for name, table in raw.items() if isinstance(table, dict)}


def load_profile(name: str) -> Profile:
    return Profile(**_read_all().get(name, {}))


def save_profile(name: str, profile: Profile) -> Path:
    directory = config_dir()
    profiles = _read_all()
    profiles[name] = {k: v for k, v in vars(profile).items() if v is not None}
    path = directory / PROFILES_FILE
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_private(path, tomli_w.dumps(profiles))
    except OSError as error:
        raise ConfigError(f"cannot save profile {name!r} in {path}: {error.strerror or error}; "
                          "check TA_CONFIG_DIR (or XDG_CONFIG_HOME)") from None
    return path


def resolve(name: str, given: Profile) -> Profile:
    """What the flags (or their environment variables) give, else what profile `name` holds.

    A credential is taken whole: an explicit token or certificate replaces the profile's.
    """
    profiles = _read_all()
    stored = Profile(**profiles.get(name, {}))
    if given.token or given.client_cert or given.client_key:
        stored = replace(stored, token=None, client_cert=None, client_key=None)
    resolved = Profile(**{key: getattr(given, key) or getattr(stored, key) for key in _KEYS})
    if resolved.server is None:
        login = "`ta login`" if name == "default" else f"`ta --profile {shlex.quote(name)} login`"
        # a mistyped --profile (or TA_PROFILE) looks like a missing server: say which it is
        which = (f"profile {name!r}" if name in profiles or name == "default" else
                 f"no profile {name!r} is saved; saved: {', '.join(sorted(profiles)) or 'none'}")
        raise UsageError(f"no server URL: pass --server, set TA_SERVER, or run {login} ({which})")
    return resolved
