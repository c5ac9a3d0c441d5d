"""`ta quote verify`: exit 0 verified, 1 rejected (naming the check), 2 usage; never a traceback."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from typer.testing import CliRunner

from tests.support.fake_tpm import FakeAk
from trustauthority.cli.main import app
from trustauthority.eventlog import (
    EventSpec,
    EventType,
    build_crypto_agile_log,
    ipl_string,
    parse_event_log,
    replay,
)

runner = CliRunner()
EVENTS = [EventSpec(4, EventType.EV_EFI_ACTION, b"Calling EFI Application"),
          EventSpec(8, EventType.EV_IPL, ipl_string("grub_cmd: linux /vmlinuz ro")),
          EventSpec(9, EventType.EV_IPL, ipl_string("/vmlinuz"), measured=b"kernel")]


@pytest.fixture
def evidence(tmp_path: Path) -> dict[str, Path | str]:
    ak = FakeAk.ecc()
    raw_log = build_crypto_agile_log(EVENTS)
    values = {"sha256": replay(parse_event_log(raw_log))["sha256"]}
    nonce = os.urandom(16)
    attest, signature = ak.quote(nonce, values)
    files: dict[str, Path | str] = {"nonce": nonce.hex()}
    for name, data in {
        "ak.pem": ak.public.public_key.public_bytes(Encoding.PEM,
                                                    PublicFormat.SubjectPublicKeyInfo),
        "ak.tpm2b": ak.public.tpm2b, "quote.msg": attest, "quote.sig": signature,
        "log.bin": raw_log,
        "pcrs.json": json.dumps({"sha256": {str(k): v.hex() for k, v in
                                            values["sha256"].items()}}).encode(),
    }.items():
        path = tmp_path / name
        path.write_bytes(data)
        files[name] = path
    return files


def _args(files: dict[str, Path | str], **overrides: str) -> list[str]:
    base = {"--ak": str(files["ak.tpm2b"]), "--attest": str(files["quote.msg"]),
            "--signature": str(files["quote.sig"]), "--nonce": str(files["nonce"])}
    base.update(overrides)
    return ["quote", "verify", *[item for pair in base.items() for item in pair]]


def test_verified_with_pcrs_file(evidence: dict[str, Path | str]) -> None:
    result = runner.invoke(app, [*_args(evidence), "--pcrs", str(evidence["pcrs.json"])])
    assert result.exit_code == 0, result.output
    assert "quote verified" in result.output


def test_verified_with_event_log_and_pem_ak_as_json(evidence: dict[str, Path | str]) -> None:
    result = runner.invoke(app, [*_args(evidence, **{"--ak": str(evidence["ak.pem"])}),
                                 "--eventlog", str(evidence["log.bin"]), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["ok"] is True
    assert report["event_log"]["pcrs_confirmed"] == [4, 8, 9]


def test_wrong_nonce_is_rejected_with_exit_1(evidence: dict[str, Path | str]) -> None:
    result = runner.invoke(app, [*_args(evidence, **{"--nonce": "00" * 16}),
                                 "--pcrs", str(evidence["pcrs.json"]), "--json"])
    assert result.exit_code == 1
    assert json.loads(result.output)["error"]["type"] == "nonce_mismatch"


def test_tampered_log_is_rejected_naming_the_pcr(evidence: dict[str, Path | str],
                                                 tmp_path: Path) -> None:
    other = tmp_path / "other.bin"
    other.write_bytes(build_crypto_agile_log(
        [*EVENTS[:2], EventSpec(9, EventType.EV_IPL, ipl_string("/vmlinuz"), measured=b"evil")]))
    result = runner.invoke(app, [*_args(evidence), "--pcrs", str(evidence["pcrs.json"]),
                                 "--eventlog", str(other)])
    assert result.exit_code == 1
    assert "PCR 9" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(("override", "message"), [
    ({"--nonce": "xyz"}, "--nonce must be hex"),
    ({"--ak": "/nonexistent/ak.pem"}, "cannot read"),
])
def test_usage_errors_exit_2(evidence: dict[str, Path | str], override: dict[str, str],
                             message: str) -> None:
    result = runner.invoke(app, [*_args(evidence, **override), "--pcrs",
                                 str(evidence["pcrs.json"])])
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("content", [b"", b"not json", b'{"sha256": {"0": "zz"}}',
                                     b'{"md5": {}}', b"[1, 2]", b'{"sha256": {"99": "00"}}',
                                     b"[" * 100_000])
def test_bad_pcr_files_exit_2(evidence: dict[str, Path | str], tmp_path: Path,
                              content: bytes) -> None:
    path = tmp_path / "bad.json"
    path.write_bytes(content)
    result = runner.invoke(app, [*_args(evidence), "--pcrs", str(path)])
    assert result.exit_code == 2, result.output
    assert result.output.count("\n") <= 3


@pytest.mark.parametrize("target", ["--ak", "--attest", "--signature"])
def test_garbage_files_never_traceback(evidence: dict[str, Path | str], tmp_path: Path,
                                       target: str) -> None:
    garbage = tmp_path / "garbage"
    garbage.write_bytes(os.urandom(200))
    result = runner.invoke(app, [*_args(evidence, **{target: str(garbage)}),
                                 "--pcrs", str(evidence["pcrs.json"])])
    assert result.exit_code in (1, 2)
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_neither_pcrs_nor_log_is_a_usage_error(evidence: dict[str, Path | str]) -> None:
    result = runner.invoke(app, _args(evidence))
    assert result.exit_code == 2
    assert "--pcrs" in result.output
