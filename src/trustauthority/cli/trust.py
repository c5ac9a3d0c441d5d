"""`ta tpm-ca`, `ta ek`, `ta tpm-settings`, `ta cluster`: what "trusted" means (trust-admin)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from trustauthority.cli.connect import build, call
from trustauthority.cli.output import PlainTable, emit, read_input_file, when
from trustauthority.schemas import (
    ClusterCreate,
    ClusterOut,
    EkAdd,
    TpmCaAdd,
    TpmSettingsOut,
    TpmSettingsUpdate,
)

tpm_ca_app = typer.Typer(help="TPM manufacturer CA certificates that EK certificates chain to.",
                         no_args_is_help=True)
ek_app = typer.Typer(help="EK public keys allowed one by one (TPMs without EK certificates).",
                     no_args_is_help=True)
settings_app = typer.Typer(help="How a host proves its TPM is genuine.", no_args_is_help=True)
cluster_app = typer.Typer(help="Trusted clusters: policy, token lifetime, attestation interval.",
                          no_args_is_help=True)

Json = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
Fingerprint = Annotated[str, typer.Argument(help="SHA-256 fingerprint (64 hex digits).")]
Description = Annotated[str, typer.Option(help="Free text.")]


@tpm_ca_app.command("add")
def tpm_ca_add(ctx: typer.Context,
               file: Annotated[Path, typer.Argument(help="PEM (one or more) or DER certificate.")],
               description: Description = "", as_json: Json = False) -> None:
    """Trust TPM manufacturer CA certificates.  Example: `ta tpm-ca add vendor-root.pem`"""
    raw = read_input_file(str(file), what="certificate file", max_bytes=65536, as_json=as_json)
    pem = raw.decode("latin-1") if b"-----BEGIN" in raw else _der_to_pem(raw)
    request = build(TpmCaAdd, {"certificate_pem": pem, "description": description}, as_json,
                    options={"certificate_pem": "FILE"})
    added = call(ctx, as_json, lambda client: client.add_tpm_cas(request))
    emit(added, as_json, "\n".join(
        f"Trusted {'root' if ca.is_root else 'intermediate'} {ca.subject} "
        f"({ca.fingerprint_sha256[:16]}…, until {when(ca.not_after)})" for ca in added))


def _der_to_pem(raw: bytes) -> str:
    import base64
    import textwrap

    body = "\n".join(textwrap.wrap(base64.b64encode(raw).decode(), 64))
    return f"-----BEGIN CERTIFICATE-----\n{body}\n-----END CERTIFICATE-----\n"


@tpm_ca_app.command("list")
def tpm_ca_list(ctx: typer.Context, as_json: Json = False) -> None:
    """List trusted TPM CAs.  Example: `ta tpm-ca list`"""
    cas = call(ctx, as_json, lambda client: client.list_tpm_cas())
    table = PlainTable("fingerprint", "subject", "kind", "until", "added by")
    for ca in cas:
        table.add_row(ca.fingerprint_sha256[:16] + "…", ca.subject,
                      "root" if ca.is_root else "intermediate", when(ca.not_after), ca.added_by)
    emit(cas, as_json, table)


@tpm_ca_app.command("remove")
def tpm_ca_remove(ctx: typer.Context, fingerprint: Fingerprint, as_json: Json = False) -> None:
    """Stop trusting a TPM CA.  Example: `ta tpm-ca remove 3f2a…`"""
    removed = call(ctx, as_json, lambda client: client.remove_tpm_ca(fingerprint))
    emit(removed, as_json, f"Removed {removed.subject}.")


@ek_app.command("add")
def ek_add(ctx: typer.Context,
           file: Annotated[Path, typer.Argument(help="The EK public key, PEM.")],
           description: Description = "", as_json: Json = False) -> None:
    """Allow one EK public key.  Example: `ta ek add host7-ek.pem --description host7`"""
    raw = read_input_file(str(file), what="key file", max_bytes=16384, as_json=as_json)
    request = build(EkAdd, {"public_key_pem": raw.decode("latin-1"),
                            "description": description}, as_json,
                    options={"public_key_pem": "FILE"})
    added = call(ctx, as_json, lambda client: client.add_ek(request))
    emit(added, as_json, f"Allowed EK {added.fingerprint_sha256[:16]}… ({added.algorithm}).")


@ek_app.command("list")
def ek_list(ctx: typer.Context, as_json: Json = False) -> None:
    """List allowed EKs.  Example: `ta ek list`"""
    eks = call(ctx, as_json, lambda client: client.list_eks())
    table = PlainTable("fingerprint", "algorithm", "description", "added", "by")
    for ek in eks:
        table.add_row(ek.fingerprint_sha256, ek.algorithm, ek.description, when(ek.added_at),
                      ek.added_by)
    emit(eks, as_json, table)


@ek_app.command("remove")
def ek_remove(ctx: typer.Context, fingerprint: Fingerprint, as_json: Json = False) -> None:
    """Remove an allowed EK.  Example: `ta ek remove 3f2a…`"""
    removed = call(ctx, as_json, lambda client: client.remove_ek(fingerprint))
    emit(removed, as_json, f"Removed EK {removed.fingerprint_sha256[:16]}….")


def _print_settings(settings: TpmSettingsOut, as_json: bool) -> None:
    emit(settings, as_json, "\n".join(f"{key.replace('_', '-')}: {'yes' if value else 'no'}"
                                      for key, value in settings.model_dump().items()))


@settings_app.command("show")
def settings_show(ctx: typer.Context, as_json: Json = False) -> None:
    """Show the TPM trust settings.  Example: `ta tpm-settings show`"""
    _print_settings(call(ctx, as_json, lambda client: client.tpm_settings()), as_json)


@settings_app.command("set")
def settings_set(
    ctx: typer.Context,
    require_ek_certificate: Annotated[bool | None, typer.Option(
        "--require-ek-certificate/--no-require-ek-certificate",
        help="Every TPM must present an EK certificate chaining to a trusted TPM CA (on). "
             "Off: TPMs without one enroll through the allow-list or, with that off too, on "
             "their join token alone (trust on first use).")] = None,
    allow_ek_allowlist: Annotated[bool | None, typer.Option(
        "--allow-ek-allowlist/--no-allow-ek-allowlist",
        help="A TPM without a certificate enrolls if its EK is on the allow-list (off; needs "
             "--no-require-ek-certificate).")] = None,
    allow_sha1: Annotated[bool | None, typer.Option(
        "--allow-sha1/--no-allow-sha1", help="Accept SHA-1 PCR-bank evidence (off).")] = None,
    as_json: Json = False,
) -> None:
    """Change TPM trust settings.

    Example: `ta tpm-settings set --no-require-ek-certificate --allow-ek-allowlist`
    """
    request = TpmSettingsUpdate(require_ek_certificate=require_ek_certificate,
                                allow_ek_allowlist=allow_ek_allowlist, allow_sha1=allow_sha1)
    _print_settings(call(ctx, as_json, lambda client: client.set_tpm_settings(request)),
                    as_json)


def _cluster_table(clusters: list[ClusterOut]) -> Table:
    table = PlainTable("name", "secure boot", "PCRs", "token", "interval", "created by")
    for cluster in clusters:
        table.add_row(cluster.name,
                      "required" if cluster.policy.require_secure_boot else "optional",
                      ",".join(str(pcr) for pcr in cluster.policy.pcrs),
                      f"{cluster.token_lifetime_seconds}s",
                      f"{cluster.attestation_interval_seconds}s", cluster.created_by)
    return table


@cluster_app.command("create")
def cluster_create(
    ctx: typer.Context, name: Annotated[str, typer.Argument(help="Cluster name.")],
    description: Description = "",
    require_secure_boot: Annotated[bool, typer.Option(
        "--require-secure-boot/--no-require-secure-boot")] = True,
    pcr: Annotated[list[int] | None, typer.Option(
        "--pcr", help="A PCR to compare (repeatable; default 0,2,3,4,7,8,9).")] = None,
    allow_unknown_events: Annotated[bool, typer.Option(
        help="Accept events the baselines do not know.")] = False,
    strict: Annotated[bool, typer.Option(help="Also compare exact PCR values.")] = False,
    token_lifetime: Annotated[int, typer.Option(help="Attestation token lifetime, seconds.")]
    = 600,
    interval: Annotated[int, typer.Option(help="Attestation interval, seconds.")] = 300,
    as_json: Json = False,
) -> None:
    """Create a trusted cluster.  Example: `ta cluster create prod --token-lifetime 300`"""
    policy: dict[str, object] = {"require_secure_boot": require_secure_boot,
                                 "allow_unknown_events": allow_unknown_events,
                                 "strict_pcr_values": strict}
    if pcr:
        policy["pcrs"] = pcr
    request = build(ClusterCreate, {"name": name, "description": description,
                                    "policy": policy, "token_lifetime_seconds": token_lifetime,
                                    "attestation_interval_seconds": interval}, as_json,
                    options={"policy": "--pcr", "token_lifetime_seconds": "--token-lifetime",
                             "attestation_interval_seconds": "--interval"})
    created = call(ctx, as_json, lambda client: client.create_cluster(request))
    emit(created, as_json, _cluster_table([created]))


@cluster_app.command("list")
def cluster_list(ctx: typer.Context, as_json: Json = False) -> None:
    """List clusters.  Example: `ta cluster list`"""
    clusters = call(ctx, as_json, lambda client: client.list_clusters())
    emit(clusters, as_json, _cluster_table(clusters))


@cluster_app.command("show")
def cluster_show(ctx: typer.Context, name: Annotated[str, typer.Argument()],
                 as_json: Json = False) -> None:
    """Show one cluster.  Example: `ta cluster show prod`"""
    cluster = call(ctx, as_json, lambda client: client.get_cluster(name))
    emit(cluster, as_json, _cluster_table([cluster]))


@cluster_app.command("delete")
def cluster_delete(ctx: typer.Context, name: Annotated[str, typer.Argument()],
                   as_json: Json = False) -> None:
    """Delete a cluster.  Example: `ta cluster delete staging`"""
    deleted = call(ctx, as_json, lambda client: client.delete_cluster(name))
    emit(deleted, as_json, f"Deleted cluster {deleted.name}.")
