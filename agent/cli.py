"""Command group `cloudstack-storpool agent`: serve the HTTP API, or run one command locally.

Secrets are read from files (`--token-file`, `--sp-token-file`) or the environment, never
taken as option values, which every user on the host could read from the process list.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import click

from cloudstack_storpool.agent.hostconfig import DEFAULT_HEARTBEAT_STATUS, DEFAULT_LIBVIRT_URI
from cloudstack_storpool.daemon import log_format_opt
from cloudstack_storpool.errors import ProjectError, ValidationError
from cloudstack_storpool.settings.cli import settings_file_option


def _default_listen(settings_file: str | None) -> str:
    """Loopback on `storpool.agent.port` of this machine's settings file: the port the driver dials."""
    from cloudstack_storpool.settings.localfile import SettingsFile

    return f"127.0.0.1:{SettingsFile(settings_file).get('storpool.agent.port')}"


def _host_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    opts = [
        click.option("--sp-config", default=None, metavar="PATH",
                     help="StorPool client config (default /etc/storpool.conf)."),
        click.option("--dev-root", default="/dev", show_default=True,
                     help="Where StorPool devices appear (<dev-root>/storpool-byid/<globalId>)."),
        click.option("--mount-root", default=None, metavar="DIR",
                     help="Where nfs:// secondary stores are mounted."),
        click.option("--secondary-root", "secondary_roots", multiple=True, metavar="DIR",
                     help="A local directory allowed as secondary storage (repeatable)."),
        click.option("--client-id", type=int, default=None, help="This host's SP_OURID (default: from the config)."),
        click.option("--sp-host", default=None, help="StorPool API host (instead of the config file)."),
        click.option("--sp-port", type=int, default=None, help="StorPool API port."),
        click.option("--sp-token-file", default=None, metavar="PATH", help="File holding the StorPool API token."),
        click.option("--libvirt-uri", default=DEFAULT_LIBVIRT_URI, show_default=True),
        click.option("--heartbeat-status-file", default=DEFAULT_HEARTBEAT_STATUS, show_default=True,
                     help="The heartbeat loop's status file, served at GET /v1/heartbeat."),
    ]
    for opt in reversed(opts):
        fn = opt(fn)
    return fn


def _host_config(kw: dict[str, Any]) -> Any:
    from cloudstack_storpool.agent.hostconfig import DEFAULT_MOUNT_ROOT, load_host_config

    return load_host_config(
        sp_config=kw["sp_config"], client_id=kw["client_id"], sp_host=kw["sp_host"], sp_port=kw["sp_port"],
        sp_token_file=kw["sp_token_file"], dev_root=kw["dev_root"],
        mount_root=kw["mount_root"] or DEFAULT_MOUNT_ROOT, secondary_roots=tuple(kw["secondary_roots"]),
        libvirt_uri=kw["libvirt_uri"], heartbeat_status_file=kw["heartbeat_status_file"],
    )


def _context_factory(host: Any) -> Callable[[], Any]:
    from cloudstack_storpool.agent.commands import Context

    def make() -> Context:
        return Context(host=host, conn=host.connect())

    return make


def _fail(exc: ProjectError, as_json: bool) -> None:
    from cloudstack_storpool.agent.jobs import error_json

    if as_json:
        click.echo(json.dumps({"error": error_json(exc)}))
        sys.exit(1)
    raise click.ClickException(str(exc))


@click.group("agent")
def agent_group() -> None:
    """KVM host agent: attach, copy, back up, resize, safe start."""


@agent_group.command("serve")
@click.option("--listen", default=None, help="HOST:PORT to listen on (default 127.0.0.1:<storpool.agent.port>).")
@click.option("--token-file", default=None, metavar="PATH",
              help="File holding the shared agent token (else $CLOUDSTACK_STORPOOL_AGENT_TOKEN).")
@click.option("--max-copies", type=int, default=2, show_default=True, help="Copies that may run at once.")
@click.option("--tls-cert", default=None, metavar="PATH",
              help="PEM certificate to serve TLS with (on a CloudStack KVM host: /etc/cloudstack/agent/cloud.crt).")
