"""`python -m integration sim cloudstack`: run the CloudStack API simulator.

The secret key is taken from `CLOUDSTACK_SIM_SECRET`, `--secret-file`, or `--secret` (the
last is visible in the process list: prefer the others). Without any, a random secret is
written to the secret file (mode 0600). The secret is never printed.
"""

from __future__ import annotations

import os
import secrets
import signal
import threading
from pathlib import Path
from types import FrameType

import click

from integration.cloudstack_sim.model import CloudStackModel
from integration.cloudstack_sim.plugin_calls import StoragePlugin
from integration.cloudstack_sim.server import make_server
from integration.cloudstack_sim.testing import DEFAULT_KEY


def _parse_listen(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit():
        raise click.BadParameter("expected HOST:PORT, e.g. 127.0.0.1:8096", param_hint="--listen")
    host = host.strip("[]")
    if host not in ("127.0.0.1", "::1", "localhost"):
        raise click.BadParameter(f"{host} is not a loopback address", param_hint="--listen")
    return host, int(port)


def _secret(secret: str | None, secret_file: Path | None) -> tuple[str, str]:
    """(secret, where it came from)."""
    if secret:
        return secret, "given"
    if secret_file is not None and secret_file.exists():
        text = secret_file.read_text().strip()
        if not text:
            raise click.BadParameter(f"{secret_file} is empty", param_hint="--secret-file")
        return text, f"read from {secret_file}"
    made = secrets.token_urlsafe(32)
    target = secret_file or Path("cloudstack-sim.secret")
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(made + "\n")
    return made, f"written to {target}"


@click.command("cloudstack")
@click.option("--listen", default="127.0.0.1:8096", show_default=True, help="loopback HOST:PORT (port 0: any)")
@click.option("--state", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="JSON file holding the world; created and seeded when missing")
@click.option("--key", default=DEFAULT_KEY, show_default=True, envvar="CLOUDSTACK_SIM_KEY", help="API key")
@click.option("--secret", default=None, envvar="CLOUDSTACK_SIM_SECRET", show_envvar=True,
              help="secret key (prefer the environment variable or --secret-file)")
@click.option("--secret-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="file with the secret key; a random one is written there when missing")
@click.option("--no-seed", is_flag=True, help="start empty instead of with the default topology")
@click.option("--service-url", default=None, envvar="CSSP_SERVICE_URL", show_envvar=True,
              help="the driver service the storage commands call (its token: CSSP_SERVICE_TOKEN)")
@click.option("--image-store", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="secondary storage root as the KVM hosts see it")
def cloudstack_cmd(listen: str, state: Path | None, key: str, secret: str | None, secret_file: Path | None,
                   no_seed: bool, service_url: str | None, image_store: Path | None) -> None:
    """Run the CloudStack API simulator (signature v3, real envelopes, async jobs). With
    --service-url, users' storage commands call the plugin as CloudStack's storage subsystem
    does (the service's token from CSSP_SERVICE_TOKEN)."""
    host, port = _parse_listen(listen)
    the_secret, origin = _secret(secret, secret_file)
    model = CloudStackModel(state_path=state)
    if not model.load() and not no_seed:
        model.seed()
        model.save()
    if service_url:
        token = os.environ.get("CSSP_SERVICE_TOKEN", "")
        if not token:
            raise click.BadParameter("CSSP_SERVICE_TOKEN must hold the service's token", param_hint="--service-url")
        model.plugin = StoragePlugin(service_url, token)
    model.image_store = str(image_store) if image_store else None
    server = make_server(model, {key: the_secret}, host=host, port=port)

    def stop(signum: int, frame: FrameType | None) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    click.echo(f"endpoint: {server.endpoint}")
    click.echo(f"key: {key}")
    click.echo(f"secret: {origin} (not shown)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        model.save()
