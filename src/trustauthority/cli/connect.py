"""How a CLI command reaches the service: global flags, environment, profile -> a client."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import httpx
import typer
from pydantic import BaseModel, ValidationError

from trustauthority.cli.output import fail, fail_with
from trustauthority.cli.profile import Profile, resolve
from trustauthority.client import Credentials, TrustAuthorityClient
from trustauthority.errors import ConfigError, TrustAuthorityError, UsageError

T = TypeVar("T")
Model = TypeVar("Model", bound=BaseModel)


@dataclass
class ConnectionFlags:
    """The global options (each already read from its environment variable when not given)."""

    profile: str = "default"
    given: Profile = field(default_factory=Profile)


def flags_of(ctx: typer.Context) -> ConnectionFlags:
    root = ctx.find_root()
    if isinstance(root.obj, ConnectionFlags):
        return root.obj
    return ConnectionFlags()


#: the global options naming TLS files: profile field, option, environment variable
_TLS_FILES = (("ca", "--ca", "TA_CA"), ("client_cert", "--client-cert", "TA_CLIENT_CERT"),
              ("client_key", "--client-key", "TA_CLIENT_KEY"))


def open_client(ctx: typer.Context) -> TrustAuthorityClient:
    flags = flags_of(ctx)
    profile = resolve(flags.profile, flags.given)
    assert profile.server is not None  # noqa: S101 - resolve() refuses a profile without one
    if not profile.server.startswith(("https://", "http://")):
        raise UsageError(f"the server URL {profile.server!r} must start with https:// (check "
                         f"--server, TA_SERVER or profile {flags.profile!r})")
    for key, option, variable in _TLS_FILES:
        path = getattr(profile, key)
        try:
            if path is not None:
                Path(path).open("rb").close()
        except OSError as error:
            # the client's own message ("cannot load TLS files: No such file") names no file
            raise UsageError(f"cannot read {option} {path!r}: {error.strerror or error}; check "
                             f"{option}, {variable} or profile {flags.profile!r}") from None
    try:
        return TrustAuthorityClient(
            profile.server,
            Credentials(token=profile.token,
                        client_certificate=Path(profile.client_cert) if profile.client_cert
                        else None,
                        client_key=Path(profile.client_key) if profile.client_key else None),
            ca_file=Path(profile.ca) if profile.ca else None)
    except ConfigError as error:
        raise ConfigError(f"{error}; --ca, --client-cert and --client-key must name PEM files "
                          "(a CA certificate, a client certificate and its key)") from None


def _hint(error: TrustAuthorityError, profile: str) -> str | None:
    """What to do about an error met reaching the service: the client cannot say (it does not
    know the options, environment variables and profiles a server URL or credential came from).
    """
    # the client raises BackendUnavailable `from None` inside its `except httpx.TransportError`
    # (and `except ValidationError` for a body it did not expect): the cause is its __context__
    if isinstance(error.__context__, httpx.TransportError):
        text = str(error)
        if "Hostname mismatch" in text or "IP address mismatch" in text:
            return ("use a server name the service's certificate holds (`ta init --hostname` "
                    "sets them)")
        if "CERTIFICATE_VERIFY_FAILED" in text:
            return "give the service's CA certificate with --ca, TA_CA or `ta login --ca`"
        return (f"check the URL (--server, TA_SERVER or profile {profile!r}) and that the "
                "service is running (`ta serve`)")
    if isinstance(error.__context__, ValidationError) or error.error_type == "http_error" or (
            error.error_type == "not_found" and str(error).startswith("Not Found (")):
        return (f"check that the server URL (--server, TA_SERVER or profile {profile!r}) is a "
                "Trust Authority service's, without a path")
    if error.error_type == "unauthenticated":
        return ("check the credential (--token, TA_TOKEN, --client-cert) or run `ta login` "
                "again")
    if error.error_type == "forbidden":
        return "use a principal whose role allows it (`ta whoami` shows yours)"
    if error.error_type == "not_found":
        return "check the name (the `list` command shows what exists)"
    return None


@contextmanager
def handled(as_json: bool) -> Iterator[None]:
    """Any of our errors becomes a one-line message and its exit code."""
    try:
        yield
    except TrustAuthorityError as error:
        fail_with(error, as_json=as_json)


def call(ctx: typer.Context, as_json: bool, action: Callable[[TrustAuthorityClient], T]) -> T:
    """Run `action` with a client; our errors become a one-line message and an exit code."""
    try:
        with open_client(ctx) as client:
            return action(client)
    except TrustAuthorityError as error:
        fail_with(error, as_json=as_json, hint=_hint(error, flags_of(ctx).profile))


def build(model: type[Model], values: dict[str, object], as_json: bool, *,
          options: Mapping[str, str] | None = None) -> Model:
    """A request body from CLI arguments; what the API would refuse is a usage error here.

    The message names what the user typed: `--FIELD-NAME`, NAME for the `name` argument, or
    what `options` maps the field to (`{"lifetime_seconds": "--lifetime"}`).
    """
    try:
        return model.model_validate(values)
    except ValidationError as error:
        first = error.errors()[0]
        field_name = str(first["loc"][0]) if first["loc"] else ""
        typed = {"name": "NAME", **(options or {})}
        where = (typed.get(field_name, "--" + field_name.replace("_", "-")) if field_name
                 else "arguments")
        fail(f"{where}: {first['msg']}", as_json=as_json)
