"""`python -m integration up | down | stack-status`: the local stack as a background process.

`up` forks a detached process that holds a `LocalStack` (emulator, simulator, agents, driver
service), records its pid in `<run-dir>/stack.pid` at once and writes `<run-dir>/stack.json`
with the endpoints once everything answers; `down` stops it with SIGTERM and waits, so no loop
device, mount or port is left behind.

A stack process that was killed runs no cleanup. Both commands then recover what its run
directory left (`leftovers.py`: loop devices, the XFS mount, the stale state files and the
stack's directory, whose data died with the mount), so `up` starts afresh instead of failing
on its own stale mount, and `down` reports what it cleaned instead of "not running".
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from integration import dev_env, leftovers

DEFAULT_RUN_DIR = Path(os.environ.get("CSSP_RUN_DIR", "/tmp/cloudstack-storpool-stack"))


def _state_file(run_dir: Path) -> Path:
    return run_dir / "stack.json"


def _pid_file(run_dir: Path) -> Path:
    return run_dir / "stack.pid"


def _stack_process(run_dir: Path) -> int | None:
    """The pid of this run directory's stack process while it lives (starting, serving or hung).

    The command line is checked too: after a crash the recorded pid may belong to anyone."""
    for source in (_pid_file(run_dir), _state_file(run_dir)):
        try:
            text = source.read_text()
            pid = int(json.loads(text)["pid"]) if source.suffix == ".json" else int(text.strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, ValueError, KeyError):
            continue
        if "serve_stack" in cmdline and str(run_dir.resolve()) in cmdline:
            return pid
    return None


def read_state(run_dir: Path) -> dict[str, Any] | None:
    """The endpoints of a stack that is up (its process alive and its state written)."""
    if _stack_process(run_dir) is None:
        return None
    try:
        state: dict[str, Any] = json.loads(_state_file(run_dir).read_text())
    except (OSError, ValueError):
        return None
    return state


def recover(run_dir: Path) -> list[str]:
    """Release what a killed stack process left in `run_dir`; what was released, [] for
    nothing. Only called when no stack process of this directory is alive."""
    done = leftovers.release(run_dir)
    for f in (_state_file(run_dir), _pid_file(run_dir)):
        if f.exists():
            f.unlink()
            done.append(f"stale {f.name}")
    stack_dir = run_dir / "stack"
    if done and stack_dir.exists():  # its emulator data lived on the mount that is gone
        shutil.rmtree(stack_dir)
        done.append(f"directory {stack_dir}")
    return done


def serve_stack(run_dir: Path, java_cloud: bool = False, guests: bool = True) -> None:
    """The body of the background process: start, publish endpoints, wait for SIGTERM.
    `java_cloud` first fills the stack with a cloud the Java plugin built (integration/javacloud.py);
    `guests` boots a real guest for each running VM (integration/guests.py)."""
    stopping = False

    def stop(_sig: int, _frame: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        _run(run_dir, lambda: stopping, java_cloud, guests)
    finally:
        _pid_file(run_dir).unlink(missing_ok=True)


def _run(run_dir: Path, stopping: Callable[[], bool], java_cloud: bool, guests: bool) -> None:
    from integration import javacloud
    from integration.stack import LocalStack

    with LocalStack(run_dir / "stack", heartbeat_interval=5.0, guests=guests, second_zone=True) as stack:
        java = javacloud.build(stack) if java_cloud else None
        service_url = stack.start_service()
        stack.publish_template_images()  # deployVirtualMachine by hand needs the images
        stack.seed_file_pools()  # the NFS and Ceph pools volumes can be moved from onto StorPool
        stack.seed_disk_offerings()  # what CloudStack's StorPool tests expect an operator to have
        stack.serve_api_port()  # Marvin's user API clients call port 8080 of the config's address
        state = {
            "pid": os.getpid(),
            "storpool": f"http://{stack.sp.host}:{stack.sp.port}",
            "storpool_zone2": f"http://{stack.sp2.host}:{stack.sp2.port}" if stack.sp2 else None,
            "cloudstack": stack.cs.endpoint,
            "cloudstack_api_port": stack.api_port_endpoint,
            "agents": {a.host_name: a.url for a in stack.agents.values()},
            "service": service_url,
            "pools_file": str(stack.pools_file),
            "secrets_file": str(stack.write_secrets(run_dir / "secrets.env")),
        }
        if java is not None:
            state["java_cloud"] = {"pool": java.pool_id, "vm": java.vm_id, "template": java.template_id,
                                   "snapshot": java.snapshot, "vm_snapshot": java.vm_snapshot, "paths": java.paths}
        tmp = _state_file(run_dir).with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        tmp.replace(_state_file(run_dir))
        while not stopping():
            time.sleep(0.2)
    _state_file(run_dir).unlink(missing_ok=True)


@click.command("up")
@click.option("--run-dir", type=click.Path(path_type=Path), default=DEFAULT_RUN_DIR, show_default=True)
@click.option("--timeout", default=120.0, show_default=True, help="Seconds to wait for the stack to answer.")
@click.option("--json", "as_json", is_flag=True)
@click.option("--java-cloud", is_flag=True,
              help="Fill the stack with a cloud the Java plugin built (anonymous objects, Java pool id), to try a takeover.")
@click.option("--guests/--no-guests", default=True, show_default=True,
              help="Boot a real guest (SSH as root at the VM's IP) for every running VM.")
def up_cmd(run_dir: Path, timeout: float, as_json: bool, java_cloud: bool, guests: bool) -> None:
    """Start the local stack (StorPool emulator, CloudStack simulator, agents, driver service)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    state = read_state(run_dir)
    if state is None:
        pid = _stack_process(run_dir)
        if pid is not None:
            raise click.ClickException(f"a stack process ({pid}) is starting or hung in {run_dir}; "
                                       "wait for it, or stop it with `down`")
        for what in _recover_or_fail(run_dir):
            click.echo(f"recovered from a crashed run: released {what}", err=True)
        with open(run_dir / "stack.log", "ab") as log:  # the child keeps its own copy of the fd
            proc = subprocess.Popen(
                [sys.executable, "-c", "import sys; from integration.stack_cli import serve_stack; "
                 "from pathlib import Path; serve_stack(Path(sys.argv[1]), sys.argv[2] == '1', sys.argv[3] == '1')",
                 str(run_dir.resolve()), "1" if java_cloud else "0", "1" if guests else "0"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True, env=dev_env(),
            )
        _pid_file(run_dir).write_text(f"{proc.pid}\n")
        deadline = time.monotonic() + timeout
        while (state := read_state(run_dir)) is None:
            if proc.poll() is not None:
                raise click.ClickException(f"the stack failed to start; see {run_dir / 'stack.log'}")
            if time.monotonic() > deadline:
                proc.terminate()
                raise click.ClickException(f"the stack did not come up in {timeout:g}s; see {run_dir / 'stack.log'}")
            time.sleep(0.2)
    _show(state, as_json)


def _recover_or_fail(run_dir: Path) -> list[str]:
    try:
        return recover(run_dir)
    except (RuntimeError, OSError) as exc:
        raise click.ClickException(f"cannot release what a crashed run left in {run_dir}: {exc}") from None


@click.command("down")
@click.option("--run-dir", type=click.Path(path_type=Path), default=DEFAULT_RUN_DIR, show_default=True)
@click.option("--timeout", default=60.0, show_default=True)
def down_cmd(run_dir: Path, timeout: float) -> None:
    """Stop the local stack and release its devices, mounts and ports (also those a crashed run left)."""
    pid = _stack_process(run_dir)
    if pid is not None:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while Path(f"/proc/{pid}").exists() and _stack_process(run_dir) == pid:
            if time.monotonic() > deadline:
                raise click.ClickException(f"stack process {pid} did not stop in {timeout:g}s")
            time.sleep(0.2)
    cleaned = _recover_or_fail(run_dir) if run_dir.exists() else []
    if pid is not None:
        click.echo("the local stack is stopped")
    elif cleaned:
        click.echo("the local stack was not running; released what a crashed run left: " + ", ".join(cleaned))
    else:
        click.echo("the local stack is not running")


@click.command("stack-status")
@click.option("--run-dir", type=click.Path(path_type=Path), default=DEFAULT_RUN_DIR, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def status_cmd(run_dir: Path, as_json: bool) -> None:
    """Show the local stack's endpoints."""
    state = read_state(run_dir)
    if state is None:
        raise click.ClickException("the local stack is not running (start it with `python -m integration up`)")
    _show(state, as_json)


def _show(state: dict[str, Any], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(state, indent=2))
        return
    rows = [("storpool API", state["storpool"]), ("cloudstack API", state["cloudstack"]),
            ("driver service", state["service"]), *((f"agent {k}", v) for k, v in state["agents"].items()),
            ("pools file", state["pools_file"]), ("secrets (env file)", state["secrets_file"])]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        click.echo(f"{k:<{width}}  {v}")
