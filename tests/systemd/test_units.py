"""The systemd units: valid for systemd itself, hardened, and pointing at the right commands."""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

UNITS_DIR = Path(__file__).parents[2] / "systemd"
SERVICES = ["htx-daemon.service", "htx-api.service"]
INSTALLED_HTX = "/opt/htx/.venv/bin/htx"


def _read(name: str) -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(strict=False, delimiters=("=",))
    parser.optionxform = str  # keys are case-sensitive
    parser.read(UNITS_DIR / name)
    return parser


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed (.ci/run installs Debian's systemd)")
def test_systemd_analyze_verify_passes(tmp_path: Path) -> None:
    # verify checks that ExecStart exists: point it at this checkout's htx, nothing else changes.
    htx = Path(sys.executable).with_name("htx")
    for name in [*SERVICES, "htx.target"]:
        text = (UNITS_DIR / name).read_text()
        (tmp_path / name).write_text(text.replace(INSTALLED_HTX, str(htx)))
    result = subprocess.run(
        ["systemd-analyze", "verify", *[str(tmp_path / name) for name in [*SERVICES, "htx.target"]]],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "htx-" not in result.stderr, result.stderr  # no warnings about our units either


@pytest.mark.parametrize("name", SERVICES)
def test_services_are_hardened_and_use_the_state_directory(name: str) -> None:
    service = _read(name)["Service"]
    assert service["User"] == "htx"
    assert service["StateDirectory"] == "htx"
    assert service["ReadWritePaths"] == "/var/lib/htx"
    assert service["Restart"] == "on-failure"
    for key, value in {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "SystemCallFilter": "@system-service",
    }.items():
        assert service[key] == value, key
    assert service["UMask"] == "0027"
    assert "RestrictAddressFamilies" in service
    assert service["ExecStart"].startswith(f"{INSTALLED_HTX} --config /etc/htx/config.toml ")


def test_daemon_is_a_notify_service_with_a_watchdog() -> None:
    service = _read("htx-daemon.service")["Service"]
    assert service["Type"] == "notify"
    assert int(service["WatchdogSec"]) > 0
    assert service["ExecStart"].endswith(" daemon")
    assert service["RestrictAddressFamilies"] == "AF_UNIX"  # the notify socket, nothing else


def test_target_starts_and_stops_both() -> None:
    target = _read("htx.target")
    assert set(target["Unit"]["Wants"].split()) == set(SERVICES)
    for name in SERVICES:
        unit = _read(name)
        assert unit["Unit"]["PartOf"] == "htx.target"
        assert unit["Install"]["WantedBy"] == "htx.target"


@pytest.mark.parametrize("name", [*SERVICES, "htx.target"])
def test_documentation_points_at_the_installed_readme(name: str) -> None:
    text = (UNITS_DIR / name).read_text()
    assert "http://" not in text and "https://" not in text, "a link to a site this project does not have"
    for line in text.splitlines():
        if line.startswith("Documentation="):
            assert line == "Documentation=file:/opt/htx/README.md"
    assert (UNITS_DIR.parent / "README.md").is_file()


def test_the_api_reads_models_from_the_daemons_cache_offline() -> None:
    def environment(name: str) -> dict[str, str]:
        return dict(item.split("=", 1) for item in _read(name)["Service"]["Environment"].split())

    daemon, api = environment("htx-daemon.service"), environment("htx-api.service")
    assert api["HF_HOME"] == daemon["HF_HOME"] and api["HF_HUB_OFFLINE"] == "1"


def test_the_admin_wrapper_runs_htx_as_the_daemon_does() -> None:
    wrapper = (UNITS_DIR / "htx-admin").read_text()
    service = _read("htx-daemon.service")["Service"]
    environment = dict(item.split("=", 1) for item in service["Environment"].split())
    assert f"HF_HOME={environment['HF_HOME']}" in wrapper
    config_file = service["ExecStart"].split("--config ", 1)[1].split()[0]
    assert f"HTX_CONFIG={config_file}" in wrapper
    assert f"runuser -u {service['User']} -- {INSTALLED_HTX} " in wrapper
    assert f"[ -r {service['EnvironmentFile'].lstrip('-')} ]" in wrapper
    assert subprocess.run(["sh", "-n", str(UNITS_DIR / "htx-admin")], check=False).returncode == 0


def test_the_admin_wrapper_keeps_the_callers_folder_when_the_service_user_may_enter_it(tmp_path: Path) -> None:
    """`htx ingest photo.jpg` in /srv/scans means /srv/scans/photo.jpg; from root's home, which
    the service user may not enter, the command runs from the service's folder instead."""
    if os.geteuid() != 0 or shutil.which("runuser") is None:
        pytest.skip("needs root and runuser, as the wrapper does")
    open_folder = Path(tempfile.mkdtemp(prefix="htx-admin-"))
    try:
        open_folder.chmod(0o755)
        service_home, scans, shut = (open_folder / name for name in ("service-home", "scans", "shut"))
        for folder in (service_home, scans, shut):
            folder.mkdir()
            folder.chmod(0o755)
        shut.chmod(0o700)  # as /root is
        fake_htx = open_folder / "htx"
        fake_htx.write_text('#!/bin/sh\necho "$(pwd) $*"\n')
        fake_htx.chmod(0o755)
        wrapper = open_folder / "htx-admin"
        text = (UNITS_DIR / "htx-admin").read_text()
        text = text.replace("runuser -u htx", "runuser -u nobody").replace(INSTALLED_HTX, str(fake_htx))
        text = text.replace("cd /var/lib/htx", f"cd {service_home}").replace("/etc/htx/env", str(open_folder / "no-env"))
        wrapper.write_text(text)
        wrapper.chmod(0o755)
        for where, expected in ((scans, scans), (shut, service_home)):
            ran = subprocess.run([str(wrapper), "ingest", "photo.jpg"], cwd=where, capture_output=True, text=True, timeout=30)
            assert ran.returncode == 0, ran.stderr
            assert ran.stdout.strip() == f"{expected} ingest photo.jpg"
    finally:
        shutil.rmtree(open_folder)
