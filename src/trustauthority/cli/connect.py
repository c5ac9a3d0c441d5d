"""How a CLI command reaches the service: global flags, environment, profile -> a client."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import typer
from pydantic import BaseModel, ValidationError

from trustauthority.cli.output import fail, fail_with
from trustauthority.cli.profile import Profile, resolve
from trustauthority.client import Credentials, TrustAuthorityClient
from trustauthority.errors import TrustAuthorityError

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


def open_client(ctx: typer.Context) -> TrustAuthorityClient:
    flags = flags_of(ctx)
    profile = resolve(flags.profile, flags.given)
    assert profile.server is not None  # noqa: S101 - resolve() refuses a profile without one
    return TrustAuthorityClient(
        profile.server,
        Credentials(token=profile.token,
                    client_certificate=Path(profile.client_cert) if profile.client_cert else None,
                    client_key=Path(profile.client_key) if profile.client_key else None),
        ca_file=Path(profile.ca) if profile.ca else None)


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
        fail_with(error, as_json=as_json)


def build(model: type[Model], values: dict[str, object], as_json: bool) -> Model:
    """A request body from CLI arguments; what the API would refuse is a usage error here."""
    try:
        return model.model_validate(values)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "arguments"
        fail(f"{where}: {first['msg']}", as_json=as_json)
