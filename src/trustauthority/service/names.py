"""The names operators give objects (principals, clusters, baselines): one rule, one message."""

from __future__ import annotations

import re

from trustauthority.errors import UsageError

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
#: principals may be named like mail addresses (alice@example.com)
_PRINCIPAL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$")


def check_name(kind: str, name: str) -> str:
    """`name` if it is a valid name for a `kind` ("cluster", "baseline", "principal")."""
    pattern = _PRINCIPAL_NAME if kind == "principal" else _NAME
    if not pattern.match(name):
        allowed = "'.', '_', '@', '-'" if kind == "principal" else "'.', '_', '-'"
        raise UsageError(f"{name[:64]!r} is not a valid {kind} name (letters, digits, "
                         f"{allowed}; up to 128 characters)")
    return name
