"""`agent/install-host.sh` on the KVM hosts CloudStack supports, with stand-in interpreters: a
`python3` and a `python3.11` that report 3.10 make it stop before it changes anything, naming the
packages to install for the distribution its os-release names; a 3.11 without its venv module
names that package. (The real install with the machine's Python: integration/tests/test_packaging.py.)"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "agent" / "install-host.sh"
NO_PYTHON = 3
# What the script may run besides the interpreters (no real Python may be on its PATH).
TOOLS = ("sed", "head", "tr", "dirname", "basename", "mkdir", "chmod", "cat")


def stand_in(directory: Path, name: str, version: str, *, venv: bool = True) -> None:
    """An interpreter that answers the script's two questions: its version, and whether it has
    the venv and ensurepip modules."""
    directory.mkdir(exist_ok=True)
    path = directory / name
    path.write_text('#!/bin/sh\ncase "$*" in\n'
                    f'  *ensurepip*) exit {0 if venv else 1} ;;\n'
                    f'  *version_info*) echo "{version}" ;;\n'
                    '  *) exit 1 ;;\nesac\n')
    path.chmod(0o755)


def run(tmp_path: Path, os_release: str, *extra: str) -> subprocess.CompletedProcess[str]:
    tools = tmp_path / "tools"
    tools.mkdir(exist_ok=True)
    for tool in TOOLS:
        found = shutil.which(tool)
        assert found is not None, tool
        if not (tools / tool).exists():
            (tools / tool).symlink_to(found)
    release = tmp_path / "os-release"
    release.write_text(os_release)
    env = {"PATH": f"{tmp_path / 'bin'}:{tools}", "CSSP_OS_RELEASE": str(release), "HOME": str(tmp_path)}
    return subprocess.run(["/bin/sh", str(SCRIPT), "--prefix", str(tmp_path / "venv"),
                           "--systemd-dir", str(tmp_path / "systemd"), *extra],
                          env=env, capture_output=True, text=True, timeout=60)


def release(id_: str, version: str, like: str = "", pretty: str = "") -> str:
    lines = [f'PRETTY_NAME="{pretty or id_ + " " + version}"', f"ID={id_}", f'VERSION_ID="{version}"']
    if like:
        lines.append(f'ID_LIKE="{like}"')
    return "\n".join(lines) + "\n"


DISTRIBUTIONS = {
    "Ubuntu 22.04": (release("ubuntu", "22.04", "debian"), "apt-get install python3.11 python3.11-venv python3.11-dev"),
    "Ubuntu 24.04": (release("ubuntu", "24.04", "debian"), "apt-get install python3 python3-venv python3-dev"),
    "Ubuntu 20.04": (release("ubuntu", "20.04", "debian"), "Ubuntu 20.04 has no Python 3.11 package"),
    "Debian 12": (release("debian", "12"), "apt-get install python3 python3-venv python3-dev"),
    "Rocky 8": (release("rocky", "8.9", "rhel centos fedora"), "dnf install python3.11 python3.11-devel"),
    "AlmaLinux 8": (release("almalinux", "8.10", "rhel centos fedora"), "dnf install python3.11 python3.11-devel"),
    "Rocky 9": (release("rocky", "9.4", "rhel centos fedora"), "dnf install python3.11 python3.11-devel"),
    "AlmaLinux 9": (release("almalinux", "9.3", "rhel centos fedora"), "dnf install python3.11 python3.11-devel"),
    "RHEL 9": (release("rhel", "9.2", "fedora"), "dnf install python3.11 python3.11-devel"),
    "Oracle Linux 8": (release("ol", "8.10", "fedora"), "dnf install python3.11 python3.11-devel"),
    "openSUSE 15": (release("opensuse-leap", "15.5", "suse opensuse"), "zypper install python311 python311-devel"),
}


@pytest.mark.parametrize("distribution", sorted(DISTRIBUTIONS))
def test_no_311_interpreter_stops_naming_the_packages_and_changes_nothing(tmp_path: Path, distribution: str) -> None:
    os_release, packages = DISTRIBUTIONS[distribution]
    for name in ("python3", "python3.11"):
        stand_in(tmp_path / "bin", name, "3 10")
    proc = run(tmp_path, os_release)
    assert proc.returncode == NO_PYTHON, proc.stderr
    assert "no Python 3.11 or newer found" in proc.stderr and "python3.11 (3.10)" in proc.stderr, proc.stderr
    assert packages in proc.stderr, proc.stderr
    assert not (tmp_path / "venv").exists() and not (tmp_path / "systemd").exists()


def test_a_311_without_its_venv_module_names_the_venv_package(tmp_path: Path) -> None:
    """Ubuntu 22.04 with `python3.11` installed but not `python3.11-venv`: a venv made with it
    has no pip, so the script stops before making one."""
    stand_in(tmp_path / "bin", "python3", "3 10")
    stand_in(tmp_path / "bin", "python3.11", "3 11", venv=False)
    proc = run(tmp_path, release("ubuntu", "22.04", "debian"))
    assert proc.returncode == NO_PYTHON, proc.stderr
    assert "without the venv module" in proc.stderr and "apt-get install python3.11-venv" in proc.stderr, proc.stderr
    assert not (tmp_path / "venv").exists()


def test_the_newest_suitable_interpreter_is_chosen(tmp_path: Path) -> None:
    stand_in(tmp_path / "bin", "python3", "3 9")
    stand_in(tmp_path / "bin", "python3.11", "3 11")
    stand_in(tmp_path / "bin", "python3.12", "3 12")
    proc = run(tmp_path, release("rocky", "9.4", "rhel centos fedora"), "--check-only")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"install-host.sh: using {tmp_path / 'bin' / 'python3.12'} (3.12)", proc.stdout


def test_the_units_run_the_virtualenvs_cli() -> None:
    """The units the script installs start the CLI of the virtualenv it makes (and the drop-in
    tries that virtualenv's python first)."""
    checkout = SCRIPT.parents[1]
    for unit in (checkout / "agent" / "cloudstack-storpool-agent.service",
                 checkout / "heartbeat" / "cloudstack-storpool-heartbeat.service"):
        (exec_line,) = [ln for ln in unit.read_text().splitlines() if ln.startswith("ExecStart=")]
        assert exec_line.startswith("ExecStart=/opt/cloudstack-storpool/bin/cloudstack-storpool "), exec_line
    assert "/opt/cloudstack-storpool/bin/python" in (checkout / "heartbeat" / "kvmspheartbeat.sh").read_text()
    assert os.access(SCRIPT, os.X_OK)
