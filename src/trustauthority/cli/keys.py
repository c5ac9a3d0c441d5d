"""`ta key-server …`, `ta provider …`, `ta key …` and `ta cluster grant-provider/revoke-provider`:
where workload keys live, who may have them, and the keys themselves (never their value)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from trustauthority.cli.connect import build, call
from trustauthority.cli.output import (
    PlainTable,
    console,
    emit,
    fail,
    print_json,
    read_input_file,
    styled,
    when,
)
from trustauthority.cli.trust import cluster_app
from trustauthority.schemas import (
    KeyRewrap,
    KeyServerHealthOut,
    KeyServerOut,
    KmipServerCreate,
    Pkcs11ServerCreate,
    ProviderCreate,
    ProviderOut,
    WorkloadKeyCreate,
    WorkloadKeyOut,
)

server_app = typer.Typer(help="Key servers: KMIP servers and PKCS#11 HSM tokens.",
                         no_args_is_help=True)
provider_app = typer.Typer(help="Trusted key providers: key servers in failover order and a "
                                "primary key that never leaves them.", no_args_is_help=True)
key_app = typer.Typer(help="Workload keys: made and wrapped on a provider, released only to "
                           "trusted hosts.", no_args_is_help=True)

Json = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
Name = Annotated[str, typer.Argument(help="Its name.")]
_HEALTH_STYLE = {"healthy": "green", "degraded": "yellow", "unhealthy": "red",
                 "unknown": "dim"}


def _done(as_json: bool, message: str) -> None:
    if as_json:
        print_json({"ok": True, "message": message})
    else:
        console.print(message)


def _text(path: str | None, what: str, as_json: bool) -> str | None:
    if path is None:
        return None
    raw = read_input_file(path, what=what, max_bytes=65536, as_json=as_json)
    try:
        return raw.decode("ascii")
    except UnicodeDecodeError:
        fail(f"{what} {path!r} is not PEM text; give the PEM file", as_json=as_json)


def _server_table(servers: list[KeyServerOut]) -> Table:
    table = PlainTable("name", "kind", "address", "client certificate", "expires", "providers")
    for server in servers:
        table.add_row(server.name, server.kind, server.address,
                      server.certificate_subject or str(server.settings.get("token_label") or "-"),
                      when(server.certificate_not_after), ", ".join(server.providers) or "-")
    return table


def _yes_no(value: bool | None) -> Text:
    return styled("-", None) if value is None else (styled("yes", "green") if value
                                                     else styled("no", "red"))


def _health_table(report: KeyServerHealthOut) -> Table:
    table = PlainTable("check", "result", show_header=False)
    table.add_row("reachable", _yes_no(report.reachable))
    table.add_row("client trusts server", _yes_no(report.client_trusts_server))
    table.add_row("server trusts client", _yes_no(report.server_trusts_client))
    table.add_row("round trip", _yes_no(report.round_trip) + (
        f" ({report.latency_ms:.1f} ms)" if report.latency_ms is not None else ""))
    table.add_row("detail", report.detail or "-")
    return table


@server_app.command("add")
def server_add(
    ctx: typer.Context, name: Name,
    kmip: Annotated[str | None, typer.Option(help="KMIP server as HOST:PORT.")] = None,
    ca: Annotated[str | None, typer.Option(help="CA certificate (PEM) that signs the KMIP "
                                                "server's certificate.")] = None,
    cert: Annotated[str | None, typer.Option(help="Client certificate (PEM) to present.")] = None,
    key: Annotated[str | None, typer.Option(help="Client private key (PEM); stored sealed.")
                   ] = None,
    username: Annotated[str | None, typer.Option(help="KMIP username, if the server wants one.")
                        ] = None,
    password_file: Annotated[str | None, typer.Option(help="File holding the KMIP password.")
                             ] = None,
    pin_sha256: Annotated[str | None, typer.Option(
        "--pin-sha256", help="Also pin the server certificate (SHA-256 of its DER, hex).")] = None,
    timeout: Annotated[float, typer.Option(help="Seconds before a silent server is given up.")
                       ] = 5.0,
    pkcs11: Annotated[str | None, typer.Option(help="PKCS#11 module (.so) of an HSM.")] = None,
    token: Annotated[str | None, typer.Option(help="PKCS#11 token label.")] = None,
    pin_file: Annotated[str | None, typer.Option(help="File holding the token's user PIN.")
                        ] = None,
    as_json: Json = False,
) -> None:
    """Register a key server (trust-admin).  Examples:
    `ta key-server add kms1 --kmip 10.0.0.5:5696 --ca ca.pem --cert client.pem --key client.key`;
    `ta key-server add hsm1 --pkcs11 /usr/lib/softhsm/libsofthsm2.so --token ta --pin-file pin`"""
    if (kmip is None) == (pkcs11 is None):
        fail("give either --kmip HOST:PORT or --pkcs11 MODULE", as_json=as_json)
    if kmip is not None:
        host, _, port = kmip.rpartition(":")
        if not host or not port.isdigit():
            fail("--kmip must be HOST:PORT", as_json=as_json)
        if ca is None or cert is None or key is None:
            fail("a KMIP server needs --ca, --cert and --key", as_json=as_json)
        password = _secret(password_file, "password file", as_json)
        request = build(KmipServerCreate, {
            "name": name, "host": host, "port": int(port),
            "ca_pem": _text(ca, "CA certificate", as_json),
            "certificate_pem": _text(cert, "client certificate", as_json),
            "key_pem": _text(key, "client key", as_json), "username": username,
            "password": password, "pinned_sha256": pin_sha256, "timeout_seconds": timeout},
            as_json, options={"host": "--kmip", "port": "--kmip", "ca_pem": "--ca",
                              "certificate_pem": "--cert", "key_pem": "--key",
                              "password": "--password-file", "timeout_seconds": "--timeout"})
        server = call(ctx, as_json, lambda client: client.add_kmip_server(request))
    else:
        if token is None or pin_file is None:
            fail("a PKCS#11 key server needs --token and --pin-file", as_json=as_json)
        pkcs11_request = build(Pkcs11ServerCreate, {
            "name": name, "module": pkcs11, "token_label": token,
            "pin": _secret(pin_file, "PIN file", as_json)}, as_json,
            options={"module": "--pkcs11", "token_label": "--token", "pin": "--pin-file"})
        server = call(ctx, as_json, lambda client: client.add_pkcs11_server(pkcs11_request))
    emit(server, as_json, _server_table([server]))


def _secret(path: str | None, what: str, as_json: bool) -> str | None:
    """A password or PIN from a file (never from the command line, where `ps` shows it)."""
    if path is None:
        return None
    value = read_input_file(path, what=what, max_bytes=1024, as_json=as_json)
    try:
        text = value.decode().strip()
    except UnicodeDecodeError:
        fail(f"{what} {path!r} is not text", as_json=as_json)
    if not text:
        fail(f"{what} {path!r} is empty", as_json=as_json)
    return text


@server_app.command("list")
def server_list(ctx: typer.Context, as_json: Json = False) -> None:
    """Key servers.  Example: `ta key-server list`"""
    servers = call(ctx, as_json, lambda client: client.list_key_servers())
    emit(servers, as_json, _server_table(servers))


@server_app.command("show")
def server_show(ctx: typer.Context, name: Name, as_json: Json = False) -> None:
    """One key server (never its key, password or PIN).  Example: `ta key-server show kms1`"""
    server = call(ctx, as_json, lambda client: client.get_key_server(name))
    emit(server, as_json, _server_table([server]))


@server_app.command("remove")
def server_remove(ctx: typer.Context, name: Name, as_json: Json = False) -> None:
    """Forget a key server no provider uses.  Example: `ta key-server remove kms1`"""
    server = call(ctx, as_json, lambda client: client.remove_key_server(name))
    emit(server, as_json, f"Removed key server {server.name}.")


@server_app.command("test")
def server_test(ctx: typer.Context, name: Name, as_json: Json = False) -> None:
    """Connect now and check trust both ways and a round trip.  Example:
    `ta key-server test kms1`"""
    report = call(ctx, as_json, lambda client: client.test_key_server(name))
    emit(report, as_json, _health_table(report))
    if not report.healthy:
        raise SystemExit(3)


def _provider_table(providers: list[ProviderOut]) -> Table:
    table = PlainTable("name", "kind", "health", "servers (in order)", "primary key", "clusters")
    for provider in providers:
        style = _HEALTH_STYLE[provider.health]
        current = next(v for v in provider.versions if v.version == provider.current_version)
        table.add_row(provider.name, provider.kind, styled(provider.health, style),
                      ", ".join(f"{s.name} ({s.state})" for s in provider.servers),
                      f"v{current.version}: {current.key_id}",
                      ", ".join(provider.clusters) or "-")
    return table


def _provider_detail(provider: ProviderOut) -> Table:
    table = PlainTable("field", "value", show_header=False)
    table.add_row("name", provider.name)
    table.add_row("kind", provider.kind)
    table.add_row("health", provider.health)
    for position, server in enumerate(provider.servers, 1):
        table.add_row(f"server {position}", f"{server.name}: {server.state} — {server.detail}")
    for version in provider.versions:
        table.add_row(f"primary key v{version.version}",
                      f"{version.key_id} ({version.state}, {version.keys} keys)")
    table.add_row("clusters", ", ".join(provider.clusters) or "-")
    table.add_row("created", f"{when(provider.created_at)} by {provider.created_by}")
    return table


@provider_app.command("create")
def provider_create(
    ctx: typer.Context, name: Name,
    server: Annotated[list[str], typer.Option(help="A key server; repeat, in failover order.")],
    primary_key: Annotated[str | None, typer.Option(
        help="Id of the primary key, already on the key servers.")] = None,
    create_primary_key: Annotated[bool, typer.Option(
        help="Create the primary key on the key server instead.")] = False,
    description: Annotated[str, typer.Option(help="Free text.")] = "",
    as_json: Json = False,
) -> None:
    """A trusted key provider (trust-admin).  Example:
    `ta provider create prod-keys --server kms1 --server kms2 --primary-key 42`"""
    request = build(ProviderCreate, {"name": name, "servers": server,
                                     "primary_key": primary_key,
                                     "create_primary_key": create_primary_key,
                                     "description": description}, as_json,
                    options={"servers": "--server"})
    provider = call(ctx, as_json, lambda client: client.create_provider(request))
    emit(provider, as_json, _provider_detail(provider))


@provider_app.command("list")
def provider_list(ctx: typer.Context, as_json: Json = False) -> None:
    """Providers with each server's last known health.  Example: `ta provider list`"""
    providers = call(ctx, as_json, lambda client: client.list_providers())
    emit(providers, as_json, _provider_table(providers))


