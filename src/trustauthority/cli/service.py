"""`ta init`, `ta serve` and `ta login`: create a service, run it, point the CLI at it."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated

import typer

from trustauthority.cli.connect import call, flags_of, handled
from trustauthority.cli.output import console, err_console, print_json
from trustauthority.cli.profile import Profile, save_profile
from trustauthority.errors import UsageError

DataDir = Annotated[Path, typer.Option("--data-dir", "-d", help="The service's data directory.",
                                       envvar="TA_DATA_DIR")]
Json = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


def init(
    ctx: typer.Context,
    data_dir: DataDir,
    database: Annotated[str | None, typer.Option(
        help="Database URL (default: SQLite in the data dir), e.g. "
             "postgresql+psycopg://user@host/db")] = None,
    admin: Annotated[str, typer.Option(help="Name of the first trust-admin.")] = "admin",
    hostname: Annotated[list[str] | None, typer.Option(
        "--hostname", help="Name or IP in the server certificate (repeatable).")] = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8443,
    master_key: Annotated[Path | None, typer.Option(
        help="Use this master key file (owner-only) instead of creating one.")] = None,
    tls_cert: Annotated[Path | None, typer.Option(help="Server certificate (PEM chain).")]
    = None,
    tls_key: Annotated[Path | None, typer.Option(help="Server private key (PEM).")] = None,
    login: Annotated[bool, typer.Option(
        help="Also save a CLI profile with the admin token (owner-only file).")] = False,
    as_json: Json = False,
) -> None:
    """Create a service: store, master key, TLS CA and certificate, first trust-admin.

    Example: `ta init --data-dir /var/lib/trustauthority`
    """
    from trustauthority.service.setup import initialise

    with handled(as_json):
        result = initialise(data_dir, database_url=database, admin_name=admin,
                            hostnames=tuple(hostname or ("localhost", "127.0.0.1")),
                            listen_host=host, listen_port=port, master_key_file=master_key,
                            tls_certificate=tls_cert, tls_key=tls_key)
        if login:
            save_profile(flags_of(ctx).profile, Profile(server=result.url, ca=str(result.ca_file),
                                                     token=result.admin_token))
    if as_json:
        print_json({"ok": True, "data_dir": str(result.data_dir), "url": result.url,
                    "database": result.database, "ca": str(result.ca_file),
                    "admin": result.admin_name, "admin_token": result.admin_token})
        return
    console.print(f"[bold green]Initialised[/] {result.data_dir} ({result.database})")
    console.print(f"  CA certificate: {result.ca_file}")
    console.print(f"  trust-admin [bold]{result.admin_name}[/], token (shown once, store it "
                  "safely):")
    console.print(f"    {result.admin_token}", highlight=False, soft_wrap=True)
    console.print(f"  start it:  ta serve --data-dir {result.data_dir}")
    if not login:
        console.print(f"  then:      ta login --server {result.url} --ca {result.ca_file} "
                      "--token-stdin", highlight=False, soft_wrap=True)


def serve(
    data_dir: DataDir,
    host: Annotated[str | None, typer.Option(help="Override the listen address.")] = None,
    port: Annotated[int | None, typer.Option(min=1, max=65535, help="Override the port.")]
    = None,
    insecure_http: Annotated[bool, typer.Option(
        "--insecure-http", help="Plain HTTP, for local development only.")] = False,
    workers: Annotated[int, typer.Option(
        min=1, max=64, help="Processes serving the API (one per core).")] = 1,
) -> None:
    """Run the service over HTTPS until stopped (SIGTERM/Ctrl-C shut down gracefully).

    Example: `ta serve --data-dir /var/lib/trustauthority`
    """
    from trustauthority.api.server import ServeOptions
    from trustauthority.api.server import serve as run

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: "
                        "%(message)s", stream=sys.stderr)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    if insecure_http:
        err_console.print("[bold red]WARNING: --insecure-http serves plain HTTP: API tokens "
                          "cross the network in the clear. Never use it beyond localhost "
                          "development.[/]")
    with handled(False):
        run(ServeOptions(data_dir=data_dir, host=host, port=port, insecure_http=insecure_http,
                         workers=workers))


def login(
    ctx: typer.Context,
    server: Annotated[str, typer.Option(help="Service URL, e.g. https://ta.example:8443")],
    ca: Annotated[Path | None, typer.Option(help="CA certificate that signed the server's.")]
    = None,
    token_stdin: Annotated[bool, typer.Option(
        "--token-stdin", help="Read the API token from standard input.")] = False,
    client_cert: Annotated[Path | None, typer.Option(help="mTLS client certificate.")] = None,
    client_key: Annotated[Path | None, typer.Option(help="mTLS client key.")] = None,
    as_json: Json = False,
) -> None:
    """Check a credential against a service and save it as a CLI profile.

    Example: `ta login --server https://localhost:8443 --ca ca.pem --token-stdin < token`
    """
    flags = flags_of(ctx)
    token = sys.stdin.readline().strip() if token_stdin else flags.given.token
    with handled(as_json):
        if token is None and client_cert is None:
            raise UsageError("give a credential: --token-stdin, --token, or --client-cert")
    # exactly what is saved is what is checked first
    flags.given = Profile(server=server, ca=str(ca.resolve()) if ca else None, token=token,
                          client_cert=str(client_cert.resolve()) if client_cert else None,
                          client_key=str(client_key.resolve()) if client_key else None)
    me = call(ctx, as_json, lambda client: client.whoami())
    name = flags.profile
    path = save_profile(name, flags.given)
    if as_json:
        print_json({"ok": True, "profile": name, "principal": me.principal.name,
                    "roles": me.principal.roles})
        return
    console.print(f"Logged in as [bold]{me.principal.name}[/] "
                  f"({', '.join(me.principal.roles)}); profile {name!r} saved in {path}")
