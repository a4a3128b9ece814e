"""`python -m integration up | down | stack-status`: the local stack as a background process.

`up` forks a detached process that holds a `LocalStack` (emulator, simulator, agents, driver
service) and writes `<run-dir>/stack.json` with the endpoints once everything answers; `down`
stops it with SIGTERM and waits, so no loop device, mount or port is left behind.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import click

from integration import dev_env

DEFAULT_RUN_DIR = Path(os.environ.get("CSSP_RUN_DIR", "/tmp/cloudstack-storpool-stack"))


def _state_file(run_dir: Path) -> Path:
    return run_dir / "stack.json"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_state(run_dir: Path) -> dict[str, Any] | None:
    try:
        state: dict[str, Any] = json.loads(_state_file(run_dir).read_text())
    except (OSError, ValueError):
        return None
    return state if _alive(int(state.get("pid", 0))) else None


def serve_stack(run_dir: Path) -> None:
    """The body of the background process: start, publish endpoints, wait for SIGTERM."""
    from integration.stack import LocalStack

    stopping = False

    def stop(_sig: int, _frame: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    with LocalStack(run_dir / "stack", heartbeat_interval=5.0) as stack:
        service_url = stack.start_service()
        stack.publish_template_images()  # deployVirtualMachine by hand needs the images
        state = {
            "pid": os.getpid(),
            "storpool": f"http://{stack.sp.host}:{stack.sp.port}",
            "cloudstack": stack.cs.endpoint,
            "agents": {a.host_name: a.url for a in stack.agents.values()},
            "service": service_url,
            "pools_file": str(stack.pools_file),
            "secrets_file": str(stack.write_secrets(run_dir / "secrets.env")),
        }
        tmp = _state_file(run_dir).with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        tmp.replace(_state_file(run_dir))
        while not stopping:
            time.sleep(0.2)
    _state_file(run_dir).unlink(missing_ok=True)


@click.command("up")
@click.option("--run-dir", type=click.Path(path_type=Path), default=DEFAULT_RUN_DIR, show_default=True)
@click.option("--timeout", default=120.0, show_default=True, help="Seconds to wait for the stack to answer.")
@click.option("--json", "as_json", is_flag=True)
def up_cmd(run_dir: Path, timeout: float, as_json: bool) -> None:
    """Start the local stack (StorPool emulator, CloudStack simulator, agents, driver service)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    state = read_state(run_dir)
    if state is None:
        with open(run_dir / "stack.log", "ab") as log:  # the child keeps its own copy of the fd
            proc = subprocess.Popen(
                [sys.executable, "-c", "import sys; from integration.stack_cli import serve_stack; "
                 "from pathlib import Path; serve_stack(Path(sys.argv[1]))", str(run_dir)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True, env=dev_env(),
            )
        deadline = time.monotonic() + timeout
        while (state := read_state(run_dir)) is None:
            if proc.poll() is not None:
                raise click.ClickException(f"the stack failed to start; see {run_dir / 'stack.log'}")
            if time.monotonic() > deadline:
                proc.terminate()
                raise click.ClickException(f"the stack did not come up in {timeout:g}s; see {run_dir / 'stack.log'}")
            time.sleep(0.2)
    _show(state, as_json)


@click.command("down")
@click.option("--run-dir", type=click.Path(path_type=Path), default=DEFAULT_RUN_DIR, show_default=True)
@click.option("--timeout", default=60.0, show_default=True)
def down_cmd(run_dir: Path, timeout: float) -> None:
    """Stop the local stack and release its devices, mounts and ports."""
    state = read_state(run_dir)
    if state is None:
        click.echo("the local stack is not running")
        return
    pid = int(state["pid"])
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() > deadline:
            raise click.ClickException(f"stack process {pid} did not stop in {timeout:g}s")
        time.sleep(0.2)
    click.echo("the local stack is stopped")


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