@provider_app.command("show")
def provider_show(ctx: typer.Context, name: Name, as_json: Json = False) -> None:
    """One provider, each key server checked now.  Example: `ta provider show prod-keys`"""
    provider = call(ctx, as_json, lambda client: client.get_provider(name))
    emit(provider, as_json, _provider_detail(provider))


@provider_app.command("remove")
def provider_remove(ctx: typer.Context, name: Name, as_json: Json = False) -> None:
    """Remove a provider that wraps no keys.  Example: `ta provider remove old-keys`"""
    call(ctx, as_json, lambda client: client.remove_provider(name))
    _done(as_json, f"Removed provider {name}.")


@provider_app.command("rekey")
def provider_rekey(ctx: typer.Context, name: Name, as_json: Json = False) -> None:
    """A new primary key version on the key servers; then `ta key rewrap`.  Example:
    `ta provider rekey prod-keys`"""
    version = call(ctx, as_json, lambda client: client.rekey_provider(name))
    emit(version, as_json, f"Provider {name} now wraps new keys under primary key "
                           f"v{version.version} ({version.key_id}); older blobs still open "
                           f"until their version is retired. Next: ta key rewrap --provider "
                           f"{name}")


@provider_app.command("retire-version")
def provider_retire(ctx: typer.Context, name: Name,
                    version: Annotated[int, typer.Argument(help="Primary key version.")],
                    as_json: Json = False) -> None:
    """Blobs under this version open no more (refused while keys use it).  Example:
    `ta provider retire-version prod-keys 1`"""
    call(ctx, as_json, lambda client: client.retire_primary_version(name, version))
    _done(as_json, f"Retired primary key v{version} of provider {name}.")


