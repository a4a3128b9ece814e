"""The production wheels: five distributions sharing the `cloudstack_storpool` namespace (no
`__init__.py` at its top), no stand-ins, no tests; a KVM host installs the core, settings, agent
and heartbeat without the management driver, a management server the driver without the agent,
and the CLI loads no stand-in."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

from integration import CHECKOUT

STAND_INS = ("integration", "tests", "benchmarks", "agent", "heartbeat", "settings", "driver")
# distribution folder (relative to the checkout) -> wheel name prefix
DISTRIBUTIONS = {
    ".": "cloudstack_storpool-",
    "settings": "cloudstack_storpool_settings-",
    "agent": "cloudstack_storpool_agent-",
    "heartbeat": "cloudstack_storpool_heartbeat-",
    "driver": "cloudstack_storpool_driver-",
}
HOST = (".", "settings", "agent", "heartbeat")
MANAGEMENT = (".", "settings", "heartbeat", "driver")


def _build_wheels(tmp: Path) -> dict[str, Path]:
    """Build from a copy of the tracked files: setuptools reuses a checkout's `build/` and would
    ship modules deleted since the last build."""
    src = tmp / "src"
    tracked = subprocess.run(["git", "-C", str(CHECKOUT), "ls-files", "-z"], check=True, capture_output=True,
                             text=True).stdout.split("\0")
    for rel in filter(None, tracked):
        origin, copy = CHECKOUT / rel, src / rel
        if not origin.exists():
            continue  # deleted in the work tree, not yet committed
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(origin, copy)
    out = tmp / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out),
                    *(str(src / folder) for folder in DISTRIBUTIONS)], check=True, capture_output=True, timeout=600)
    wheels = {}
    for folder, prefix in DISTRIBUTIONS.items():
        (wheels[folder],) = out.glob(f"{prefix}[0-9]*.whl")
    return wheels


def _third_party(tmp: Path, name: str) -> Path:
    """A folder of links to the development environment's third-party packages: none of this
    project's own distributions (their editable path entries and entry points) are in it."""
    deps = tmp / f"{name}-deps"
    deps.mkdir()
    for entry in Path(sysconfig.get_path("purelib")).iterdir():
        if not entry.name.startswith(("__editable__", "cloudstack_storpool")):
            (deps / entry.name).symlink_to(entry)
    return deps


def _venv(tmp: Path, name: str, wheels: list[Path]) -> Path:
    """A virtualenv holding `wheels`, with their third-party dependencies read from the development
    environment; none of the development environment's own distributions of this project (their
    editable path entries and entry points) are visible."""
    env_dir = tmp / name
    venv.create(env_dir, with_pip=False)
    py = env_dir / "bin" / "python"
    site = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                               check=True, capture_output=True, text=True).stdout.strip())
    (site / "deps.pth").write_text(f"{_third_party(tmp, name)}\n")
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as zf:
            zf.extractall(site)
    return py


def test_wheels_share_one_namespace_and_carry_no_stand_ins(tmp_path: Path) -> None:
    wheels = _build_wheels(tmp_path)
    contents = {folder: set(zipfile.ZipFile(wheel).namelist()) for folder, wheel in wheels.items()}
    for folder, names in contents.items():
        dist_info = wheels[folder].name.split("-py3")[0] + ".dist-info"
        assert {n.split("/")[0] for n in names} == {"cloudstack_storpool", dist_info}, folder
        assert "cloudstack_storpool/__init__.py" not in names, folder
        assert not [n for n in names if "/tests/" in n or n.split("/")[-1].startswith("test_") or "_sim" in n], names
    files = [n for names in contents.values() for n in names if not n.split("/")[0].endswith(".dist-info")]
    assert len(files) == len(set(files)), "a file is shipped by two distributions"
    assert {"cloudstack_storpool/cloudstack/client.py", "cloudstack_storpool/typedjson.py",
            "cloudstack_storpool/version.py"} <= contents["."]
    assert {"cloudstack_storpool/agent/server.py", "cloudstack_storpool/agent/cloudstack-storpool-agent.service"} \
        <= contents["agent"]
    assert {"cloudstack_storpool/heartbeat/policy.py",
            "cloudstack_storpool/heartbeat/cloudstack-storpool-heartbeat.service"} <= contents["heartbeat"]
    assert {"cloudstack_storpool/driver/context.py", "cloudstack_storpool/service/app.py"} <= contents["driver"]
    # The kvmspheartbeat.sh drop-in ships executable, to be copied over CloudStack's script.
    dropin = zipfile.ZipFile(wheels["heartbeat"]).getinfo("cloudstack_storpool/heartbeat/kvmspheartbeat.sh")
    assert (dropin.external_attr >> 16) & 0o111, oct(dropin.external_attr >> 16)

    # A KVM host: core, settings, agent, heartbeat; no management driver.
    py = _venv(tmp_path, "host", [wheels[f] for f in HOST])
    probe = (
        "import importlib.util, json, sys\n"
        "import cloudstack_storpool.cli\n"
        "from cloudstack_storpool.agent import server\n"
        "from cloudstack_storpool.heartbeat import hostloop\n"
        f"tops = {{m: importlib.util.find_spec(m) is not None for m in {STAND_INS!r}}}\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in tops)\n"
        "driver = importlib.util.find_spec('cloudstack_storpool.driver') is not None\n"
        "print(json.dumps({'file': server.__file__, 'tops': tops, 'loaded': loaded, 'driver': driver,\n"
        "                  'commands': sorted(cloudstack_storpool.cli.cli.commands)}))\n"
    )
    seen = json.loads(subprocess.run([str(py), "-c", probe], check=True, capture_output=True, text=True,
                                     cwd=tmp_path).stdout)
    assert seen["file"].startswith(str(tmp_path / "host")), seen
    assert not any(seen["tops"].values()), seen
    assert seen["loaded"] == []
    assert seen["driver"] is False
    assert seen["commands"] == ["agent", "heartbeat", "settings"]
    for group in ("agent", "heartbeat"):
        res = subprocess.run([str(py), "-m", "cloudstack_storpool", group, "--help"], capture_output=True, text=True,
                             cwd=tmp_path, timeout=60, check=False)
        assert res.returncode == 0 and "Usage:" in res.stdout, res.stderr

    # A management server: the driver needs no agent code (what both sides use is in the core).
    py = _venv(tmp_path, "management", [wheels[f] for f in MANAGEMENT])
    res = subprocess.run([str(py), "-m", "cloudstack_storpool", "serve", "--help"], capture_output=True, text=True,
                         cwd=tmp_path, timeout=60, check=False)
    assert res.returncode == 0 and "Usage:" in res.stdout, res.stderr
    probe = ("import importlib.util, cloudstack_storpool.service.app, cloudstack_storpool.ops_cli\n"
             "print(importlib.util.find_spec('cloudstack_storpool.agent') is None)\n")
    out = subprocess.run([str(py), "-c", probe], check=True, capture_output=True, text=True, cwd=tmp_path)
    assert out.stdout.strip() == "True"


