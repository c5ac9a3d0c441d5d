"""`ta token verify`: what a relying party runs to check an attestation token."""

from __future__ import annotations

import ssl
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import httpx
import typer
from rich.markup import escape

from trustauthority.cli.connect import call
from trustauthority.cli.keyfiles import load_public_area
from trustauthority.cli.output import (
    console,
    emit,
    fail,
    fail_with,
    print_json,
    read_input_file,
)
from trustauthority.errors import (
    BackendUnavailable,
    TokenMalformed,
    TrustAuthorityError,
    UsageError,
)
from trustauthority.token import Jwks, verify

app = typer.Typer(help="Attestation tokens.", no_args_is_help=True)


def _jwks(source: str, ca: Path | None, as_json: bool) -> Jwks:
    if source.startswith(("https://", "http://")):
        try:
            context = ssl.create_default_context(cafile=str(ca) if ca else None)
            response = httpx.get(source, verify=context, timeout=15)
            response.raise_for_status()
        except (httpx.HTTPError, OSError, ssl.SSLError) as error:
            fail_with(BackendUnavailable(f"cannot fetch the JWKS from {source}: {error}"),
                      as_json=as_json, hint="check --jwks, and --ca for an https URL")
        content = response.content
    else:
        content = read_input_file(source, what="JWKS file", max_bytes=1024 * 1024,
                                  as_json=as_json)
    try:
        return Jwks.parse(content)
    except TokenMalformed as error:  # a wrong --jwks (exit 2), not a verdict on the token
        fail_with(UsageError(f"--jwks {source}: {error}"), as_json=as_json,
                  hint="give --jwks the service's /.well-known/jwks.json (its URL or a copy)")


@app.command("verify")
def verify_token(
    token: Annotated[str, typer.Argument(help="The token, or - to read it from stdin.")],
    jwks: Annotated[str, typer.Option(
        help="JWKS: https://SERVER/.well-known/jwks.json or a file.")],
    issuer: Annotated[str, typer.Option(help="The issuer you trust (the service's URL).")],
    ca: Annotated[Path | None, typer.Option(help="CA for an https JWKS URL.")] = None,
    binding_key: Annotated[Path | None, typer.Option(
        help="The presenting host's binding key (PEM/DER, TPM2B_PUBLIC or TPMT_PUBLIC): the "
             "token must be bound to it (cnf.jkt).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Verify an attestation token's signature, issuer and lifetime; print its claims.

    With --binding-key, also that the token is bound to that key (its `cnf.jkt` is the key's
    RFC 7638 thumbprint): a token copied to another host fails there. Checking that the
    presenter holds the key's private half is up to the relying party's own protocol.

    Exits 0 when the token verifies, 1 when it is rejected (naming the check).
    Example: `ta token verify "$TOKEN" --jwks https://ta:8443/.well-known/jwks.json
    --issuer https://ta:8443 --ca ca.pem`
    """
    from_stdin = token.strip() == "-"  # "-" is the usual name for standard input
    raw = sys.stdin.readline().strip() if from_stdin else token
    if not raw:
        fail("no token given: pass it as the argument, or - to read it from standard input",
             as_json=as_json)
    bound_to = None if binding_key is None else load_public_area(
        read_input_file(str(binding_key), what="binding key", max_bytes=64 * 1024,
                        as_json=as_json),
        option="--binding-key", hint="give the host's binding key, e.g. from `ta agent status "
        "--json` (binding_key_pem) or `tpm2_readpublic -o`", as_json=as_json).public_key
    try:
        claims = verify(raw, _jwks(jwks, ca, as_json), issuer=issuer, now=datetime.now(UTC),
                        binding_key=bound_to)
    except TrustAuthorityError as error:
        fail_with(error, as_json=as_json)
    payload = claims.to_payload()
    if as_json:
        print_json({"ok": True, "claims": payload, "binding_key_checked": bound_to is not None})
        return
    status = "[bold green]trusted[/]" if claims.trusted else "[bold red]untrusted[/]"
    bound = "; bound to the given binding key" if bound_to is not None else ""
    console.print(f"token verified: host {escape(claims.sub)} in {escape(claims.cluster)} is "
                  f"{status}; expires {claims.exp.isoformat()}{bound}")


@app.command("rotate-key")
def rotate_key(ctx: typer.Context, as_json: Annotated[
        bool, typer.Option("--json", help="Print JSON for scripts.")] = False) -> None:
    """Sign tokens with a new key from now on (trust-admin); the old key stays in the JWKS
    until its tokens have expired.  Example: `ta token rotate-key`"""
    rotated = call(ctx, as_json, lambda client: client.rotate_token_key())
    emit(rotated, as_json, f"Tokens are now signed with key {rotated.kid}; "
                           f"{rotated.retired_kid or 'no key'} was retired.")
