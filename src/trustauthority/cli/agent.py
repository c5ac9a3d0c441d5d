"""`trustauthority agent …`: the host agent (enroll, attest, run, status) and, for machines
whose TPM is a software one, `simulate-boot`."""

from __future__ import annotations

import hmac
import json
import logging
import os
import signal
import threading
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from cryptography.hazmat.primitives import serialization

from trustauthority.agent import host as agent_host
from trustauthority.agent import simboot
from trustauthority.cli.output import (
    EXIT_REJECTED,
    console,
    differences_table,
    err_console,
    fail,
    fail_with,
    print_json,
    read_input_file,
    require_directory,
)
from trustauthority.errors import TrustAuthorityError, UsageError, WrappedKeyInvalid
from trustauthority.files import write_private
from trustauthority.verify.ekcert import load_certificate

app = typer.Typer(help="The host agent: enroll this machine's TPM, attest, keep its token.",
                  no_args_is_help=True)

StateDirOption = Annotated[Path, typer.Option(
    "--state-dir", help="Where the agent keeps its keys' TPM blobs, credential and token.",
    envvar="TA_AGENT_STATE_DIR")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def _states(state_dir: Path, as_json: bool) -> agent_host.StateDir:
    """The agent's state directory, refused up front when --state-dir names a file."""
    require_directory(state_dir, "--state-dir", as_json=as_json)
    return agent_host.StateDir(state_dir)


def _quiet_tpm_library() -> None:
    """tpm2-tss logs a failure to stderr on several lines of its own before we report it on one
    (naming the TCTI and the error); it stays quiet unless the operator sets TSS2_LOG."""
    os.environ.setdefault("TSS2_LOG", "all+none")


def _human_result(result: Any) -> None:
    if result.status == "trusted":
        console.print(f"[green]trusted[/]: host {result.host} in cluster {result.cluster} "
                      f"matches baseline {result.baseline}; token valid until "
                      f"{result.expires_at.isoformat() if result.expires_at else '-'}")
        return
    failure = result.failure
    console.print(f"[red]untrusted[/]: {failure.detail if failure else '-'}", soft_wrap=True)
    if failure is not None and failure.differences:
        console.print(differences_table(failure))


def _der(path: Path, as_json: bool) -> bytes:
    raw = read_input_file(str(path), what="certificate", max_bytes=64 * 1024, as_json=as_json)
    try:
        certificate = load_certificate(raw)
    except TrustAuthorityError as error:
        fail(f"--ek-intermediate {path}: {error}; give a CA certificate in PEM or DER",
             as_json=as_json)
    return certificate.public_bytes(serialization.Encoding.DER)


@app.command()
def enroll(
    server: Annotated[str, typer.Option(help="The service URL.", envvar="TA_SERVER")],
    join_token: Annotated[str | None, typer.Option(
        help="A join token from `host join-token create` (else the host waits for approval).",
        envvar="TA_JOIN_TOKEN")] = None,
    ca: Annotated[str | None, typer.Option(help="The service's CA certificate (PEM).",
                                           envvar="TA_CA")] = None,
    tcti: Annotated[str, typer.Option(help="How to reach the TPM.",
                                      envvar="TA_AGENT_TCTI")] = agent_host.DEFAULT_TCTI,
    eventlog: Annotated[str, typer.Option(help="The firmware event log.")] = (
        agent_host.DEFAULT_EVENT_LOG),
    hostname: Annotated[str | None, typer.Option(help="Name to enroll under.")] = None,
    ek: Annotated[Literal["rsa", "ecc"], typer.Option(help="Which EK to use.")] = "rsa",
    ek_intermediate: Annotated[list[Path] | None, typer.Option(
        help="A CA certificate (PEM or DER) between the EK certificate and the vendor root; "
             "repeatable.")] = None,
    state_dir: StateDirOption = agent_host.DEFAULT_STATE_DIR,
    as_json: JsonOption = False,
) -> None:
    """Enroll this machine: EK certificate, a new AK and binding key, MakeCredential.

    Example: `ta agent enroll --server https://ta:8443 --ca ca.pem --join-token taj_…`
    """
    intermediates = tuple(_der(path, as_json) for path in ek_intermediate or ())
    states = _states(state_dir, as_json)
    _quiet_tpm_library()
    try:
        state = agent_host.enroll(states, server=server,
                                  join_token=join_token, tcti=tcti, event_log=eventlog,
                                  # absolute: the agent may run from another directory later
                                  ca_file=str(Path(ca).resolve()) if ca else None,
                                  hostname=hostname, ek_kind=ek,
                                  ek_intermediates=intermediates)
    except TrustAuthorityError as error:
        fail_with(error, as_json=as_json)
    if as_json:
        print_json({"host": state.host_name, "host_id": state.host_id, "cluster": state.cluster})
    else:
        console.print(f"enrolled as host {state.host_name} ({state.host_id}); cluster: "
                      f"{state.cluster or 'none yet: an infra-admin must approve it'}")


@app.command()
def attest(
    state_dir: StateDirOption = agent_host.DEFAULT_STATE_DIR,
    eventlog: Annotated[str | None, typer.Option(
        help="The firmware event log (default: the one named at enrollment).")] = None,
    as_json: JsonOption = False,
) -> None:
    """Attest once: challenge, quote, certify, event log; keep the token. Exit 1 if untrusted.

    Example: `ta agent attest`
    """
    states = _states(state_dir, as_json)
    _quiet_tpm_library()
    try:
        result = agent_host.attest(states, event_log=eventlog)
    except TrustAuthorityError as error:
        fail_with(error, as_json=as_json)
    if as_json:
        print_json(result.model_dump(mode="json", exclude={"token"}))
    else:
        _human_result(result)
    if result.status != "trusted":
        raise SystemExit(EXIT_REJECTED)


@app.command()
def run(
    interval: Annotated[float, typer.Option(min=1, max=86400,
                                            help="Seconds between attestations.")] = 60,
    jitter: Annotated[float, typer.Option(min=0, max=0.5,
                                          help="Spread, as a fraction of the interval.")] = 0.1,
    state_dir: StateDirOption = agent_host.DEFAULT_STATE_DIR,
    eventlog: Annotated[str | None, typer.Option(help="The firmware event log.")] = None,
) -> None:
    """Attest on a timer until stopped (SIGTERM/SIGINT); logs every change of state.

    Example: `ta agent run --interval 300`
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    states = _states(state_dir, False)
    _quiet_tpm_library()
    try:
        states.load()  # fail now, not in the loop, if not enrolled
        agent_host.run(states, interval=interval, jitter=jitter,
                       stop=stop, event_log=eventlog)
    except TrustAuthorityError as error:
        fail_with(error)


@app.command()
def status(state_dir: StateDirOption = agent_host.DEFAULT_STATE_DIR,
           as_json: JsonOption = False) -> None:
    """What the agent is enrolled as, and its last verdict.  Example: `ta agent status`"""
    try:
        current = agent_host.status(_states(state_dir, as_json))
    except TrustAuthorityError as error:
        fail_with(error, as_json=as_json)
    if as_json:
        print_json(current)
        return
    last = current["last"] or {}
    jkt = current["binding_key_jkt"] or "damaged: enroll again"
    console.print(f"host {current['host']} ({current['host_id']}), cluster "
                  f"{current['cluster'] or '-'}, server {current['server']}\n"
                  f"last attestation: {last.get('status', 'none')} at {last.get('at', '-')}: "
                  f"{last.get('detail', '-')}\n"
                  f"binding key (cnf.jkt of its tokens): {jkt}\n"
                  f"token held: {'yes' if current['has_token'] else 'no'}"
                  f"{' until ' + last['token_expires_at'] if last.get('token_expires_at') else ''}",
                  soft_wrap=True)


@app.command("simulate-boot")
def simulate_boot(
    tcti: Annotated[str, typer.Option(help="The software TPM (a fresh one: PCRs at reset).",
                                      envvar="TA_AGENT_TCTI")],
    eventlog: Annotated[Path, typer.Option(help="Where to write the matching event log.")],
    image: Annotated[Literal["golden", "modified-kernel"], typer.Option(
        help="What the simulated machine boots.")] = "golden",
) -> None:
    """For software TPMs: extend the PCRs with a simulated UEFI boot, write its event log.

    Example: `ta agent simulate-boot --tcti swtpm:path=/tmp/tpm.sock --eventlog boot.bin`
    """
    from trustauthority.agent.tpm import AgentTpm  # needs tpm2-pytss; only this command

    _quiet_tpm_library()
    chosen = simboot.GOLDEN_IMAGE if image == "golden" else simboot.MODIFIED_KERNEL_IMAGE
    try:
        with AgentTpm(tcti) as tpm:
            events, raw_log = simboot.measure(tpm, chosen)
    except TrustAuthorityError as error:
        fail_with(error)
    write_private(eventlog, raw_log)
    console.print(json.dumps({"events": len(events), "eventlog": str(eventlog)}), markup=False)


workload_app = typer.Typer(help="Workloads encrypted under keys released only to this host "
                                "while it is trusted.", no_args_is_help=True)
app.add_typer(workload_app, name="workload")


def _blob_text(blob: str, as_json: bool) -> str:
    """A blob given inline (tak1.…) or as a file holding one."""
    if blob.startswith("tak1."):
        return blob
    return read_input_file(blob, what="key blob", max_bytes=8192,
                           as_json=as_json).decode("ascii", "replace").strip()


@workload_app.command("encrypt")
def workload_encrypt(
    source: Annotated[Path, typer.Argument(help="The plaintext file (disk image, secret).")],
    target: Annotated[Path, typer.Argument(help="Where to write the encrypted workload.")],
    workload: Annotated[str, typer.Option(help="The workload's id, as at `key create`.")],
    blob: Annotated[str, typer.Option(help="The workload key's blob (tak1.…) or a file with it.")],
    secret: Annotated[bool, typer.Option(
        help="AES-256-GCM for a secret or small file (default: AES-256-XTS for images).")
        ] = False,
    state_dir: StateDirOption = agent_host.DEFAULT_STATE_DIR,
    as_json: JsonOption = False,
) -> None:
    """Encrypt a workload under a fresh data key wrapped by its released workload key.

    Example: `ta agent workload encrypt disk.img disk.img.ta --workload vm-42 --blob vm-42.blob`
    """
    from trustauthority.agent.keys import fetch_key
    from trustauthority.agent.workload import encrypt_file

    if not source.is_file():
        fail(f"{source} is not a readable file", as_json=as_json)
    text = _blob_text(blob, as_json)
    states = _states(state_dir, as_json)
    try:
        kek = fetch_key(states, text, workload)
        header = encrypt_file(source, target, workload=workload, blob=text, kek=kek,
                              cipher="aes-256-gcm" if secret else "aes-256-xts")
    except TrustAuthorityError as error:
        fail_with(error, as_json=as_json)
    except OSError as error:
        fail(f"cannot encrypt {source}: {error.strerror or error}", as_json=as_json)
    if as_json:
        print_json({"workload": workload, "cipher": header.cipher, "size": header.size,
                    "target": str(target)})
    else:
        # markup=False here and below: paths are the user's, and "[/]" in one is no markup
        console.print(f"encrypted {source} ({header.size} bytes, {header.cipher}) into {target}",
                      markup=False)


def _check_workload(source: Path, as_json: bool) -> None:
    """Refuse a SOURCE that is no encrypted workload before any key is asked for, saying what
    it should be (the header's own message names no file)."""
    from trustauthority.agent.workload import read_header

    try:
        with source.open("rb") as stream:
            read_header(stream)
    except OSError as error:
        fail(f"cannot open {source}: {error.strerror or error}; check the path", as_json=as_json)
    except TrustAuthorityError as error:
        fail_with(error, as_json=as_json,
                  hint=f"{source} must be a file `ta agent workload encrypt` wrote")


def _identity(path: Path) -> tuple[int, int, int] | None:
    try:
        info = path.stat()
    except OSError:
        return None
    return info.st_ino, info.st_mtime_ns, info.st_size


def _discard(target: Path, before: tuple[int, int, int] | None) -> None:
    """Remove what a failed decryption wrote to TARGET (partial, unauthenticated plaintext), but
    never a file that was there and was not written: most failures (no key released, a header
    altered) come before the first write, and the user's file must survive them."""
    after = _identity(target)
    if after is not None and after != before:
        target.unlink(missing_ok=True)


def _outdated_notice(source: Path, header_blob: str, current_blob: str) -> None:
    from trustauthority.keyrelease.blob import parse_blob

    old, new = parse_blob(header_blob), parse_blob(current_blob)
    err_console.print(
        f"note: {source} holds its key's blob under primary key version {old.primary_version}; "
        f"the service now wraps the key under version {new.primary_version}. Rewrite the file "
        f"before version {old.primary_version} is retired, or it will no longer open: "
        f"ta agent workload rekey {source} NEW", markup=False, soft_wrap=True)


def _sealed_copy_notice() -> None:
    err_console.print("note: the service could not be reached; the key was opened from its "
                      "copy sealed to this TPM (this boot matches the one it was sealed in)",
                      markup=False, soft_wrap=True)


def _open_workload(source: Path, target: Path, state_dir: Path, *, attest_first: bool,
                   as_json: bool, persist: bool = False) -> None:
    from trustauthority.agent.keys import release_key
    from trustauthority.agent.workload import WorkloadHeader, decrypt_file

    _check_workload(source, as_json)
    states = _states(state_dir, as_json)
    _quiet_tpm_library()
    current_blob: str | None = None
    from_sealed_copy = False

    def kek_for(header: WorkloadHeader) -> bytes:
        nonlocal current_blob, from_sealed_copy
        released = release_key(states, header.blob, header.workload,
                               attest_if_needed=attest_first, persist=persist)
        current_blob, from_sealed_copy = released.current_blob, released.from_sealed_copy
        return released.key

    before = _identity(target)
    try:
        header = decrypt_file(source, target, kek_for)
    except TrustAuthorityError as error:
        _discard(target, before)
        fail_with(error, as_json=as_json)
    except OSError as error:
        _discard(target, before)
        fail(f"cannot open {source}: {error.strerror or error}", as_json=as_json)
    if current_blob is not None:
        _outdated_notice(source, header.blob, current_blob)
    if from_sealed_copy:
        _sealed_copy_notice()
    if as_json:
        print_json({"workload": header.workload, "cipher": header.cipher, "size": header.size,
                    "target": str(target), "blob_outdated": current_blob is not None,
                    "key_from": "sealed copy" if from_sealed_copy else "release"})
    else:
        console.print(f"workload {header.workload} opened into {target} ({header.size} bytes)",
                      markup=False)


@workload_app.command("unlock")
def workload_unlock(
    source: Annotated[Path, typer.Argument(
        help="The encrypted workload, or a LUKS2 volume enrolled with `luks-enroll`.")],
    target: Annotated[str | None, typer.Argument(
        help="Where to put the opened data (owner-only); for a LUKS2 volume, the name to map "
             "it as (/dev/mapper/NAME), left out with --test.")] = None,
    persist_key: Annotated[bool, typer.Option(
        help="Also seal the released key to this TPM under the boot's PCR values, so the "
             "workload opens while the service or its key servers are unreachable, as long "
             "as the host boots the same way; a refusal by the service removes the copy.")]
    = False,
    test: Annotated[bool, typer.Option(
        "--test", help="LUKS2 volumes: only check that the released key opens the volume, "
                       "and map nothing.")] = False,
    state_dir: StateDirOption = agent_host.DEFAULT_STATE_DIR,
    as_json: JsonOption = False,
) -> None:
    """Attest if needed, get the workload key by attested release, open the workload.

    Example: `ta agent workload unlock disk.img.ta /run/vm-42/disk.img --persist-key`, or for a
    LUKS2 volume `ta agent workload unlock /dev/vdb vm-42-data`
    """
    from trustauthority.agent.luks import check_mapping_name, is_luks2

    if is_luks2(source):
        if target is None and not test:
            fail("give the name to map the volume as (or --test to check the key only)",
                 as_json=as_json)
        if target is not None and not test:
            try:
                check_mapping_name(target)
            except TrustAuthorityError as error:
                fail_with(error, as_json=as_json)
        _open_luks(source, None if test else target, state_dir, as_json=as_json,
                   persist=persist_key)
        return
    if test:
        fail(f"{source} is no LUKS2 volume: use --test with LUKS2 volumes only",
             as_json=as_json)
    if target is None:
        fail("give TARGET: where to put the opened data", as_json=as_json)
    _open_workload(source, Path(target), state_dir, attest_first=True, as_json=as_json,
                   persist=persist_key)


def _open_luks(device: Path, name: str | None, state_dir: Path, *, as_json: bool,
               persist: bool) -> None:
    from trustauthority.agent.keys import release_key
    from trustauthority.agent.luks import open_volume, read_enrolment

    states = _states(state_dir, as_json)
    _quiet_tpm_library()
    try:
        enrolment = read_enrolment(device)
        if enrolment is None:
            raise UsageError(f"{device} holds no Trust Authority token: enroll it first with "
                             "`ta agent workload luks-enroll`")
        released = release_key(states, enrolment.blob, enrolment.workload,
                               attest_if_needed=True, persist=persist)
        open_volume(device, enrolment, released.key, name=name)
    except TrustAuthorityError as error:
        fail_with(error, as_json=as_json)
    if released.current_blob is not None:
        err_console.print(
            f"note: {device}'s token holds an older blob of its key; store the current one "
            f"with: ta agent workload luks-enroll {device} --replace", markup=False,
            soft_wrap=True)
    if released.from_sealed_copy:
        _sealed_copy_notice()
    if as_json:
        print_json({"workload": enrolment.workload, "device": str(device), "mapped_as": name,
                    "keyslot": enrolment.keyslot, "blob_outdated": released.current_blob
                    is not None, "key_from": "sealed copy" if released.from_sealed_copy
                    else "release"})
    elif name is None:
        console.print(f"the released key of workload {enrolment.workload} opens {device} "
                      f"(keyslot {enrolment.keyslot}); nothing mapped", markup=False)
    else:
        console.print(f"workload {enrolment.workload} opened: {device} is /dev/mapper/{name}",
                      markup=False)


@workload_app.command("luks-enroll")
def workload_luks_enroll(
    device: Annotated[Path, typer.Argument(help="The LUKS2 volume (device or image file).")],
    key_file: Annotated[str | None, typer.Option(
        help="A file with a passphrase or key that opens the volume now ('-': standard input; "
             "read as is, newline included). With --replace it may be left out: the enrolled "
             "key, released again, opens the volume.")] = None,
    workload: Annotated[str | None, typer.Option(
        help="The workload's id, as at `key create` (with --replace: by default the enrolled "
             "one).")] = None,
    blob: Annotated[str | None, typer.Option(
        help="The workload key's blob (tak1.…) or a file with it (with --replace: the one "
             "the service holds now).")] = None,
    replace: Annotated[bool, typer.Option(
        help="Enroll a volume again (a rotated key, a newer blob): the earlier keyslot and "
             "token go once the new ones are in place.")] = False,
    state_dir: StateDirOption = agent_host.DEFAULT_STATE_DIR,
    as_json: JsonOption = False,
) -> None:
    """Let a LUKS2 volume open only by attested key release: a keyslot for the workload's key
    and a token in the volume's header naming the key, as Clevis and systemd-cryptenroll do.

    Example: `ta agent workload luks-enroll /dev/vdb --workload vm-42 --blob vm-42.blob
    --key-file recovery.key`
    """
    from trustauthority.agent.keys import fetch_key, release_key
    from trustauthority.agent.luks import (
        MAX_SECRET,
        enroll,
        is_luks2,
        read_enrolment,
        volume_passphrase,
    )

    if not is_luks2(device):
        fail(f"{device} is not a LUKS2 volume; give one that `cryptsetup luksFormat --type luks2` "
             "made", as_json=as_json)
    existing = None if key_file is None else read_input_file(
        key_file, what="key file", max_bytes=MAX_SECRET, as_json=as_json, allow_stdin=True)
    states = _states(state_dir, as_json)
    _quiet_tpm_library()
    text = None if blob is None else _blob_text(blob, as_json)
    earlier_kek = None
    try:
        enrolled = read_enrolment(device, require_keyslot=False) if replace else None
        if enrolled is not None:
            if workload not in (None, enrolled.workload) and text is None:
                raise UsageError(f"{device} is enrolled for workload {enrolled.workload}; give "
                                 f"--blob with the key of workload {workload}")
            # the earlier key proves which keyslots are its own (the token could name any),
            # opens the volume when no --key-file is given, and gives the current blob
            try:
                released = release_key(states, enrolled.blob, enrolled.workload)
            except TrustAuthorityError:
                if existing is None or text is None:
                    raise
            else:
                earlier_kek = released.key
                if existing is None:
                    existing = volume_passphrase(released.key, enrolled.workload)
                text = text or released.current_blob or enrolled.blob
            workload = workload or enrolled.workload
        if text is None or workload is None or existing is None:
            raise UsageError("give --workload, --blob and --key-file (only --replace of an "
                             "enrolled volume can take them from its token)")
        enrolled_now = enroll(device, workload=workload, blob=text,
                              kek=fetch_key(states, text, workload), existing_key=existing,
                              replace=replace, earlier_kek=earlier_kek)
    except TrustAuthorityError as error:
        fail_with(error, as_json=as_json)
    enrolment = enrolled_now.enrolment
    if enrolled_now.kept_keyslots:
        err_console.print(
            f"note: keyslot(s) {', '.join(map(str, enrolled_now.kept_keyslots))} named by the "
            f"earlier token were kept: the earlier key was not shown to open them. Remove them "
            f"with `cryptsetup luksKillSlot {device} N` once you know what they are.",
            markup=False, soft_wrap=True)
    if as_json:
        print_json({"device": str(device), "workload": enrolment.workload,
                    "keyslot": enrolment.keyslot, "token_id": enrolment.token_id,
                    "kept_keyslots": list(enrolled_now.kept_keyslots)})
    else:
        console.print(f"{device} enrolled for workload {enrolment.workload}: keyslot "
                      f"{enrolment.keyslot}, token {enrolment.token_id}; it opens with "
                      f"`ta agent workload unlock {device} NAME`", markup=False)


@workload_app.command("decrypt")
def workload_decrypt(
    source: Annotated[Path, typer.Argument(help="The encrypted workload.")],
    target: Annotated[Path, typer.Argument(help="Where to write the plaintext (owner-only).")],
    state_dir: StateDirOption = agent_host.DEFAULT_STATE_DIR,
    as_json: JsonOption = False,
) -> None:
    """Decrypt with the token this host holds now (no new attestation).

    Example: `ta agent workload decrypt secret.ta secret.txt`
    """
    _open_workload(source, target, state_dir, attest_first=False, as_json=as_json)


@workload_app.command("rekey")
def workload_rekey(
    source: Annotated[Path, typer.Argument(help="The encrypted workload.")],
    target: Annotated[Path, typer.Argument(help="Where to write it under the new key.")],
    blob: Annotated[str | None, typer.Option(
        help="The new key's blob (from `key rotate`), or a file. Without it: the same key, "
             "under the blob the service holds now (after a shallow rekey).")] = None,
    state_dir: StateDirOption = agent_host.DEFAULT_STATE_DIR,
    as_json: JsonOption = False,
) -> None:
    """Re-encrypt a workload into TARGET under a fresh data key: with --blob, under its rotated
    key (deep rekey; both keys by attested release); without, under its current key's current
    blob, so the file outlives the retirement of an older primary key version.

    Example: `ta agent workload rekey disk.img.ta disk.img.ta.new --blob vm-42.v2.blob`
    """
    from trustauthority.agent.keys import fetch_key, release_key
    from trustauthority.agent.workload import WorkloadHeader, read_header, rekey_file
    from trustauthority.keyrelease.blob import parse_blob

    _check_workload(source, as_json)
    text = None if blob is None else _blob_text(blob, as_json)
    states = _states(state_dir, as_json)

    def kek_for(header: WorkloadHeader) -> bytes:
        return fetch_key(states, header.blob, header.workload)

    before = _identity(target)
    try:
        if text is None:  # the same key: one release gives it and its current blob
            with source.open("rb") as stream:
                present = read_header(stream)
            released = release_key(states, present.blob, present.workload)
            if released.current_blob is None:
                raise UsageError(f"{source} already holds its key's current blob: nothing to "
                                 "rewrite (give --blob for a rotated key)")
            text = released.current_blob
            # the new blob is trusted only once it opens, on the key server, to the same key
            if not hmac.compare_digest(fetch_key(states, text, present.workload),
                                       released.key):
                raise WrappedKeyInvalid("the service's current blob does not open to this "
                                        "file's key; the file is left as it is")
            header = rekey_file(source, target, kek_for=lambda _header: released.key,
                                blob=text, new_kek=released.key)
        else:
            new = parse_blob(text)
            header = rekey_file(source, target, kek_for=kek_for, blob=text,
                                new_kek=fetch_key(states, text, new.workload))
    except TrustAuthorityError as error:
        _discard(target, before)
        fail_with(error, as_json=as_json)
    except OSError as error:
        _discard(target, before)
        fail(f"cannot rekey {source}: {error.strerror or error}", as_json=as_json)
    if as_json:
        print_json({"workload": header.workload, "target": str(target), "size": header.size})
    else:
        console.print(f"workload {header.workload} re-encrypted under its new key into {target}",
                      markup=False)
