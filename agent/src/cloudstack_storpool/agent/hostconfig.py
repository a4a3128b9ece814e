"""Who this host is to StorPool, and where its devices and secondary storage live.

On a real hypervisor everything comes from `/etc/storpool.conf` (the same file the StorPool
client uses, so the agent can never disagree with it about `SP_OURID`); tests and the local
stack pass explicit values instead. Secrets are only ever read from files or the environment:
a token given as a command-line value would be visible to every user in the process list.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from cloudstack_storpool.agent.attach import SpConn, device_path
from cloudstack_storpool.errors import ValidationError
from cloudstack_storpool.heartbeat.hostloop import DEFAULT_STATUS_FILE as DEFAULT_HEARTBEAT_STATUS
from cloudstack_storpool.names import check_client_id
from cloudstack_storpool.tokens import read_secret_file

DEFAULT_MOUNT_ROOT = "/var/lib/cloudstack-storpool/secondary"
DEFAULT_LIBVIRT_URI = "qemu:///system"


@dataclass(frozen=True)
class HostConfig:
    """Everything host-specific the commands need; one instance per agent process."""

    client_id: int
    dev_root: str = "/dev"
    mount_root: str = DEFAULT_MOUNT_ROOT
    # Local directories a request may name as secondary storage (besides nfs:// URLs, which
    # are mounted under mount_root). Anything else is refused: the agent runs as root.
    secondary_roots: tuple[str, ...] = ()
    libvirt_uri: str = DEFAULT_LIBVIRT_URI
    sp_config: str | None = None
    sp_host: str | None = None
    sp_port: int | None = None
    sp_token: str | None = field(default=None, repr=False)
    heartbeat_status_file: str = DEFAULT_HEARTBEAT_STATUS
    """Written by `cloudstack-storpool heartbeat run` on this host; served at GET /v1/heartbeat."""
    cluster_id: str | None = None
    """StorPool cluster id (`SP_CLUSTER_ID`); None: read from storpool.conf when asked."""
    proc_root: str = "/proc"

    def storpool_cluster_id(self) -> str | None:
        """`SP_CLUSTER_ID` as the StorPool client on this host has it (None when not set)."""
        if self.cluster_id is not None:
            return self.cluster_id
        from storpool import spconfig

        config_cls: type[spconfig.SPConfig] = spconfig.SPConfig
        if self.sp_config is not None:
            config_cls = type("_SPConfigAt", (spconfig.SPConfig,), {
                "PATH_CONFIG": self.sp_config, "PATH_CONFIG_DIR": self.sp_config + ".d"})
        try:
            value = config_cls(missing_ok=True).get("SP_CLUSTER_ID", "")
        except (spconfig.SPConfigException, OSError, ValueError):
            return None
        return str(value) or None

    def block_service_running(self) -> bool:
        """Whether StorPool's block service (`storpool_block`, the client that exposes the
        devices) runs on this host: without it no volume can be attached here."""
        try:
            pids = [p for p in os.listdir(self.proc_root) if p.isdigit()]
        except OSError:
            return False
        for pid in pids:
            try:
                with open(os.path.join(self.proc_root, pid, "comm")) as f:
                    if f.read().strip().startswith("storpool_block"):
                        return True
            except OSError:
                continue
        return False

    def device_path(self, global_id: str) -> str:
        """Where the StorPool client exposes an attached object on this host."""
        return device_path(self.dev_root, global_id)

    def allowed_roots(self) -> tuple[str, ...]:
        return (self.mount_root, *self.secondary_roots)

    def connect(self) -> SpConn:
        """A StorPool connection: explicit endpoint if given, else the host's storpool.conf."""
        from cloudstack_storpool.spconn import StorPoolConn

        if self.sp_host:
            if not self.sp_token:
                raise ValidationError("sp_token_file", "an explicit StorPool host needs a token file")
            conn: SpConn = StorPoolConn(self.sp_host, self.sp_port or 81, self.sp_token)
            return conn
        return StorPoolConn.from_config(self.sp_config)


def load_host_config(
    *,
    sp_config: str | None = None,
    client_id: int | None = None,
    sp_host: str | None = None,
    sp_port: int | None = None,
    sp_token_file: str | None = None,
    dev_root: str = "/dev",
    mount_root: str = DEFAULT_MOUNT_ROOT,
    secondary_roots: tuple[str, ...] = (),
    libvirt_uri: str = DEFAULT_LIBVIRT_URI,
    heartbeat_status_file: str = DEFAULT_HEARTBEAT_STATUS,
) -> HostConfig:
    """Build the host config. Explicit values win; otherwise `SP_OURID` comes from storpool.conf."""
    token = read_secret_file(sp_token_file, "sp_token_file") if sp_token_file else None
    if sp_host and token is None:
        token = os.environ.get("SP_AUTH_TOKEN") or None
    if client_id is None:
        client_id = _our_id_from_config(sp_config)
    for i, root in enumerate(secondary_roots):
        if not os.path.isabs(root):
            raise ValidationError(f"secondary_roots[{i}]", f"{root!r} must be an absolute path")
    return HostConfig(
        client_id=check_client_id(client_id),
        dev_root=dev_root,
        mount_root=mount_root,
        secondary_roots=tuple(os.path.realpath(r) for r in secondary_roots),
        libvirt_uri=libvirt_uri,
        sp_config=sp_config,
        sp_host=sp_host,
        sp_port=sp_port,
        sp_token=token,
        heartbeat_status_file=heartbeat_status_file,
    )


def _our_id_from_config(path: str | None) -> int:
    """SP_OURID exactly as the connection layer read (and range-checked) it from storpool.conf
    (and .conf.d): an int, or None when the file has none."""
    from cloudstack_storpool.spconn import StorPoolConn

    where = path or "/etc/storpool.conf"
    try:
        our_id = StorPoolConn.from_config(path).our_id
    except Exception as exc:
        raise ValidationError("client_id", f"cannot read {where} and no --client-id given ({exc})") from exc
    if our_id is None:
        raise ValidationError("client_id", f"no SP_OURID in {where} and no --client-id given")
    return our_id