def test_production_cli_imports_no_stand_in_from_a_checkout() -> None:
    """Run from the checkout itself (where `integration` is importable): the CLI still loads none of it."""
    probe = (
        "import sys\n"
        "import cloudstack_storpool.cli\n"
        "from cloudstack_storpool.cli import cli\n"
        "from click.testing import CliRunner\n"
        "for args in (['--help'], ['agent', 'serve', '--help'], ['heartbeat', 'run', '--help']):\n"
        "    assert CliRunner().invoke(cli, args).exit_code == 0, args\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('integration', 'tests', 'storpool_sim')))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True, cwd=CHECKOUT)
    assert out.stdout.strip() == "[]"
    assert subprocess.run([sys.executable, "-c", "import integration"], cwd=CHECKOUT, check=False).returncode == 0


def test_install_host_script_makes_a_311_virtualenv_and_units_that_run_its_cli(tmp_path: Path) -> None:
    """`agent/install-host.sh` with the machine's Python (3.11+), from a wheelhouse (no network):
    the virtualenv in its prefix holds the package, and the units it writes start that
    virtualenv's CLI, which runs."""
    wheels = _build_wheels(tmp_path)
    wheelhouse = next(iter(wheels.values())).parent
    prefix, units = tmp_path / "opt" / "cloudstack-storpool", tmp_path / "systemd"
    proc = subprocess.run(
        ["/bin/sh", str(CHECKOUT / "agent" / "install-host.sh"), "--prefix", str(prefix), "--systemd-dir", str(units),
         "--source", "cloudstack-storpool cloudstack-storpool-settings cloudstack-storpool-heartbeat "
         "cloudstack-storpool-agent", "--no-build-check",
         "--pip-args", f"-q --no-deps --no-index --find-links {wheelhouse}"],
        env={**os.environ, "CSSP_PYTHON": sys.executable}, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    py = prefix / "bin" / "python"
    version = subprocess.run([str(py), "-c", "import sys; print(sys.version_info >= (3, 11))"], check=True,
                             capture_output=True, text=True).stdout.strip()
    assert version == "True"
    site = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                               check=True, capture_output=True, text=True).stdout.strip())
    assert (site / "cloudstack_storpool" / "heartbeat" / "dropin.py").is_file()
    (site / "deps.pth").write_text(f"{_third_party(tmp_path, 'host')}\n")  # the dependencies, as above
    for name, group in (("cloudstack-storpool-agent.service", "agent"),
                        ("cloudstack-storpool-heartbeat.service", "heartbeat")):
        (exec_line,) = [ln for ln in (units / name).read_text().splitlines() if ln.startswith("ExecStart=")]
        command = exec_line.removeprefix("ExecStart=").split()[0]
        assert command == str(prefix / "bin" / "cloudstack-storpool"), exec_line
        res = subprocess.run([command, group, "--help"], capture_output=True, text=True, cwd=tmp_path, timeout=60,
                             check=False)
        assert res.returncode == 0 and "Usage:" in res.stdout, res.stderr
