"""`trustauthority host …`: enrolled hosts, their trust state and history, join tokens,
approval (infra-admin) — the fleet as the service sees it."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from trustauthority.cli.connect import build, call
from trustauthority.cli.output import (
    PlainTable,
    console,
    differences_table,
    emit,
    print_json,
    styled,
    when,
)
from trustauthority.schemas import (
    AttestationOut,
    HostApprove,
    HostOut,
    JoinTokenCreate,
    JoinTokenOut,
)

app = typer.Typer(help="Enrolled hosts: trust state, history, approval, join tokens.",
                  no_args_is_help=True)
join_token_app = typer.Typer(help="Single-use tokens that let a host join a cluster.",
                             no_args_is_help=True)
app.add_typer(join_token_app, name="join-token")

Json = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
HostName = Annotated[str, typer.Argument(help="Host name (or id).")]

_STATE_STYLE = {"trusted": "green", "untrusted": "red", "stale": "yellow", "pending": "yellow",
                "enrolled": "cyan"}


def host_table(hosts: list[HostOut]) -> Table:
    table = PlainTable("name", "state", "cluster", "last attestation", "reason")
    for host in hosts:
        style = _STATE_STYLE.get(host.state, "")
        table.add_row(host.name, styled(host.state, style),
                      host.cluster or "-", when(host.last_attested_at),
                      host.state_reason[:120] or "-")
    return table


def _host_detail(host: HostOut) -> Table:
    table = PlainTable("field", "value", show_header=False)
    for field, value in (("name", host.name), ("id", host.id), ("state", host.state),
                         ("reason", host.state_reason or "-"), ("cluster", host.cluster or "-"),
                         ("EK fingerprint", host.ek_fingerprint),
                         ("enrolled", when(host.enrolled_at)),
                         ("approved by", host.approved_by or "-"),
                         ("last attestation", when(host.last_attested_at)),
                         ("binding key (jkt)", host.binding_key_thumbprint or "-")):
        table.add_row(field, value)
    for key, value in sorted(host.facts.items()):
        table.add_row(f"fact: {key}", value)
    return table


def _history_table(rows: list[AttestationOut]) -> Table:
    table = PlainTable("at", "status", "baseline", "rebooted", "reason")
    for row in rows:
        table.add_row(when(row.at), row.status, row.baseline or "-",
                      "-" if row.rebooted is None else ("yes" if row.rebooted else "no"),
                      row.reason[:120] or "-")
    return table


def _token_table(tokens: list[JoinTokenOut]) -> Table:
    table = PlainTable("id", "cluster", "expires", "used", "by host", "revoked", "created by")
    for token in tokens:
        table.add_row(token.id, token.cluster, when(token.expires_at), when(token.used_at),
                      token.used_by_host or "-", when(token.revoked_at), token.created_by)
    return table


@app.command("list")
def host_list(ctx: typer.Context, as_json: Json = False) -> None:
    """List hosts and their trust state.  Example: `ta host list`"""
    hosts = call(ctx, as_json, lambda client: client.list_hosts())
    emit(hosts, as_json, host_table(hosts))


@app.command("show")
def host_show(ctx: typer.Context, name: HostName, as_json: Json = False) -> None:
    """One host in detail.  Example: `ta host show web-01`"""
    host = call(ctx, as_json, lambda client: client.get_host(name))
    emit(host, as_json, _host_detail(host))


@app.command("history")
def host_history(ctx: typer.Context, name: HostName,
                 limit: Annotated[int, typer.Option(min=1, max=1000)] = 20,
                 as_json: Json = False) -> None:
    """A host's attestations, newest first.  Example: `ta host history web-01`"""
    rows = call(ctx, as_json, lambda client: client.host_attestations(name, limit))
    emit(rows, as_json, _history_table(rows))


