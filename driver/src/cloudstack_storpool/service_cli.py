"""`cloudstack-storpool serve`: run the driver service beside a CloudStack management server.

Secrets come from files or the environment only (a value on the command line is visible to
every user in the process list): the service token (`--token-file` or $CSSP_SERVICE_TOKEN), the
agent token (`--agent-token-file` or $CLOUDSTACK_STORPOOL_AGENT_TOKEN), StorPool tokens (in the
pools file, mode 0600) and CloudStack credentials (`CLOUDSTACK_*` or cloudstack.ini, read the way
the `cs` tool reads them).
"""

from __future__ import annotations

import ipaddress
import os
import socket

import click

from cloudstack_storpool.daemon import log_format_opt
from cloudstack_storpool.errors import ProjectError, ValidationError
from cloudstack_storpool.poolconfig import POOLS_FILE_ENV
from cloudstack_storpool.settings.cli import settings_file_option
from cloudstack_storpool.tokens import read_token

SERVICE_TOKEN_ENV = "CSSP_SERVICE_TOKEN"
DEFAULT_LISTEN = "127.0.0.1:8260"
DEFAULT_WORKERS = 32
"""Mirrors `ServiceServer.workers` (not imported: the CLI loads the service only when it runs)."""


def read_service_token(token_file: str | None, env: dict[str, str] | None = None) -> str:
    return read_token(token_file, SERVICE_TOKEN_ENV, "service token", env)


def loopback_address(listen: str) -> tuple[str, int]:
    """HOST:PORT that must be a loopback address: the API is plain HTTP with a bearer token and
    is meant for the management server on the same machine (put a TLS proxy in front otherwise)."""
    from cloudstack_storpool.httpjson import parse_listen

    host, port = parse_listen(listen)
    try:
        addrs = {info[4][0] for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)}
    except OSError as exc:
        raise ValidationError("listen", f"cannot resolve {host!r}: {exc.strerror}") from None
    for addr in addrs:
        if not ipaddress.ip_address(str(addr).split("%", 1)[0]).is_loopback:
            raise ValidationError("listen", f"{host} is not a loopback address; the service listens on loopback only")
    return host, port


@click.command("serve")
@click.option("--listen", default=DEFAULT_LISTEN, show_default=True, help="Loopback HOST:PORT to listen on.")
@click.option("--token-file", default=None, metavar="PATH",
              help=f"File holding the service's bearer token (else ${SERVICE_TOKEN_ENV}).")
@click.option("--pools", "pools_file", default=None, metavar="PATH",
              help=f"The pools file (TOML, [[pool]] tables; else ${POOLS_FILE_ENV}).")
@click.option("--agent-token-file", default=None, metavar="PATH",
              help="File holding the KVM agents' shared token (else $CLOUDSTACK_STORPOOL_AGENT_TOKEN).")
@click.option("--agent-ca-file", default=None, metavar="PATH",
              help="CA file that signed the agents' TLS certificates, e.g. CloudStack's CA "
                   "(else $CLOUDSTACK_STORPOOL_AGENT_CA).")
@click.option("--region", default=None, help="cloudstack.ini section to read CloudStack credentials from.")
@click.option("--max-jobs", type=click.IntRange(1, 256), default=8, show_default=True,
              help="Background jobs that may run at once in this process.")
@click.option("--workers", type=click.IntRange(1, 256), default=None,
              help="Threads that answer requests, synchronous driver calls included "
                   f"[default: {DEFAULT_WORKERS}].")
@click.option("--settings-ttl", type=click.FloatRange(0), default=None,
              help="Seconds a setting read from CloudStack is cached (default: storpool.settings.cache.seconds).")
@settings_file_option
@click.option("-v", "--verbose", is_flag=True)
@log_format_opt
def serve_cmd(listen: str, token_file: str | None, pools_file: str | None, agent_token_file: str | None,
              agent_ca_file: str | None, region: str | None, max_jobs: int, workers: int | None,
              settings_ttl: float | None,
              settings_file: str | None, verbose: bool, log_format: str) -> None:
    """Serve the driver's HTTP JSON API (OpenAPI at /openapi.json) until SIGTERM/SIGINT."""
    from cloudstack_storpool.agentapi.link import read_agent_token
    from cloudstack_storpool.daemon import serve_until_stopped, setup_logging
    from cloudstack_storpool.driver.context import DriverContext
    from cloudstack_storpool.service.app import make_server

    setup_logging(verbose, log_format)
    try:
        host, port = loopback_address(listen)
        token = read_service_token(token_file)
        agent_token = read_agent_token(agent_token_file)
        pools_path = pools_file or os.environ.get(POOLS_FILE_ENV, "")
        if not pools_path:
            raise ValidationError("pools", f"no pools file: pass --pools or set ${POOLS_FILE_ENV}")
        ctx = DriverContext.from_config(pools_path, agent_token, region=region, settings_ttl=settings_ttl,
                                        settings_file=settings_file, agent_ca=agent_ca_file)
        server = make_server(ctx, token, host, port, pools_file=pools_path, max_jobs=max_jobs, periodic_gc=True,
                             secrets=(agent_token, _cloudstack_secret(region)), workers=workers)
    except ProjectError as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {listen}: {exc.strerror}") from None

    try:
        serve_until_stopped(server, f"driver service listening on {server.url} ({len(ctx.pools.pools)} pools, "
                                    f"{server.workers} workers)")
    finally:
        server.server_close()
        if not server.jobs.wait_all(30.0):
            click.echo("stopped with jobs still running; callers retry them with their idempotency keys", err=True)


def _cloudstack_secret(region: str | None) -> str | None:
    """Only to mask it should it ever appear in an error text."""
    try:
        import cs

        return str(cs.read_config(region).get("secret") or "") or None
    except (SystemExit, ValueError, OSError):
        return None
