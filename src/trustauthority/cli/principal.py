"""`ta principal …` and `ta whoami`: people and automation, their tokens and certificates."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from rich.console import Group
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from trustauthority.cli.connect import build, call
from trustauthority.cli.output import (
    PlainTable,
    console,
    emit,
    fail,
    print_json,
    require_directory,
    when,
)
from trustauthority.files import write_private
from trustauthority.schemas import (
    CertificateCreate,
    PrincipalCreate,
    PrincipalOut,
    TokenCreate,
    TokenOut,
)

app = typer.Typer(help="Principals (people, automation, hosts), their roles and credentials.",
                  no_args_is_help=True)
token_app = typer.Typer(help="API tokens of a principal.", no_args_is_help=True)
cert_app = typer.Typer(help="mTLS client certificates of a principal.", no_args_is_help=True)
app.add_typer(token_app, name="token")
app.add_typer(cert_app, name="cert")

Json = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
Name = Annotated[str, typer.Argument(help="Principal name.")]


def _principals_table(principals: list[PrincipalOut]) -> Table:
    table = PlainTable("name", "kind", "roles", "created", "by", "revoked")
    for p in principals:
        table.add_row(p.name, p.kind, ", ".join(p.roles), when(p.created_at), p.created_by,
                      when(p.revoked_at))
    return table


def _tokens_table(tokens: list[TokenOut]) -> Table:
    table = PlainTable("token id", "label", "created", "expires", "revoked")
    for t in tokens:
        table.add_row(t.id, t.label, when(t.created_at), when(t.expires_at),
                      when(t.revoked_at))
    return table


def whoami(ctx: typer.Context, as_json: Json = False) -> None:
    """Show the principal and roles behind the current credential.  Example: `ta whoami`"""
    me = call(ctx, as_json, lambda client: client.whoami())
    emit(me, as_json, f"[bold]{me.principal.name}[/] ({me.principal.kind}) roles: "
                      f"{', '.join(me.principal.roles)}; credential {me.credential}")


@app.command("add")
def add(
    ctx: typer.Context, name: Name,
    role: Annotated[list[str], typer.Option(
        "--role", "-r", help="trust-admin, infra-admin, auditor or host (repeatable).")],
    kind: Annotated[str, typer.Option(help="person, automation or host.")] = "person",
    description: Annotated[str, typer.Option(help="Free text.")] = "",
    allow_multiple_roles: Annotated[bool, typer.Option(
        help="Approve several roles for this principal (breaks separation of duties).")]
    = False,
    as_json: Json = False,
) -> None:
    """Add a principal.  Example: `ta principal add alice --role infra-admin`"""
    request = build(PrincipalCreate, {
        "name": name, "kind": kind, "roles": role, "description": description,
        "allow_multiple_roles": allow_multiple_roles}, as_json, options={"roles": "--role"})
    principal = call(ctx, as_json, lambda client: client.create_principal(request))
    emit(principal, as_json,
         f"Added [bold]{principal.name}[/] ({', '.join(principal.roles)}). "
         f"Give it a credential: ta principal token create {principal.name}")


@app.command("list")
def list_(ctx: typer.Context,
          include_revoked: Annotated[bool, typer.Option("--all", help="Include revoked.")]
          = False,
          as_json: Json = False) -> None:
    """List principals.  Example: `ta principal list`"""
    principals = call(ctx, as_json,
                      lambda client: client.list_principals(include_revoked=include_revoked))
    emit(principals, as_json, _principals_table(principals))


@app.command("show")
def show(ctx: typer.Context, name: Name, as_json: Json = False) -> None:
    """Show one principal and its tokens.  Example: `ta principal show alice`"""
    principal = call(ctx, as_json, lambda client: client.get_principal(name))
    tokens = call(ctx, as_json, lambda client: client.list_tokens(name))
    if as_json:
        print_json({**principal.model_dump(mode="json"),
                    "tokens": [t.model_dump(mode="json") for t in tokens]})
        return
    console.print(Group(_principals_table([principal]), _tokens_table(tokens)))


@app.command("revoke")
def revoke(ctx: typer.Context, name: Name, as_json: Json = False) -> None:
    """Revoke a principal and every credential it holds.  Example: `ta principal revoke bob`"""
    principal = call(ctx, as_json, lambda client: client.revoke_principal(name))
    emit(principal, as_json, f"Revoked [bold]{principal.name}[/] and its tokens and certificates.")


@token_app.command("create")
def token_create(
    ctx: typer.Context, name: Name,
    label: Annotated[str, typer.Option(help="What the token is for.")] = "",
    expires_in_days: Annotated[int | None, typer.Option(min=1, max=3650,
                                                        help="Lifetime in days.")] = None,
    as_json: Json = False,
) -> None:
    """Create an API token (shown once).  Example: `ta principal token create alice`"""
    request = build(TokenCreate, {"label": label, "expires_in_days": expires_in_days}, as_json)
    issued = call(ctx, as_json, lambda client: client.create_token(name, request))
    # the token alone on its line, unhighlighted and unwrapped, so it copies whole
    emit(issued, as_json, Group(f"Token {issued.info.id} for [bold]{name}[/] (shown once):",
                                Text(issued.token, no_wrap=True, overflow="ignore")))


@token_app.command("list")
def token_list(ctx: typer.Context, name: Name, as_json: Json = False) -> None:
    """List a principal's tokens (never their secrets).  Example: `ta principal token list alice`"""
    tokens = call(ctx, as_json, lambda client: client.list_tokens(name))
    emit(tokens, as_json, _tokens_table(tokens))


