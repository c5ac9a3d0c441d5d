"""`ta baseline …` and `ta cluster add-baseline/remove-baseline`: what a good boot looks like."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Group
from rich.table import Table

from trustauthority.cli.connect import build, call
from trustauthority.cli.output import (
    EXIT_REJECTED,
    PlainTable,
    console,
    emit,
    fail,
    print_json,
    read_input_file,
)
from trustauthority.cli.trust import cluster_app
from trustauthority.schemas import (
    BaselineFromHost,
    BaselineImport,
    BaselineOut,
    ClusterBaselineAdd,
)

app = typer.Typer(help="Baselines: reference values from a known-good host's boot.",
                  no_args_is_help=True)
Json = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
Name = Annotated[str, typer.Argument(help="Baseline name.")]


def _table(baselines: list[BaselineOut]) -> Table:
    table = PlainTable("name", "version", "components", "secure boot", "clusters", "source",
                       "created by")
    for item in baselines:
        document = item.baseline
        components = document.get("components")
        table.add_row(item.name, str(item.version),
                      str(len(components) if isinstance(components, list) else "?"),
                      str(document.get("secure_boot")), ", ".join(item.clusters) or "-",
                      item.source[:40], item.created_by)
    return table


@app.command("import")
def import_(
    ctx: typer.Context, name: Name,
    eventlog: Annotated[Path | None, typer.Option(
        help="The known-good host's firmware event log.")] = None,
    from_host: Annotated[str | None, typer.Option(
        help="An enrolled host whose last verified evidence is known-good.")] = None,
    bank: Annotated[str, typer.Option(help="PCR bank of the reference digests.")] = "sha256",
    strict: Annotated[bool, typer.Option(help="Also pin exact PCR values.")] = False,
    as_json: Json = False,
) -> None:
    """Import a new version of a baseline from an event log or from a host.

    Examples: `ta baseline import golden --eventlog binary_bios_measurements`,
    `ta baseline import golden --from-host web-01`
    """
    if (eventlog is None) == (from_host is None):
        fail("give exactly one of --eventlog FILE and --from-host HOST", as_json=as_json)
    if from_host is not None:
        from_host_request = build(BaselineFromHost, {"name": name, "host": from_host,
                                                     "bank": bank, "strict": strict}, as_json,
                                  options={"host": "--from-host"})
        made = call(ctx, as_json,
                    lambda client: client.import_baseline_from_host(from_host_request))
        emit(made, as_json, _table([made]))
        return
    assert eventlog is not None  # noqa: S101 - checked above
    raw = read_input_file(str(eventlog), what="event log", max_bytes=512 * 1024,
                          as_json=as_json)
    request = build(BaselineImport, {"name": name, "bank": bank, "strict": strict,
                                     "event_log_base64": base64.b64encode(raw).decode()},
                    as_json, options={"event_log_base64": "--eventlog"})
    made = call(ctx, as_json, lambda client: client.import_baseline(request))
    emit(made, as_json, _table([made]))


@app.command("list")
def list_(ctx: typer.Context, as_json: Json = False) -> None:
    """List baselines and the clusters they are active for.  Example: `ta baseline list`"""
    baselines = call(ctx, as_json, lambda client: client.list_baselines())
    emit(baselines, as_json, _table(baselines))


@app.command("show")
def show(ctx: typer.Context, name: Name,
         version: Annotated[int | None, typer.Option(help="Default: the latest.")] = None,
         as_json: Json = False) -> None:
    """Show a baseline's components and reference digests.  Example: `ta baseline show golden`"""
    item = call(ctx, as_json, lambda client: client.get_baseline(name, version))
    components = item.baseline.get("components")
    table = PlainTable("component", "PCR", "events", "first event")
    for component in components if isinstance(components, list) else []:
        events = component.get("events", []) if isinstance(component, dict) else []
        first = events[0] if events else {}
        table.add_row(str(component.get("kind")), str(component.get("pcr")), str(len(events)),
                      f"{str(first.get('digest', ''))[:16]}… {first.get('label', '')}"[:80])
    emit(item, as_json, Group(_table([item]), table))


@app.command("diff")
def diff(ctx: typer.Context,
         a: Annotated[str, typer.Argument(help="name[:version], the expected one.")],
         b: Annotated[str, typer.Argument(help="name[:version], the one compared.")],
         as_json: Json = False) -> None:
    """What differs between two baselines (exit 1 when they differ).

    Example: `ta baseline diff golden:1 golden:2`
    """
    result = call(ctx, as_json, lambda client: client.diff_baselines(a, b))
    if as_json:
        print_json(result.model_dump(mode="json"))
    elif not result.differences:
        console.print(f"{result.a} and {result.b} have the same reference values.")
    else:
        console.print(f"{result.b} differs from {result.a}:")
        for difference in result.differences:
            console.print(f"  - {difference.reason}", highlight=False, soft_wrap=True)
    if result.differences:
        raise SystemExit(EXIT_REJECTED)


@app.command("delete")
def delete(ctx: typer.Context, name: Name,
           version: Annotated[int, typer.Argument(help="Version to delete.")],
           as_json: Json = False) -> None:
    """Delete one version (not while a cluster uses it).  Example: `ta baseline delete golden 1`"""
    item = call(ctx, as_json, lambda client: client.delete_baseline(name, version))
    emit(item, as_json, f"Deleted {item.name} v{item.version}.")


@cluster_app.command("add-baseline")
def add_baseline(ctx: typer.Context, cluster: Annotated[str, typer.Argument()],
                 baseline: Annotated[str, typer.Argument()],
                 version: Annotated[int | None, typer.Option(help="Default: the latest.")]
                 = None,
                 as_json: Json = False) -> None:
    """Make a baseline active for a cluster.  Example: `ta cluster add-baseline prod golden`"""
    request = build(ClusterBaselineAdd, {"baseline": baseline, "version": version}, as_json,
                    options={"baseline": "BASELINE"})
    item = call(ctx, as_json, lambda client: client.add_cluster_baseline(cluster, request))
    emit(item, as_json, f"{item.name} v{item.version} is active for {', '.join(item.clusters)}.")


@cluster_app.command("remove-baseline")
def remove_baseline(ctx: typer.Context, cluster: Annotated[str, typer.Argument()],
                    baseline: Annotated[str, typer.Argument()],
                    version: Annotated[int, typer.Argument()],
                    as_json: Json = False) -> None:
    """Stop using a baseline for a cluster.  Example: `ta cluster remove-baseline prod golden 1`"""
    item = call(ctx, as_json,
                lambda client: client.remove_cluster_baseline(cluster, baseline, version))
    emit(item, as_json, f"{item.name} v{item.version} is no longer active for {cluster}.")
