"""The local stack: StorPool emulator, CloudStack simulator, one agent per simulated KVM host,
and a driver context wired to all three, on loopback, in one process.

Tests, the demo and the benchmarks all start the same stack, so that what the demo shows is
what the tests check. `python -m integration up` runs it as a long-lived process instead.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from cloudstack_storpool.agent.hostconfig import HostConfig
from cloudstack_storpool.agent.running import Context
from cloudstack_storpool.agent.server import AgentServer
from cloudstack_storpool.agent.tls import served_certificate, server_context
from cloudstack_storpool.agentapi.link import AGENT_CA_ENV
from cloudstack_storpool.cloudstack.client import CloudStackClient
from cloudstack_storpool.driver.agents import AgentDirectory
from cloudstack_storpool.driver.context import DriverContext
from cloudstack_storpool.driver.secondary import TemplateSource
from cloudstack_storpool.heartbeat.hostloop import HostLoop, LoopConfig
from cloudstack_storpool.poolconfig import PoolsFile, load_pools
from cloudstack_storpool.settings.localfile import SETTINGS_FILE_ENV, SettingsFile
from cloudstack_storpool.settings.store import Settings
from cloudstack_storpool.spconn import StorPoolConn
from integration import guest_image
from integration.certs import TestCA
from integration.cloudstack_sim import file_pools, offerings, orchestrator
from integration.cloudstack_sim.plugin_calls import StoragePlugin
from integration.cloudstack_sim.testing import SimHandle, run_simulator, serve_api_port
from integration.guests import Guests, StackGuests
from integration.storpool_sim.model import DEFAULT_TEMPLATES, Template
from integration.storpool_sim.testing import EmulatorHandle, run_emulator
from integration.xfs import can_make_xfs, xfs_mount

log = logging.getLogger(__name__)

BYPASS_SETTING = "sp.bypass.secondary.storage"


FILE_POOLS = (("nfs", "nfs://127.0.0.1/export/primary"), ("ceph", "rbd://127.0.0.1/cloudstack"))
"""The pools of other kinds `seed_file_pools` adds: name (also its storage tag) and URL."""
SEEDED_DISK_OFFERINGS = (("ssd", {"displaytext": "SSD on StorPool, custom size", "customized": "true",
                                  "storagetype": "shared", "tags": "ssd"}),)
"""The disk offerings `seed_disk_offerings` adds: name and createDiskOffering's parameters."""


def new_uuid() -> str:
    """A fresh CloudStack-style uuid (volumes, snapshots, VM snapshots made by tests and the demo)."""
    return str(uuid.uuid4())