@app.command("report")
def host_report(ctx: typer.Context, name: HostName,
                limit: Annotated[int, typer.Option(
                    min=1, max=1000, help="How many recent attestations to search.")] = 50,
                as_json: Json = False) -> None:
    """Why a host was last found untrusted: the closest baseline and each difference, with
    the event in the log (the report the host was given).  Example: `ta host report web-01`"""
    rows = call(ctx, as_json, lambda client: client.host_attestations(name, limit))
    failed = next((row for row in rows if row.status == "untrusted"), None)
    if failed is None:  # nothing to report is not an error
        if as_json:
            print_json(None)
        else:
            console.print(Text(f"host {name} has no untrusted attestation among its last {limit}"))
        return
    if as_json:
        print_json(failed.model_dump(mode="json"))
        return
    latest = "" if rows[0] is failed else f" (its latest attestation, {when(rows[0].at)}, was " \
        f"{rows[0].status})"
    console.print(f"untrusted at {when(failed.at)}{latest}", soft_wrap=True)
    failure = failed.failure
    if failure is None:
        console.print(Text(f"reason: {failed.reason or '-'} (no detailed report was kept)"))
        return
    console.print(Text(f"{failure.type}: {failure.detail}"), soft_wrap=True)
    if failure.closest_baseline is not None:
        console.print(Text(f"closest baseline: {failure.closest_baseline}"))
    if failure.differences:
        console.print(differences_table(failure, limit=len(failure.differences)))


@app.command("approve")
def host_approve(ctx: typer.Context, name: HostName,
                 cluster: Annotated[str, typer.Option(help="The cluster it joins.")],
                 as_json: Json = False) -> None:
    """Approve a pending host into a cluster (or move a host).  Example:
    `ta host approve web-01 --cluster prod`"""
    request = build(HostApprove, {"cluster": cluster}, as_json)
    host = call(ctx, as_json, lambda client: client.approve_host(name, request))
    emit(host, as_json, host_table([host]))


@app.command("remove")
def host_remove(ctx: typer.Context, name: HostName, as_json: Json = False) -> None:
    """Forget a host; its credential stops working.  Example: `ta host remove web-01`"""
    host = call(ctx, as_json, lambda client: client.delete_host(name))
    emit(host, as_json, f"Removed host {host.name}.")


@join_token_app.command("create")
def join_token_create(
    ctx: typer.Context,
    cluster: Annotated[str, typer.Option(help="The cluster the host joins.")],
    lifetime: Annotated[int, typer.Option(help="Seconds until it expires.")] = 3600,
    description: Annotated[str, typer.Option(help="Free text.")] = "",
    as_json: Json = False,
) -> None:
    """A single-use token for `agent enroll --join-token`; shown once.  Example:
    `ta host join-token create --cluster prod --lifetime 900`"""
    request = build(JoinTokenCreate, {"cluster": cluster, "lifetime_seconds": lifetime,
                                      "description": description}, as_json,
                    options={"lifetime_seconds": "--lifetime"})
    issued = call(ctx, as_json, lambda client: client.create_join_token(request))
    emit(issued, as_json,
         f"{issued.token}\n(single use, for cluster {issued.join_token.cluster}, expires "
         f"{when(issued.join_token.expires_at)}; shown once)")


@join_token_app.command("list")
def join_token_list(ctx: typer.Context, as_json: Json = False) -> None:
    """Join tokens, used and unused (never their secrets).  Example: `ta host join-token list`"""
    tokens = call(ctx, as_json, lambda client: client.list_join_tokens())
    emit(tokens, as_json, _token_table(tokens))


@join_token_app.command("revoke")
def join_token_revoke(ctx: typer.Context, token_id: Annotated[str, typer.Argument()],
                      as_json: Json = False) -> None:
    """Revoke an unused join token.  Example: `ta host join-token revoke 0123456789abcdef`"""
    token = call(ctx, as_json, lambda client: client.revoke_join_token(token_id))
    emit(token, as_json, _token_table([token]))
