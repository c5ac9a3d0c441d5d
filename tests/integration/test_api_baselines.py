"""Baselines over real HTTPS: imported from real firmware event logs, versioned, diffed,
activated per cluster; damaged logs refused with the evidence core's reason."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.support.service import RunningService
from trustauthority.cli.main import app
from trustauthority.errors import Conflict, MalformedEvidence, NotFound, UsageError
from trustauthority.eventlog import parse_event_log
from trustauthority.schemas import BaselineImport, ClusterBaselineAdd, ClusterCreate

LOGS = Path(__file__).resolve().parents[2].parent / "shared" / "testdata" / "eventlogs"
ALL_LOGS = sorted(path.name for path in LOGS.glob("*.bin"))


def _import(name: str, log: str, **extra: object) -> BaselineImport:
    raw = (LOGS / log).read_bytes()
    return BaselineImport.model_validate({"name": name, "event_log_base64":
                                          base64.b64encode(raw).decode(), **extra})


def test_every_real_log_imports_as_a_versioned_baseline(sqlite_service: RunningService) -> None:
    assert len(ALL_LOGS) >= 10
    with sqlite_service.admin() as admin:
        for log in ALL_LOGS:
            banks = parse_event_log((LOGS / log).read_bytes()).banks
            bank = "sha256" if "sha256" in banks else "sha1"
            made = admin.import_baseline(_import("fleet", log, bank=bank))
            assert made.source.startswith("eventlog:sha256:")
            assert made.baseline["components"], log
        listed = admin.list_baselines()
        assert [item.version for item in listed] == list(range(1, len(ALL_LOGS) + 1))
        assert admin.get_baseline("fleet").version == len(ALL_LOGS)
        assert admin.get_baseline("fleet", 1).version == 1
        imports = admin.audit_entries(action="baseline.import", limit=100)
        assert len(imports) == len(ALL_LOGS)


def test_diff_names_what_differs_between_two_machines(service: RunningService) -> None:
    with service.admin() as admin:
        admin.import_baseline(_import("ubuntu", "ubuntu-2104-no-secure-boot.bin"))
        admin.import_baseline(_import("ubuntu", "ubuntu-2104-no-secure-boot.bin"))
        admin.import_baseline(_import("arch", "arch-linux.bin"))
        same = admin.diff_baselines("ubuntu:1", "ubuntu:2")
        assert same.differences == []
        other = admin.diff_baselines("ubuntu", "arch:1")
    assert other.a == "ubuntu v2"
    assert other.b == "arch v1"
    assert other.differences
    assert all(difference.reason for difference in other.differences)
    assert any(difference.component == "platform-firmware" for difference in other.differences)


def test_baselines_are_activated_per_cluster_and_protected_while_active(
        service: RunningService) -> None:
    with service.admin() as admin:
        admin.create_cluster(ClusterCreate(name="prod"))
        admin.import_baseline(_import("golden", "arch-linux.bin"))
        admin.import_baseline(_import("golden", "arch-linux.bin"))
        active = admin.add_cluster_baseline("prod", ClusterBaselineAdd(baseline="golden",
                                                                       version=1))
        assert active.clusters == ["prod"]
        admin.add_cluster_baseline("prod", ClusterBaselineAdd(baseline="golden"))  # v2 too
        with pytest.raises(Conflict):
            admin.add_cluster_baseline("prod", ClusterBaselineAdd(baseline="golden", version=2))
        with pytest.raises(Conflict, match="active for prod"):
            admin.delete_baseline("golden", 1)
        admin.remove_cluster_baseline("prod", "golden", 1)
        admin.delete_baseline("golden", 1)
        with pytest.raises(NotFound):
            admin.get_baseline("golden", 1)
        with pytest.raises(NotFound):
            admin.add_cluster_baseline("nowhere", ClusterBaselineAdd(baseline="golden"))
        assert [item.clusters for item in admin.list_baselines()] == [["prod"]]
        admin.delete_cluster("prod")  # its activations go with it
        assert [item.clusters for item in admin.list_baselines()] == [[]]


def test_a_damaged_or_foreign_log_is_refused_with_its_reason(
        sqlite_service: RunningService) -> None:
    raw = (LOGS / "arch-linux.bin").read_bytes()
    with sqlite_service.admin() as admin:
        with pytest.raises(MalformedEvidence, match="offset"):
            admin.import_baseline(BaselineImport(
                name="cut", event_log_base64=base64.b64encode(raw[:len(raw) // 2 + 3]).decode()))
        with pytest.raises(UsageError, match="bank"):
            admin.import_baseline(_import("sha1only", "uefi-sha1-log.bin"))
        assert admin.list_baselines() == []
    with sqlite_service.http(sqlite_service.admin_token) as http:
        response = http.post("/v1/baselines", json={"name": "x",
                                                    "event_log_base64": "not base64!"})
        assert response.status_code == 400
        assert response.json()["type"] == "usage_error"
        diff = http.get("/v1/baselines/diff", params={"a": "x:zero", "b": "x"})
        assert diff.status_code == 400


def test_the_cli_imports_diffs_and_activates(sqlite_service: RunningService) -> None:
    connect = ["--server", sqlite_service.url, "--ca", str(sqlite_service.ca_file),
               "--token", sqlite_service.admin_token]
    runner = CliRunner()
    for log in ("ubuntu-2104-no-secure-boot.bin", "rhel8-uefi.bin"):
        made = runner.invoke(app, [*connect, "baseline", "import", log.split("-")[0],
                                   "--eventlog", str(LOGS / log), "--json"])
        assert made.exit_code == 0, made.output
    differs = runner.invoke(app, [*connect, "baseline", "diff", "ubuntu", "rhel8"])
    assert differs.exit_code == 1
    assert "differs from" in differs.output
    same = runner.invoke(app, [*connect, "baseline", "diff", "ubuntu", "ubuntu:1"])
    assert same.exit_code == 0
    runner.invoke(app, [*connect, "cluster", "create", "prod"])
    added = runner.invoke(app, [*connect, "cluster", "add-baseline", "prod", "ubuntu",
                                 "--json"])
    assert json.loads(added.output)["clusters"] == ["prod"]
    missing = runner.invoke(app, [*connect, "baseline", "import", "x", "--eventlog", "/nope"])
    assert missing.exit_code == 2
