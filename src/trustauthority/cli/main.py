"""The `trustauthority` (alias `ta`) command: one Typer app, grouped like an admin thinks."""

from __future__ import annotations

from typing import Annotated

import typer

from trustauthority import __version__
from trustauthority.cli import (
    agent,
    audit,
    backup,
    baseline,
    demo,
    eventlog,
    host,
    keys,
    kms,
    principal,
    quote,
    service,
    token,
    trust,
)
from trustauthority.cli.connect import ConnectionFlags
from trustauthority.cli.profile import Profile

app = typer.Typer(
    name="trustauthority",
    help="Trust Authority: attest TPM 2.0 hosts and release keys only to hosts trusted right now.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def connection(
    ctx: typer.Context,
    profile: Annotated[str | None, typer.Option(
        help="CLI profile to use (default: 'default').", envvar="TA_PROFILE")] = None,
    server: Annotated[str | None, typer.Option(help="Service URL.", envvar="TA_SERVER")] = None,
    ca: Annotated[str | None, typer.Option(help="CA certificate of the service (PEM).",
                                           envvar="TA_CA")] = None,
    token: Annotated[str | None, typer.Option(help="API token (prefer TA_TOKEN or a profile).",
                                              envvar="TA_TOKEN", show_envvar=True)] = None,
    client_cert: Annotated[str | None, typer.Option(help="mTLS client certificate (PEM).",
                                                    envvar="TA_CLIENT_CERT")] = None,
    client_key: Annotated[str | None, typer.Option(help="mTLS client key (PEM).",
                                                   envvar="TA_CLIENT_KEY")] = None,
) -> None:
    """How to reach the service: flags, then environment, then the saved profile."""
    ctx.obj = ConnectionFlags(profile or "default",
                              Profile(server=server, ca=ca, token=token,
                                      client_cert=client_cert, client_key=client_key))


app.command("init")(service.init)
app.command("serve")(service.serve)
app.command("login")(service.login)
app.command("whoami")(principal.whoami)
app.add_typer(principal.app, name="principal")
app.add_typer(audit.app, name="audit")
app.add_typer(backup.app, name="backup")
app.add_typer(trust.tpm_ca_app, name="tpm-ca")
app.add_typer(trust.ek_app, name="ek")
app.add_typer(trust.settings_app, name="tpm-settings")
app.add_typer(trust.cluster_app, name="cluster")
app.add_typer(baseline.app, name="baseline")
app.add_typer(host.app, name="host")
app.add_typer(keys.server_app, name="key-server")
app.add_typer(keys.provider_app, name="provider")
app.add_typer(keys.key_app, name="key")
app.add_typer(kms.app, name="kms")
app.add_typer(token.app, name="token")
app.add_typer(eventlog.app, name="eventlog")
app.add_typer(quote.app, name="quote")
app.command("demo")(demo.demo)
app.add_typer(agent.app, name="agent")


@app.command("version")
def version() -> None:
    """Print the version.  Example: `ta version`"""
    typer.echo(__version__)


def main() -> None:
    app()