@cluster_app.command("grant-provider")
def cluster_grant(ctx: typer.Context, cluster: Annotated[str, typer.Argument(help="Cluster.")],
                  provider: Annotated[str, typer.Argument(help="Key provider.")],
                  as_json: Json = False) -> None:
    """Let the cluster's trusted hosts receive keys of a provider.  Example:
    `ta cluster grant-provider prod prod-keys`"""
    call(ctx, as_json, lambda client: client.grant_provider(cluster, provider))
    _done(as_json, f"Cluster {cluster} may now use provider {provider}.")


@cluster_app.command("revoke-provider")
def cluster_revoke(ctx: typer.Context, cluster: Annotated[str, typer.Argument(help="Cluster.")],
                   provider: Annotated[str, typer.Argument(help="Key provider.")],
                   as_json: Json = False) -> None:
    """Stop releasing a provider's keys to the cluster's hosts.  Example:
    `ta cluster revoke-provider prod prod-keys`"""
    call(ctx, as_json, lambda client: client.revoke_provider(cluster, provider))
    _done(as_json, f"Cluster {cluster} may no longer use provider {provider}.")


def _key_table(keys: list[WorkloadKeyOut]) -> Table:
    table = PlainTable("workload", "key id", "state", "cluster", "provider", "version", "created",
                       "last released")
    for key in keys:
        table.add_row(key.workload, key.id, key.state, key.cluster, key.provider,
                      f"v{key.primary_version}",
                      f"{when(key.created_at)} by {key.created_by}", when(key.last_released_at))
    return table


