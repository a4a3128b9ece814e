"""`python -m integration sim storpool`: run the StorPool API emulator until SIGTERM/SIGINT."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from types import FrameType

import click

from integration.storpool_sim.model import Template


def _parse_listen(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit():
        raise click.BadParameter("expected HOST:PORT, e.g. 127.0.0.1:8081")
    return host, int(port)


def _parse_templates(value: str) -> list[Template]:
    """`ssd,hybrid:2,hdd:3:hdd` -> name[:replication[:placement group]]."""
    out = []
    for item in filter(None, (x.strip() for x in value.split(","))):
        parts = item.split(":")
        name = parts[0]
        rep = int(parts[1]) if len(parts) > 1 and parts[1] else 3
        pg = parts[2] if len(parts) > 2 else {"hybrid": "hdd"}.get(name, name)
        tail = "ssd" if name == "hybrid" else pg
        out.append(Template(name, rep, pg, tail, pg))
    return out


@click.command("storpool")
@click.option("--listen", default="127.0.0.1:8081", show_default=True, help="HOST:PORT to serve the API on.")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Where objects (one file each) and state.json live; reflink-capable fs recommended.")
@click.option("--dev-root", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Attached objects appear as DEV_ROOT/<client>/storpool-byid/<globalId>.")
@click.option("--token", envvar="SP_AUTH_TOKEN", required=True, show_envvar=True,
              help="API token clients must send (prefer the environment variable).")
@click.option("--clients", default="1,2,3", show_default=True, help="Client ids listed in ServicesList.")
@click.option("--templates", default="ssd,hybrid,hdd", show_default=True,
              help="Seed templates: name[:replication[:placementGroup]], comma separated.")
@click.option("--capacity", default=1 << 40, show_default=True, type=int, help="Cluster raw capacity, bytes.")
@click.option("--loop/--no-loop", "use_loop", default=None,
              help="Expose attachments as loop devices (default: when running as root).")
def storpool_cmd(listen: str, data_dir: Path, dev_root: Path, token: str, clients: str, templates: str,
                 capacity: int, use_loop: bool | None) -> None:
    """Run the StorPool API emulator (with a real data plane) until SIGTERM or SIGINT."""
    from integration.storpool_sim.server import Emulator

    host, port = _parse_listen(listen)
    try:
        ids = [int(c) for c in clients.split(",") if c.strip()]
    except ValueError:
        raise click.BadParameter("expected comma-separated client ids", param_hint="--clients") from None
    emu = Emulator(data_dir, dev_root, token=token, clients=ids, templates=_parse_templates(templates),
                   capacity=capacity, use_loop=use_loop, host=host, port=port)
    stop = threading.Event()

    def _on_signal(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    emu.start()
    mode = "loop devices" if emu.dataplane.use_loop else "plain files"
    click.echo(f"storpool emulator listening on {emu.host}:{emu.port} (clients {ids}, {mode})", err=True)
    while not stop.wait(1.0):
        pass
    emu.stop()
    click.echo("storpool emulator stopped", err=True)
