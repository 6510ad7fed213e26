"""deploy/systemd/: every unit passes `systemd-analyze verify` (Debian's systemd) without a word
about it, for an API instance, each worker kind and the target; the units stop the processes
with the signal they shut down cleanly on, restart them on failure, run them hardened, and read
settings from the environment file, which names only real settings.

systemd-analyze verify checks that ExecStart's program exists on this machine, so the units
are verified as shipped but for that one path, pointed at this venv's `quanyi`."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from quanyi.cli.serve import STOP_SIGNALS, WORKER_KINDS
from quanyi.core.settings import Settings

SYSTEMD = Path(__file__).resolve().parent.parent / "deploy" / "systemd"
UNITS = ("quanyi-api@.service", "quanyi-worker@.service", "quanyi-migrate.service", "quanyi.target")
SERVICES = UNITS[:3]
INSTALLED = "/opt/quanyi/venv/bin/quanyi"
SETTING_NAMES = {f"QUANYI_{name.upper()}" for name in Settings.__dataclass_fields__}


def tool(name: str) -> str:
    found = shutil.which(name)
    assert found, f"{name} is missing: `make test` installs Debian's systemd package"
    return found


def directives(unit: str) -> dict[str, list[str]]:
    """Key -> values of a unit file, comments left out."""
    found: dict[str, list[str]] = {}
    for line in (SYSTEMD / unit).read_text().splitlines():
        if "=" in line and not line.startswith(("#", ";")):
            key, value = line.split("=", 1)
            found.setdefault(key.strip(), []).append(value.strip())
    return found


@pytest.fixture
def rendered(tmp_path: Path) -> Path:
    """The units as shipped, their program pointed at this venv's quanyi (a link made here)."""
    program = tmp_path / "quanyi"
    program.symlink_to(Path(sys.executable).with_name("quanyi"))
    for unit in UNITS:
        text = (SYSTEMD / unit).read_text()
        assert unit == "quanyi.target" or text.count(INSTALLED) == 1, unit
        (tmp_path / unit).write_text(text.replace(INSTALLED, str(program)))
    return tmp_path


INSTANCES = (
    "quanyi-api@8081.service",
    *(f"quanyi-worker@{kind}.service" for kind in WORKER_KINDS),
    "quanyi-migrate.service",
    "quanyi.target",
)


@pytest.mark.parametrize("unit", INSTANCES)
def test_systemd_analyze_verify_says_nothing_about_the_unit(rendered, unit):
    done = subprocess.run(
        [tool("systemd-analyze"), "verify", str(rendered / unit)],
        capture_output=True,
        text=True,
        cwd=rendered,
    )
    said = [line for line in (done.stdout + done.stderr).splitlines() if "quanyi" in line]
    assert done.returncode == 0 and said == [], done.stdout + done.stderr


def test_verify_does_report_a_mistake_in_a_unit(rendered):
    """What the test above relies on: verify speaks up (exit status 0 all the same)."""
    unit = rendered / "quanyi-api@.service"
    unit.write_text(unit.read_text().replace("Restart=on-failure", "Restrat=on-failure"))
    done = subprocess.run(
        [tool("systemd-analyze"), "verify", str(rendered / "quanyi-api@8081.service")],
        capture_output=True,
        text=True,
    )
    assert "Unknown key 'Restrat'" in done.stderr, done.stderr


@pytest.mark.parametrize("unit", SERVICES)
def test_each_service_is_hardened_and_reads_its_settings_from_the_environment_file(unit):
    found = directives(unit)
    for key, value in {
        "EnvironmentFile": "/etc/quanyi/quanyi.env",
        "DynamicUser": "yes",
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "CapabilityBoundingSet": "",
        "LoadCredential": "secrets.key:/etc/quanyi/secrets.key",
    }.items():
        assert found.get(key) == [value], (unit, key, found.get(key))
    # No secret in the unit itself: its only setting names the key file the credential holds.
    assert found["Environment"] == ["QUANYI_SECRETS_KEY=file:%d/secrets.key"]


@pytest.mark.parametrize("unit", ["quanyi-api@.service", "quanyi-worker@.service"])
def test_processes_stop_on_their_clean_shutdown_signal_and_restart_on_failure(unit):
    found = directives(unit)
    (kill,) = found["KillSignal"]
    assert getattr(signal, kill) in STOP_SIGNALS
    assert found["Restart"] == ["on-failure"]
    assert found["WantedBy"] == ["quanyi.target"] and found["PartOf"] == ["quanyi.target"]
    assert found["Requires"] == ["quanyi-migrate.service"]


def test_the_api_listens_on_its_instance_port_and_the_workers_are_the_real_kinds():
    (api,) = directives("quanyi-api@.service")["ExecStart"]
    assert api == f"{INSTALLED} serve --host 127.0.0.1 --port %i"
    (worker,) = directives("quanyi-worker@.service")["ExecStart"]
    assert worker == f"{INSTALLED} worker %i"
    # The kinds the unit's own instructions enable are every kind `quanyi worker` takes.
    named = re.findall(r"quanyi-worker@(\w+)", (SYSTEMD / "quanyi-worker@.service").read_text())
    assert set(named) == set(WORKER_KINDS)


def test_the_environment_file_names_only_real_settings_and_no_real_secret():
    text = (SYSTEMD / "quanyi.env.example").read_text()
    names = re.findall(r"^#?(QUANYI_[A-Z0-9_]+)=", text, re.MULTILINE)
    assert names and set(names) <= SETTING_NAMES, set(names) - SETTING_NAMES
    assert "QUANYI_SECRETS_KEY" not in names  # the credential, not the file, holds the key
    for line in re.findall(r"^#?QUANYI_\w*(?:SECRET|DATABASE_URL)\w*=.*$", text, re.MULTILINE):
        assert "CHANGE-ME" in line, line
    Settings.from_env(dict(re.findall(r"^(QUANYI_\w+)=(.*)$", text, re.MULTILINE)))
