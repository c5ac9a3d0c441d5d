"""`ta init`, `ta serve` and `ta login`: create a service, run it, point the CLI at it."""

from __future__ import annotations

import logging
import ssl
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from trustauthority.cli.connect import call, flags_of, handled
from trustauthority.cli.output import (
    console,
    err_console,
    fail,
    fail_with,
    print_json,
    require_directory,
)
from trustauthority.cli.profile import Profile, save_profile
from trustauthority.errors import Conflict, UsageError

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
    issuer: Annotated[str | None, typer.Option(
        help="The URL relying parties know the service by: the `iss` of its tokens (default: "
             "https://HOST:PORT, or the first --hostname when listening on 0.0.0.0).")] = None,
    login: Annotated[bool, typer.Option(
        help="Also save a CLI profile with the admin token (owner-only file).")] = False,
    as_json: Json = False,
) -> None:
    """Create a service: store, master key, TLS CA and certificate, first trust-admin.

    Example: `ta init --data-dir /var/lib/trustauthority`
    """
    from trustauthority.service.config import CONFIG_NAME
    from trustauthority.service.setup import initialise

    require_directory(data_dir, "--data-dir", as_json=as_json)
    if (data_dir / CONFIG_NAME).exists():
        fail(f"{data_dir} is already initialised; run it with `ta serve --data-dir {data_dir}`, "
             "or give another --data-dir for a new service", as_json=as_json,
             error_type="conflict")
    if tls_cert is not None and tls_key is not None:
        _check_tls_files(tls_cert, tls_key, as_json)
    with handled(as_json):
        try:
            result = initialise(data_dir, database_url=database, admin_name=admin,
                                hostnames=tuple(hostname or ("localhost", "127.0.0.1")),
                                listen_host=host, listen_port=port, master_key_file=master_key,
                                tls_certificate=tls_cert, tls_key=tls_key, issuer=issuer)
        except Conflict as error:  # a database another service already uses: never reused
            fail_with(error, as_json=as_json, hint="give an empty database with --database")
        except OSError as error:
            fail(f"cannot initialise {data_dir}: {error.strerror or error}"
                 f"{f' ({error.filename})' if error.filename else ''}; check --data-dir and "
                 "--master-key", as_json=as_json)
        if login:
            save_profile(flags_of(ctx).profile, Profile(server=result.url, ca=str(result.ca_file),
                                                     token=result.admin_token))
    if as_json:
        print_json({"ok": True, "data_dir": str(result.data_dir), "url": result.url,
                    "database": result.database, "ca": str(result.ca_file),
                    "admin": result.admin_name, "admin_token": result.admin_token})
        return
    # escaped, or markup=False: the paths are the user's, and "[/]" in one is no Rich markup
    console.print(f"[bold green]Initialised[/] {escape(str(result.data_dir))} "
                  f"({escape(result.database)})")
    console.print(f"  CA certificate: {result.ca_file}", markup=False)
    console.print(f"  trust-admin [bold]{result.admin_name}[/], token (shown once, store it "
                  "safely):")
    console.print(f"    {result.admin_token}", highlight=False, soft_wrap=True)
    console.print(f"  start it:  ta serve --data-dir {result.data_dir}", markup=False)
    if not login:
        console.print(f"  then:      ta login --server {result.url} --ca {result.ca_file} "
                      "--token-stdin", highlight=False, soft_wrap=True, markup=False)


def _check_tls_files(certificate: Path, key: Path, as_json: bool) -> None:
    """Load the given certificate and key now: `initialise` only records their paths, so a
    wrong file would make init succeed and every `ta serve` fail."""
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(str(certificate), str(key))
    except OSError as error:  # ssl.SSLError is one
        fail(f"--tls-cert {certificate} and --tls-key {key} do not load as a PEM certificate "
             f"chain and its key ({error.strerror or error}); check both files",
             as_json=as_json)


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
    from trustauthority.service.config import CONFIG_NAME

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: "
                        "%(message)s", stream=sys.stderr)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    if insecure_http:
        err_console.print("[bold red]WARNING: --insecure-http serves plain HTTP: API tokens "
                          "cross the network in the clear. Never use it beyond localhost "
                          "development.[/]")
    require_directory(data_dir, "--data-dir")
    with handled(False):
        try:
            run(ServeOptions(data_dir=data_dir, host=host, port=port,
                             insecure_http=insecure_http, workers=workers))
        except ssl.SSLError as error:  # uvicorn loads the TLS files itself, as it starts
            fail(f"the service's TLS certificate or key does not load ({error.strerror or error});"
                 f" check the files [tls] names in {data_dir / CONFIG_NAME}")


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
        if token_stdin and not token:
            raise UsageError("no token on standard input: pipe it in, e.g. "
                             "`ta login --server URL --token-stdin < token-file`")
        if token is None and client_cert is None:
            raise UsageError("give a credential: --token-stdin, `ta --token TOKEN login`, or "
                             "--client-cert and --client-key")
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
                  f"({', '.join(me.principal.roles)}); profile {escape(repr(name))} saved in "
                  f"{escape(str(path))}")