@click.option("--tls-key", default=None, metavar="PATH",
              help="Its private key (on a CloudStack KVM host: /etc/cloudstack/agent/cloud.key).")
@click.option("--insecure-http", is_flag=True,
              help="Serve plain HTTP on a non-loopback address (warned at every start; trusted networks only).")
@click.option("-v", "--verbose", is_flag=True)
@settings_file_option
@log_format_opt
@_host_options
def serve_cmd(listen: str | None, token_file: str | None, max_copies: int, tls_cert: str | None, tls_key: str | None,
              insecure_http: bool, verbose: bool, settings_file: str | None, log_format: str, **kw: Any) -> None:
    """Serve the agent's HTTP JSON API (TLS off loopback) until SIGTERM/SIGINT."""
    from cloudstack_storpool.agent import partials
    from cloudstack_storpool.agent.hostconfig import read_agent_token
    from cloudstack_storpool.agent.server import AgentServer
    from cloudstack_storpool.agent.tls import served_certificate, serving_context
    from cloudstack_storpool.daemon import serve_until_stopped, setup_logging
    from cloudstack_storpool.httpjson import parse_listen
    from cloudstack_storpool.logs import register_secret

    setup_logging(verbose, log_format)
    try:
        token = read_agent_token(token_file)
        register_secret(token)
        host = _host_config(kw)
        address = parse_listen(listen or _default_listen(settings_file))
        tls = serving_context(address[0], tls_cert, tls_key, insecure_http=insecure_http)
        cert = served_certificate(tls_cert) if tls is not None and tls_cert else None
        server = AgentServer(address, token, _context_factory(host), max_copies=max_copies, tls=tls, certificate=cert)
    except ProjectError as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {listen}: {exc.strerror}") from None

    # Partial copies an earlier run left (killed mid-copy) are removed in the background, so a
    # large secondary storage does not delay serving; new copies never touch them.
    threading.Thread(target=partials.sweep, args=(host.secondary_roots, host.mount_root, host.client_id),
                     name="partials-sweep", daemon=True).start()
    try:
        serve_until_stopped(server, f"agent listening on {server.url} (client id {host.client_id})")
    finally:
        server.jobs.cancel_all()
        server.server_close()


@agent_group.command("run")
@click.argument("command")
@click.option("--json-in", "json_in", required=True, type=click.File("r"), help="Arguments as JSON ('-' = stdin).")
@click.option("--json", "as_json", is_flag=True, help="Print the result (or error) as JSON.")
@click.option("-v", "--verbose", is_flag=True)
@_host_options
def run_cmd(command: str, json_in: Any, as_json: bool, verbose: bool, **kw: Any) -> None:
    """Run one command on this host without the service (same commands, same validation)."""
    from cloudstack_storpool.agent.commands import Context, RunControl, parse

    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING)
    try:
        try:
            args = json.load(json_in)
        except ValueError as exc:
            raise ValidationError("json_in", f"not valid JSON: {exc}") from None
        cmd, req = parse(command, args)
        host = _host_config(kw)

        def show(pct: float) -> None:
            if not as_json:
                click.echo(f"\r{pct:6.2f}%", nl=False, err=True)

        ctl = RunControl(progress=show, deadline=time.monotonic() + req.timeout)
        result = cmd.run(Context(host=host, conn=host.connect()), req, ctl)
    except ProjectError as exc:
        _fail(exc, as_json)
        return
    if not as_json and cmd.long_running:
        click.echo("", err=True)
    click.echo(json.dumps(result, indent=None if as_json else 2, sort_keys=True))


@agent_group.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@_host_options
def status_cmd(as_json: bool, **kw: Any) -> None:
    """Host facts: client id, StorPool reachability and versions."""
    from cloudstack_storpool.agent.commands import Context, FactsRequest, RunControl, facts

    try:
        host = _host_config(kw)
        out = facts(Context(host=host, conn=host.connect()), FactsRequest(), RunControl())
    except ProjectError as exc:
        _fail(exc, as_json)
        return
    if as_json:
        click.echo(json.dumps(out, sort_keys=True))
        return
    for k, v in sorted(out.items()):
        click.echo(f"{k}: {v}")


agent_group.add_command(status_cmd, "facts")
