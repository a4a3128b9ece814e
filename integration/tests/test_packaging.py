"""The production wheel: one import package, no stand-ins, no tests; its CLI loads none of them."""

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

STAND_INS = ("integration", "tests", "benchmarks", "agent", "heartbeat", "settings")


def _build_wheel(tmp: Path) -> Path:
    """Build from a copy of the tracked files: setuptools reuses a checkout's `build/` and would
    ship modules deleted since the last build."""
    src = tmp / "src"
    tracked = subprocess.run(["git", "-C", str(CHECKOUT), "ls-files", "-z"], check=True, capture_output=True,
                             text=True).stdout.split("\0")
    for rel in filter(None, tracked):
        origin, copy = CHECKOUT / rel, src / rel
        if not origin.is_symlink() and not origin.exists():
            continue  # deleted in the work tree, not yet committed
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(origin, copy, follow_symlinks=False)
    out = tmp / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out),
                    str(src)], check=True, capture_output=True, timeout=300)
    (wheel,) = out.glob("cloudstack_storpool-*.whl")
    return wheel


def test_wheel_installs_one_package_and_its_cli_runs_without_stand_ins(tmp_path: Path) -> None:
    wheel = _build_wheel(tmp_path)
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names} == {"cloudstack_storpool", wheel.name.split("-py3")[0] + ".dist-info"}
    assert not [n for n in names if "/tests/" in n or n.split("/")[-1].startswith("test_") or "_sim" in n], names
    assert "cloudstack_storpool/agent/server.py" in names and "cloudstack_storpool/heartbeat/policy.py" in names
    assert "cloudstack_storpool/cloudstack/client.py" in names and "cloudstack_storpool/typedjson.py" in names
    # The kvmspheartbeat.sh drop-in ships executable, to be copied over CloudStack's script.
    dropin = zipfile.ZipFile(wheel).getinfo("cloudstack_storpool/heartbeat/kvmspheartbeat.sh")
    assert (dropin.external_attr >> 16) & 0o111, oct(dropin.external_attr >> 16)

    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)
    py = env_dir / "bin" / "python"
    site = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                               check=True, capture_output=True, text=True).stdout.strip())
    # The wheel's dependencies come from the development environment's site-packages (read as a plain
    # path entry, so its editable finder for this checkout is not loaded); the package itself from the wheel.
    (site / "deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(site)
    probe = (
        "import importlib.util, json, sys\n"
        "import cloudstack_storpool.cli\n"
        "from cloudstack_storpool.agent import server\n"
        "from cloudstack_storpool.heartbeat import hostloop\n"
        f"tops = {{m: importlib.util.find_spec(m) is not None for m in {STAND_INS!r}}}\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in tops)\n"
        "print(json.dumps({'file': cloudstack_storpool.cli.__file__, 'tops': tops, 'loaded': loaded}))\n"
    )
    out = subprocess.run([str(py), "-c", probe], check=True, capture_output=True, text=True, cwd=tmp_path)
    seen = json.loads(out.stdout)
    assert seen["file"].startswith(str(site)), seen
    assert not any(seen["tops"].values()), seen
    assert seen["loaded"] == []
    for group in ("agent", "heartbeat"):
        res = subprocess.run([str(py), "-m", "cloudstack_storpool", group, "--help"], capture_output=True, text=True,
                             cwd=tmp_path, timeout=60, check=False)
        assert res.returncode == 0 and "Usage:" in res.stdout, res.stderr


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
    wheel = _build_wheel(tmp_path)
    prefix, units = tmp_path / "opt" / "cloudstack-storpool", tmp_path / "systemd"
    proc = subprocess.run(
        ["/bin/sh", str(CHECKOUT / "agent" / "install-host.sh"), "--prefix", str(prefix), "--systemd-dir", str(units),
         "--source", "cloudstack-storpool", "--no-build-check",
         "--pip-args", f"-q --no-deps --no-index --find-links {wheel.parent}"],
        env={**os.environ, "CSSP_PYTHON": sys.executable}, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    py = prefix / "bin" / "python"
    version = subprocess.run([str(py), "-c", "import sys; print(sys.version_info >= (3, 11))"], check=True,
                             capture_output=True, text=True).stdout.strip()
    assert version == "True"
    site = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                               check=True, capture_output=True, text=True).stdout.strip())
    assert (site / "cloudstack_storpool" / "heartbeat" / "dropin.py").is_file()
    (site / "deps.pth").write_text(sysconfig.get_path("purelib") + "\n")  # the dependencies, as above
    for name, group in (("cloudstack-storpool-agent.service", "agent"),
                        ("cloudstack-storpool-heartbeat.service", "heartbeat")):
        (exec_line,) = [ln for ln in (units / name).read_text().splitlines() if ln.startswith("ExecStart=")]
        command = exec_line.removeprefix("ExecStart=").split()[0]
        assert command == str(prefix / "bin" / "cloudstack-storpool"), exec_line
        res = subprocess.run([command, group, "--help"], capture_output=True, text=True, cwd=tmp_path, timeout=60,
                             check=False)
        assert res.returncode == 0 and "Usage:" in res.stdout, res.stderr