@key_app.command("create")
def key_create(
    ctx: typer.Context,
    provider: Annotated[str, typer.Option(help="The trusted key provider.")],
    workload: Annotated[str, typer.Option(help="The workload's id (e.g. vm-42/disk0).")],
    cluster: Annotated[str, typer.Option(help="The cluster whose hosts run the workload.")],
    blob_out: Annotated[Path | None, typer.Option(
        "--blob-out", help="Also write the wrapped key blob to this file.")] = None,
    as_json: Json = False,
) -> None:
    """A new workload key (infra-admin); prints its wrapped blob, never the key.  Example:
    `ta key create --provider prod-keys --workload vm-42 --cluster prod --blob-out vm-42.blob`"""
    request = build(WorkloadKeyCreate, {"provider": provider, "workload": workload,
                                        "cluster": cluster}, as_json)
    key = call(ctx, as_json, lambda client: client.create_workload_key(request))
    if blob_out is not None:
        try:
            blob_out.write_text(key.blob + "\n")
        except OSError as error:
            fail(f"cannot write {blob_out}: {error.strerror or error}; the key was created: "
                 f"`ta key show {key.workload}` prints its blob", as_json=as_json)
    emit(key, as_json, key.blob)


@key_app.command("rotate")
def key_rotate(
    ctx: typer.Context,
    workload: Annotated[str, typer.Argument(help="The workload whose key is replaced.")],
    blob_out: Annotated[Path | None, typer.Option(
        "--blob-out", help="Also write the new key's blob to this file.")] = None,
    as_json: Json = False,
) -> None:
    """Deep rekey: a new key for the workload; hosts re-encrypt with `agent workload rekey`,
    then `ta key delete OLD_KEY_ID`.  Example: `ta key rotate vm-42 --blob-out vm-42.v2.blob`"""
    key = call(ctx, as_json, lambda client: client.rotate_workload_key(workload))
    if blob_out is not None:
        try:
            blob_out.write_text(key.blob + "\n")
        except OSError as error:
            fail(f"cannot write {blob_out}: {error.strerror or error}; the new key was created: "
                 f"`ta key show {key.workload}` prints its blob", as_json=as_json)
    emit(key, as_json, key.blob)


@key_app.command("list")
def key_list(ctx: typer.Context,
             provider: Annotated[str | None, typer.Option(help="Only this provider's.")] = None,
             cluster: Annotated[str | None, typer.Option(help="Only this cluster's.")] = None,
             as_json: Json = False) -> None:
    """Workload keys (never their value).  Example: `ta key list --cluster prod`"""
    keys = call(ctx, as_json, lambda client: client.list_workload_keys(provider=provider,
                                                                       cluster=cluster))
    emit(keys, as_json, _key_table(keys))


@key_app.command("show")
def key_show(ctx: typer.Context,
             workload: Annotated[str, typer.Argument(help="Workload id (or key id).")],
             as_json: Json = False) -> None:
    """One workload key and its current wrapped blob.  Example: `ta key show vm-42`"""
    key = call(ctx, as_json, lambda client: client.get_workload_key(workload))
    emit(key, as_json, _key_table([key]))
    if not as_json:
        emit(key, False, f"blob: {key.blob}")


@key_app.command("rewrap")
def key_rewrap(ctx: typer.Context,
               provider: Annotated[str, typer.Option(help="The provider, after `rekey`.")],
               workload: Annotated[str | None, typer.Option(help="Only this workload.")] = None,
               as_json: Json = False) -> None:
    """Re-wrap keys under the provider's newest primary key (the keys stay the same).  Example:
    `ta key rewrap --provider prod-keys`"""
    request = build(KeyRewrap, {"provider": provider, "workload": workload}, as_json)
    keys = call(ctx, as_json, lambda client: client.rewrap_keys(request))
    emit(keys, as_json, _key_table(keys) if keys else "No key needed rewrapping.")


@key_app.command("delete")
def key_delete(ctx: typer.Context,
               workload: Annotated[str, typer.Argument(
                   help="A key id, or a workload (its active key).")],
               as_json: Json = False) -> None:
    """Destroy a key: data under it can never be opened again.  Example:
    `ta key delete 5b0e…` (a superseded key after a rotation)"""
    call(ctx, as_json, lambda client: client.delete_workload_key(workload))
    _done(as_json, f"Deleted the key of workload {workload}.")