def free_port() -> int:
    """A loopback port nothing listens on (for "unreachable" endpoints and fixed-port servers)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


STACK_TEMPLATES = (*DEFAULT_TEMPLATES, Template("nvme", 3, "nvme", "nvme", "nvme"),
                   Template("ssd2", 3, "ssd", "ssd", "ssd"))
"""The emulated cluster's templates: ssd2 is the second template CloudStack's own StorPool tests
name in their offerings (SP_TEMPLATE=ssd2), beside ssd."""
POOLS = (("storpool-primary", "ssd"), ("storpool-hybrid", "hybrid"))
LOCATION = "lab-location"
"""The StorPool location of the first zone's cluster (the emulator's default)."""
ZONE2 = "zone2"
ZONE2_POOL = "storpool-zone2"
ZONE2_HOST = "kvm-zone2"
ZONE2_CLIENT = 4
"""SP_OURID of the second zone's host, in its own StorPool cluster (unique in the stack, so that
`agent_for_client` stays unambiguous)."""
ZONE2_LOCATION = "far-location"


@dataclass
class AgentHandle:
    host_id: str
    host_name: str
    client_id: int
    server: AgentServer
    thread: threading.Thread = field(repr=False)

    @property
    def url(self) -> str:
        return self.server.url


class LocalStack:
    """Start with `with LocalStack(root) as stack:`; everything stops and is released on exit."""

    def __init__(self, root: Path, *, make_xfs: bool | None = None, settings_ttl: float = 0.5,
                 xfs_size: int = 8 << 30, heartbeat_interval: float | None = None, guests: bool = False,
                 second_zone: bool = False) -> None:
        self.root = Path(root)
        self.make_xfs = can_make_xfs() if make_xfs is None else make_xfs
        self.settings_ttl = settings_ttl
        self.xfs_size = xfs_size
        self.heartbeat_interval = heartbeat_interval
        self.with_guests = guests
        self.second_zone = second_zone
        self.sp2: EmulatorHandle | None = None
        """The second zone's StorPool cluster, in a location of its own (`second_zone`)."""
        self.zone2_id: str | None = None
        self.file_pools: Path = root / "primary"
        self.guests: StackGuests | None = None
        self.agent_token = secrets.token_urlsafe(24)
        self.service_token: str | None = None
        self._exit = ExitStack()
        self.agents: dict[str, AgentHandle] = {}
        self.api_port_endpoint: str | None = None
        """The simulator at CloudStack's API port too (`serve_api_port`), when asked for."""

    # -- lifecycle ----------------------------------------------------------------------------

    def __enter__(self) -> LocalStack:
        try:
            self.start()
        except BaseException:
            self._exit.close()
            raise
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self._exit.close()

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        data_base = self.root
        if self.make_xfs:
            data_base = self._exit.enter_context(xfs_mount(self.root / "xfs", self.xfs_size))
        self.secondary = self.root / "secondary"
        self.secondary.mkdir(exist_ok=True)
        self.sp: EmulatorHandle = self._exit.enter_context(run_emulator(
            data_base / "storpool", self.root / "dev", token=secrets.token_urlsafe(16),
            clients=(1, 2, 3), templates=STACK_TEMPLATES,
        ))
        self.cs: SimHandle = self._exit.enter_context(run_simulator(state=self.root / "cloudstack.json"))
        model = self.cs.model
        model.image_store = str(self.secondary)  # the zone's image store, as the hosts mount it
        model.file_pools = str(self._file_pools())  # where the hosts mount NFS / see RBD pools
        for pool in list(model.storage_pools.values()):  # the hosts mount the pools they have
            if file_pools.is_file_pool(pool):
                file_pools.mount(model, pool.id)
        zone = next(iter(model.zones.values()))
        self.zone_id: str = zone.id
        pools_toml = []
        for name, template in POOLS:
            sim_pool = next((p for p in model.storage_pools.values() if p.name == name), None)
            if sim_pool is None:
                sim_pool = model.add_storage_pool(name, zone.id)
            pools_toml.append(
                f'[[pool]]\nuuid = "{sim_pool.id}"\nname = "{name}"\nzone = "{zone.id}"\n'
                f'url = "{self.sp.pool_url(template)}"\n'
            )
        if self.second_zone:
            pools_toml.append(self._start_second_zone(data_base))
        self.pools_file = self.root / "pools.toml"
        self.pools_file.write_text("\n".join(pools_toml))
        self.pools_file.chmod(0o600)
        # The agents serve TLS as on a real host, with a certificate from the stack's own CA
        # (CloudStack's CA in a real cloud), which the driver verifies.
        self.ca = TestCA(self.root / "tls")
        self.agent_cert = self.ca.issue("agent")
        for host in list(model.hosts.values()):
            client_id = int(host.details.get("SP_OURID", "0") or 0)
            if client_id:
                zone2 = self.sp2 is not None and host.zone_id == self.zone2_id
                self._start_agent(host.id, host.name, client_id, self.sp2 if zone2 else None)
        self._set_locations()
        if self.with_guests:
            self._start_guests()
        self.cloudstack: CloudStackClient = self.cs.client()
        # The project's own settings live in a settings file, as on a real machine.
        self.settings_file = self.root / "settings.toml"
        self.settings = Settings(self.cloudstack, file=SettingsFile(self.settings_file), ttl=self.settings_ttl)
        self.ctx = self.driver_context()

    def _start_second_zone(self, data_base: Path) -> str:
        """A second zone with its own StorPool cluster in another location, linked to the first
        (as StorPool's LocationAdd links two sites): its cluster, a KVM host whose agent is a
        client of that cluster, and a StorPool pool on it. Returns the pool's pools-file entry."""
        self.sp2 = self._exit.enter_context(run_emulator(
            data_base / "storpool-zone2", self.root / "dev-zone2", token=secrets.token_urlsafe(16),
            clients=(ZONE2_CLIENT,), templates=STACK_TEMPLATES, cluster_name="far", cluster_id="c",
            location_id="far", location_name=ZONE2_LOCATION,
        ))
        self.sp.emulator.link_location(self.sp2.emulator)
        model = self.cs.model
        zone = next((z for z in model.zones.values() if z.name == ZONE2), None) or model.add_zone(ZONE2)
        self.zone2_id = zone.id
        if not any(h.name == ZONE2_HOST for h in model.hosts.values()):
            cluster = next((c for c in model.clusters.values() if c.zone_id == zone.id), None) \
                or model.add_cluster("cluster-zone2", zone.id)
            model.add_host(ZONE2_HOST, sp_ourid=ZONE2_CLIENT, cluster_id=cluster.id)
        pool = next((p for p in model.storage_pools.values() if p.name == ZONE2_POOL), None) \
            or model.add_storage_pool(ZONE2_POOL, zone.id)
        return (f'[[pool]]\nuuid = "{pool.id}"\nname = "{ZONE2_POOL}"\nzone = "{zone.id}"\n'
                f'url = "{self.sp2.pool_url("ssd")}"\n')

    def _set_locations(self) -> None:
        """What the StorPool host listener records when a host connects: each pool's StorPool
        location name (`sp.cluster.location`, from `storpool location list` on the host). With a
        second zone, its pools may take snapshot copies (`use.storage.replication`)."""
        model = self.cs.model
        for pool in list(model.storage_pools.values()):
            if pool.provider != "StorPool":
                continue
            far = self.sp2 is not None and pool.zone_id == self.zone2_id
            values = {"sp.cluster.location": ZONE2_LOCATION if far else LOCATION}
            if self.sp2 is not None:
                values["use.storage.replication"] = "true"
            for key, value in values.items():
                if key in model.configs:  # a state saved by a CloudStack without the key keeps none
                    model.set_configuration(key, value, "storagepool", pool.id)
    def _file_pools(self) -> Path:
        """The directory of the pools of other kinds (NFS, Ceph RBD; `cloudstack_sim.file_pools`):
        under the stack's root; with guests, a directory of this run that QEMU, as libvirt's
        unprivileged user, can reach (the stack's root may sit in a private directory), removed
        when the stack stops (a restarted stack mounts its pools again, empty)."""
        if not self.with_guests:
            self.file_pools = self.root / "primary"
            return self.file_pools
        self.file_pools = Path(tempfile.mkdtemp(prefix="cssp-primary-", dir="/var/tmp"))
        self.file_pools.chmod(0o755)
        self._exit.callback(shutil.rmtree, self.file_pools, ignore_errors=True)
        return self.file_pools

    def seed_file_pools(self) -> list[str]:
        """An NFS pool `nfs` and a Ceph RBD pool `ceph`, tagged with their names, as an operator
        adds them (createStoragePool with the default provider): the pools CloudStack's
        StorPool tests move volumes from (they look them up by these names). Pools already
        there are kept; returns the names added."""
        added = []
        for name, url in FILE_POOLS:
            if any(p.name == name for p in self.cs.model.storage_pools.values()):
                continue
            orchestrator.create_file_pool(self.cs.model, name, url, self.zone_id, name, None)
            added.append(name)
        self.cs.model.save()
        return added

    def seed_disk_offerings(self) -> list[str]:
        """The disk offering `ssd` an operator of a StorPool cloud has (custom size, storage tag
        `ssd`, the tag CloudStack's StorPool tests give their StorPool pool), made with
        createDiskOffering: MigrateVolumeToStorPool looks it up by name before it makes anything.
        An offering already there is kept; returns the names added."""
        added = []
        for name, params in SEEDED_DISK_OFFERINGS:
            if any(o.name == name and o.state == "Active" for o in self.cs.model.disk_offerings.values()):
                continue
            offerings.create_disk_offering(self.cs.model, {"name": name, **params})
            added.append(name)
        self.cs.model.save()
        return added

    def _start_guests(self) -> None:
        """Real guests for the simulator's VMs (see `integration.guests`)."""
        dev_root = self.sp.dev_root

        def device_of(client_id: int, path: str) -> str:
            return str(dev_root / str(client_id) / path.removeprefix("/dev/"))

        guests = Guests(guest_image.build(), device_of, console_dir=self.root / "consoles")
        (self.root / "consoles").mkdir(exist_ok=True)
        (self.root / "consoles").chmod(0o777)  # QEMU, as libvirt's user, writes the consoles
        self._exit.callback(guests.close)
        self.guests = StackGuests(self.cs.model, guests)
        self.cs.model.hypervisor = self.guests
        self.cs.model.guest_network = f"127.{secrets.randbelow(200) + 20}"

    def _start_heartbeat(self, client_id: int, status_file: Path) -> None:
        """The host's heartbeat loop, as `heartbeat run` would run it on a KVM host (action: log)."""
        assert self.heartbeat_interval
        conn = StorPoolConn(self.sp.host, self.sp.port, self.sp.token, our_id=client_id, retries=0, timeout=5)
        loop = HostLoop(conn, LoopConfig(client_id, interval=self.heartbeat_interval, status_file=status_file))
        thread = threading.Thread(target=loop.run, name=f"heartbeat-{client_id}", daemon=True)
        thread.start()

        def stop() -> None:
            loop.stop.set()
            thread.join(timeout=10)

        self._exit.callback(stop)

    def add_kvm_host(self, name: str, cluster_id: str, client_id: int, sp: EmulatorHandle | None = None) -> str:
        """One more Up KVM host in CloudStack cluster `cluster_id`, a client of StorPool cluster
        `sp` (default: the stack's), with its agent running. Returns the host id."""
        host = self.cs.model.add_host(name, sp_ourid=client_id, cluster_id=cluster_id)
        self._start_agent(host.id, host.name, client_id, sp)
        return str(host.id)

    def _start_agent(self, host_id: str, host_name: str, client_id: int, sp: EmulatorHandle | None = None) -> None:
        sp = sp or self.sp
        status_file = self.root / f"heartbeat-{client_id}.json"
        if self.heartbeat_interval:
            # Off in tests by default: the loops' background calls would consume injected
            # faults and move the emulator's call counters.
            self._start_heartbeat(client_id, status_file)
        cfg = HostConfig(
            client_id=client_id,
            dev_root=str(sp.dev_root / str(client_id)),
            mount_root=str(self.root / "mnt"),
            secondary_roots=(str(self.secondary),),
            heartbeat_status_file=str(status_file),
            cluster_id=sp.emulator.cluster_key,  # SP_CLUSTER_ID of the host's storpool.conf
        )
        conn = StorPoolConn(sp.host, sp.port, sp.token, our_id=client_id)
        server = AgentServer(("127.0.0.1", 0), self.agent_token, lambda: Context(host=cfg, conn=conn),
                             tls=server_context(str(self.agent_cert.cert), str(self.agent_cert.key)),
                             certificate=served_certificate(str(self.agent_cert.cert)))
        thread = threading.Thread(target=server.serve_forever, name=f"agent-{host_name}", daemon=True)
        thread.start()

        def stop() -> None:
            server.shutdown_all()
            server.shutdown()
            server.server_close()
            thread.join(timeout=10)

        self._exit.callback(stop)
        self.cs.model.set_host_details(host_id, **{"agent.port": str(server.server_address[1])})
        self.agents[host_id] = AgentHandle(host_id, host_name, client_id, server, thread)

    def driver_context(self, **conn_options: Any) -> DriverContext:
        """A fresh driver context (its own connections and caches), as a second process would have."""
        return DriverContext(
            pools=self.pools(),
            cloudstack=self.cloudstack,
            settings=self.settings,
            agents=AgentDirectory(self.cloudstack, self.agent_token, ca_file=str(self.ca.ca_file)),
            conn_options=conn_options,
        )

    def start_service(self) -> str:
        """The driver service over this stack's context, on a loopback port; returns its URL.
        The simulator is told about it, so users' storage commands reach the plugin.

        Its token is written by `write_secrets`, never printed."""
        from cloudstack_storpool.service import make_server, serve_in_thread

        self.service_token = secrets.token_urlsafe(24)
        server = make_server(self.ctx, self.service_token, "127.0.0.1", 0, pools_file=self.pools_file, periodic_gc=True,
                             secrets=(self.sp.token, self.cs.secret, self.agent_token))
        thread = serve_in_thread(server)

        def stop() -> None:
            server.close()
            thread.join(timeout=10)

        self._exit.callback(stop)
        host, port = server.server_address[:2]
        url = f"http://{host!s}:{port}"
        # The simulator plays CloudStack: its storage commands call the plugin through this service.
        self.cs.model.plugin = StoragePlugin(url, self.service_token)
        # Its hosts' agents connect now that the plugin is there: CloudStack's host listener
        # records each host's StorPool client id (`host.parent`).
        for host_id in self.agents:
            orchestrator.host_connected(self.cs.model, host_id)
        return url

    def pools(self) -> PoolsFile:
        return load_pools(self.pools_file)

    # -- helpers for tests and the demo ---------------------------------------------------------

    def agent_for_client(self, client_id: int) -> AgentHandle:
        return next(a for a in self.agents.values() if a.client_id == client_id)

    def pool_id(self, name: str = "storpool-primary") -> str:
        """The CloudStack uuid of one of the stack's pools (`POOLS`), by name."""
        return next(p.uuid for p in self.pools().pools if p.name == name)

    def agent_jobs(self, command: str | None = None) -> list[Any]:
        """Every job the stack's agents accepted so far (only `command`'s, if given)."""
        return [j for a in self.agents.values() for j in a.server.jobs.list() if command in (None, j.command)]

    def secondary_files(self) -> set[str]:
        """Every file on the stack's secondary storage, relative to its root."""
        return {str(p.relative_to(self.secondary)) for p in self.secondary.rglob("*") if p.is_file()}

    def set_bypass(self, value: bool, *, wait: bool = False) -> None:
        """Flip the secondary-storage bypass as an operator would: updateConfiguration through the
        CloudStack API. `wait` sleeps past the settings cache, so the driver sees the new value."""
        self.cloudstack.update_configuration(BYPASS_SETTING, "true" if value else "false")
        if wait:
            time.sleep(self.settings_ttl + 0.1)

    def template_image(self, template_id: str, size: int, writes: dict[int, bytes], fmt: str = "qcow2",
                       base: Path | None = None) -> Path:
        """A template file on "secondary storage" with known content at known offsets (over the
        content of the raw image `base`, when given)."""
        path = self.secondary / "template" / "tmpl" / "1" / template_id / f"{template_id}.{fmt}"
        path.parent.mkdir(parents=True, exist_ok=True)
        raw = path.with_suffix(".raw.tmp")
        if base is not None:
            shutil.copyfile(base, raw)
        with open(raw, "r+b" if base is not None else "wb") as f:
            f.truncate(size)
            for offset, data in writes.items():
                f.seek(offset)
                f.write(data)
        try:
            subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", fmt, str(raw), str(path)],
                           check=True, capture_output=True)
        finally:
            raw.unlink(missing_ok=True)
        return path

    def publish_template_images(self) -> list[str]:
        """Put every registered template's image on the image store where CloudStack keeps it
        (template/tmpl/1/<id>/<id>.<format>), as after its download: for `up`, so that a
        user's deployVirtualMachine works. With guests, every template is the guest's root
        filesystem, so each VM boots. Returns the templates that got one."""
        done = []
        for tpl in list(self.cs.model.templates.values()):
            fmt = tpl.format.lower()
            if (self.secondary / "template" / "tmpl" / "1" / tpl.id / f"{tpl.id}.{fmt}").exists():
                continue
            if self.guests is not None:
                self.template_image(tpl.id, tpl.size, {}, fmt, base=self.guests.image.rootfs)
            else:
                self.template_image(tpl.id, tpl.size, {0: f"{tpl.name} boot sector".encode()}, fmt)
            done.append(tpl.name)
        return done

    def source_of(self, image: Path, fmt: str = "qcow2") -> TemplateSource:
        """How CloudStack would name `image` (a file under secondary storage) to the driver."""
        return TemplateSource(str(self.secondary), str(image.relative_to(self.secondary)), fmt)

    def driver_env(self) -> dict[str, str]:
        """The environment the driver's commands read: CloudStack credentials, the agents' token
        the pools file (the StorPool endpoints and tokens are in the pools file) and the settings file."""
        return {
            SETTINGS_FILE_ENV: str(self.settings_file),
            "CLOUDSTACK_ENDPOINT": self.cs.endpoint,
            "CLOUDSTACK_KEY": self.cs.key,
            "CLOUDSTACK_SECRET": self.cs.secret,
            "CLOUDSTACK_STORPOOL_AGENT_TOKEN": self.agent_token,
            AGENT_CA_ENV: str(self.ca.ca_file),
            "CSSP_POOLS_FILE": str(self.pools_file),
        }

    # -- what CloudStack's orchestration does around a VM's disks (the host-side operations) -----

    def connect_hosts(self) -> None:
        """Every host with an agent joins as CloudStack's StorPool host listener makes it: the
        driver asks the agent who it is and the listener keeps the client id in `host.parent`
        and the host's StorPool cluster id as its cluster's `sp.cluster.id`."""
        from cloudstack_storpool.driver.hostconnect import host_connected

        for host_id in self.agents:
            answer = host_connected(self.ctx, host_id=host_id)
            orchestrator.listener_records(self.cs.model, host_id, answer.parent, answer.cluster_id)

    def start_vm(self, vm_id: str, host_id: str) -> None:
        """VM start: the disks are handed to the host (and taken from every other), then it runs."""
        from cloudstack_storpool.driver.ha import hand_over

        hand_over(self.ctx, vm_id=vm_id, host_id=host_id)
        self.cs.model.start_vm(vm_id, host_id)

    def stop_vm(self, vm_id: str) -> None:
        """VM stop: it stops, then its disks are disconnected from the host it ran on."""
        from cloudstack_storpool.driver.connect import vm_stopped

        host_id = self.cs.model.vms[vm_id].host_id
        self.cs.model.stop_vm(vm_id)
        if host_id:
            vm_stopped(self.ctx, vm_id=vm_id, host_id=host_id)

    def live_migrate(self, vm_id: str, dest_host_id: str, hypervisor_move: Callable[[], None]) -> None:
        """Live migration: the destination connects the disks, the hypervisors move the guest
        (`hypervisor_move`), then the source lets go; if the move fails the destination does."""
        from cloudstack_storpool.driver.connect import finish_migration, prepare_migration

        source = self.cs.model.vms[vm_id].host_id
        assert source is not None, "only a running VM migrates live"
        prepare_migration(self.ctx, vm_id=vm_id, dest_host_id=dest_host_id)
        try:
            hypervisor_move()
        except BaseException:
            finish_migration(self.ctx, vm_id=vm_id, source_host_id=source, dest_host_id=dest_host_id, succeeded=False)
            raise
        finish_migration(self.ctx, vm_id=vm_id, source_host_id=source, dest_host_id=dest_host_id, succeeded=True)
        self.cs.model.move_vm(vm_id, dest_host_id)

    def ha_restart(self, vm_id: str, new_host_id: str) -> None:
        """HA: the VM's host was fenced (or lost); the VM restarts on `new_host_id` after its
        disks are force-detached from every other host and attached there."""
        from cloudstack_storpool.driver.ha import hand_over

        vm = self.cs.model.vms[vm_id]
        old = vm.host_id
        hand_over(self.ctx, vm_id=vm_id, host_id=new_host_id)
        if old:
            self.cs.model.stop_vm(vm_id)
        self.cs.model.start_vm(vm_id, new_host_id)

    def serve_api_port(self) -> str:
        """Serve the simulator also at port 8080 of a loopback address of its own, as a management
        server serves its API: clients that build their URL from that port (Marvin's user API
        clients) reach it. Returns the endpoint."""
        self.api_port_endpoint = self._exit.enter_context(serve_api_port(self.cs))
        return self.api_port_endpoint

    def write_secrets(self, path: Path) -> Path:
        """An env file (mode 0600) with every credential of the stack, for scripts and the CLI.

        Secrets go to a private file, never to argv or the terminal."""
        lines = {
            "SP_API_HTTP_HOST": self.sp.host,
            "SP_API_HTTP_PORT": str(self.sp.port),
            "SP_AUTH_TOKEN": self.sp.token,
            **self.driver_env(),
        }
        if self.service_token:
            lines["CSSP_SERVICE_TOKEN"] = self.service_token
        if self.api_port_endpoint:
            lines["CLOUDSTACK_API_PORT_ENDPOINT"] = self.api_port_endpoint
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.writelines(f"{k}={v}\n" for k, v in lines.items())
        return path