@token_app.command("revoke")
def token_revoke(ctx: typer.Context, name: Name,
                 token_id: Annotated[str, typer.Argument(help="The token's id.")],
                 as_json: Json = False) -> None:
    """Revoke one token.  Example: `ta principal token revoke alice 0123abcd…`"""
    token = call(ctx, as_json, lambda client: client.revoke_token(name, token_id))
    emit(token, as_json, f"Revoked token {token.id} of {name}.")


@cert_app.command("create")
def cert_create(
    ctx: typer.Context, name: Name,
    out: Annotated[Path, typer.Option(help="Directory for NAME.pem, NAME-key.pem, ca.pem.")],
    days: Annotated[int, typer.Option(min=1, max=365, help="Lifetime in days.")] = 365,
    as_json: Json = False,
) -> None:
    """Make a key here, have the service certify it for mTLS.

    The private key never leaves this machine: only a signing request is sent.
    Example: `ta principal cert create ci-bot --out ./ci-bot`
    """
    # checked before the service is asked: a certificate it issued into a path we then cannot
    # write would be lost, its key with it
    require_directory(out, "--out", as_json=as_json)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        fail(f"cannot create --out {out}: {error.strerror or error}; give another directory",
             as_json=as_json)
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
           .sign(key, hashes.SHA256()))
    request = CertificateCreate(csr_pem=csr.public_bytes(serialization.Encoding.PEM).decode(),
                                lifetime_days=days)
    issued = call(ctx, as_json, lambda client: client.issue_certificate(name, request))
    try:
        write_private(out / f"{name}-key.pem", key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))
        (out / f"{name}.pem").write_text(issued.certificate_pem)
        (out / "ca.pem").write_text(issued.ca_pem)
    except OSError as error:
        fail(f"cannot write the certificate files into {out}: {error.strerror or error}; run "
             "the command again with another --out", as_json=as_json)
    if as_json:
        print_json({"ok": True, "fingerprint_sha256": issued.fingerprint_sha256,
                    "not_after": issued.not_after.isoformat(),
                    "certificate": str(out / f"{name}.pem"),
                    "key": str(out / f"{name}-key.pem")})
        return
    # escaped: --out is the user's path, and "[/]" in it is no Rich markup
    console.print(f"Certificate for [bold]{name}[/] in {escape(str(out))} (sha256 "
                  f"{issued.fingerprint_sha256[:16]}…, until {when(issued.not_after)}). Use: "
                  f"ta --client-cert {escape(str(out / (name + '.pem')))} --client-key "
                  f"{escape(str(out / (name + '-key.pem')))} whoami", highlight=False,
                  soft_wrap=True)
