"""The CloudStack simulator's world: topology, resources, configuration, events, async jobs.

Moto-style: the model holds plain objects and the rules a real management server applies
(scoped configuration with fallback to the global value, updateConfiguration's validation
(ConfigurationManagerImpl), "entity does not exist" for unknown ids, template deletion refused
while VMs use it). The configuration table is seeded from `configuration.json`, a data file of
CloudStack's own keys, never from the project's settings registry: the simulator must be able to
say "doesn't exist" to a key the project invented. The
wire (envelopes, signatures, paging, HTTP status) lives in server.py; tests change the world
through the Python methods here.

Everything is guarded by one re-entrant lock: the server answers from several threads.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from integration.cloudstack_sim.hypervisor import Hypervisor, NoGuests

CONFIGURATION_FILE = Path(__file__).with_name("configuration.json")
"""CloudStack's configuration keys the plugin touches (name, Java type, default, scope...)."""

if TYPE_CHECKING:
    from integration.cloudstack_sim.plugin_calls import StoragePlugin

_NAMESPACE = uuid.UUID("5b0c1a52-3f0e-4c1e-9d7a-6f1d2c3b4a59")

GIB = 1024**3


def seeded_id(kind: str, name: str) -> str:
    """Deterministic ids for seeded objects, so that a demo's ids survive a restart."""
    return str(uuid.uuid5(_NAMESPACE, f"{kind}:{name}"))


def new_id() -> str:
    return str(uuid.uuid4())


def cs_time(moment: float | None = None) -> str:
    """CloudStack's date format in responses, e.g. `2024-05-01T10:00:00+0000`."""
    when = datetime.fromtimestamp(time.time() if moment is None else moment, tz=UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S%z")


# --- errors a command can end with (server.py turns them into envelopes) ---


class ApiError(Exception):
    """An error the real server would answer; `code` is both HTTP status and `errorcode`."""

    code = 530
    cserrorcode = 4250  # CloudRuntimeException

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


class ParamError(ApiError):
    """InvalidParameterValueException."""

    code = 431
    cserrorcode = 4350


class MissingParam(ApiError):
    """A required parameter was not sent (ServerApiException PARAM_ERROR)."""

    code = 431
    cserrorcode = 9999


class InvalidValue(ApiError):
    """A parameter the API layer could not translate (ServerApiException PARAM_ERROR, raised by
    ParamProcessWorker before the command runs): an unknown uuid, a malformed number. The server
    prefixes the text with "Unable to execute API command <cmd> due to invalid value."."""

    code = 431
    cserrorcode = 9999


class PermissionDenied(ApiError):
    """PermissionDeniedException: the caller may not use the entity (ApiErrorCode.ACCOUNT_ERROR)."""

    code = 531
    cserrorcode = 4365


class Unsupported(ApiError):
    code = 432
    cserrorcode = 9999


def no_entity(param: str, value: str) -> InvalidValue:
    """What the real server says for an id it cannot translate (unknown or removed entity)."""
    return InvalidValue(
        f"Invalid parameter {param} value={value} due to incorrect long value format, or entity does "
        "not exist or due to incorrect parameter annotation for the field in api cmd class."
    )


# --- resources ---


@dataclass
class Zone:
    id: str
    name: str


@dataclass
class Cluster:
    id: str
    name: str
    zone_id: str


@dataclass
class Host:
    id: str
    name: str
    ip_address: str
    cluster_id: str
    zone_id: str
    state: str = "Up"
    resource_state: str = "Enabled"
    details: dict[str, str] = field(default_factory=dict)
    ha_enabled: bool = True
    ha_state: str = "Available"
    parent: str | None = None
    """`host.parent` in CloudStack's database: where the StorPool host listener keeps the host's
    StorPool client id (no API writes it; see `host_connected`)."""


@dataclass
class Template:
    id: str
    name: str
    size: int
    format: str = "QCOW2"
    zone_id: str = ""
    ready: bool = True
    featured: bool = True
    public: bool = True
    account: str = "admin"
    url: str = ""
    created: str = ""
    install_path: str = ""
    """Where the image sits on the image store (secondary storage), relative to its root."""
    pools: list[str] = field(default_factory=list)
    """Pools holding a copy (CloudStack's template_spool_ref)."""
    project_id: str = ""
    """The project owning the template ("" for an account's): a listing skips it unless asked
    with `projectid` (CloudStack's SkipProjectResources), a lookup by id finds it."""
    pool_paths: dict[str, str] = field(default_factory=dict)
    """template_spool_ref.install_path per pool: the path of the pool's copy, as the driver answered."""
    details: dict[str, str] = field(default_factory=dict)
    """vm_template_details (not in the API): the Java plugin marks a template kept as a StorPool
    snapshot with `spStoragePoolId` (its pool)."""


@dataclass
class DiskOffering:
    id: str
    name: str
    disk_size_gb: int = 0
    min_iops: int | None = None
    max_iops: int | None = None
    customized_iops: bool = False
    customized: bool = False
    details: dict[str, str] = field(default_factory=dict)
    tags: str = ""
    """Storage tags (comma-separated): a volume of this offering goes only to a pool holding all of them."""
    encrypt: bool = False
    display_text: str = ""
    hypervisor_snapshot_reserve: int | None = None
    created: str = ""
    state: str = "Active"
    """Inactive once deleted: CloudStack keeps a deleted offering's row (its volumes still name it)
    but lists it no more."""


@dataclass
class ServiceOffering:
    id: str
    name: str
    cpu_number: int = 1
    cpu_speed: int = 1000
    memory: int = 512
    min_iops: int | None = None
    max_iops: int | None = None
    customized_iops: bool = False
    details: dict[str, str] = field(default_factory=dict)
    tags: str = ""
    """Storage tags of the ROOT disk (kept on the offering's disk offering in CloudStack)."""
    encrypt_root: bool = False
    display_text: str = ""
    hypervisor_snapshot_reserve: int | None = None
    created: str = ""
    state: str = "Active"


@dataclass
class StoragePool:
    id: str
    name: str
    zone_id: str
    provider: str = "StorPool"
    scope: str = "ZONE"
    type: str = "StorPool"
    path: str = "/dev/storpool-byid/"
    capacity: int = 100 * 1024 * GIB
    used: int = 0
    state: str = "Up"
    tags: str = ""
    url: str = ""
    details: dict[str, str] = field(default_factory=dict)
    """storage_pool_details (not in the API): the Java plugin keeps each cluster's check volume
    under `SP_VOLUME_ON_CLUSTER-<cluster id>` (its path)."""


@dataclass
class VirtualMachine:
    id: str
    name: str
    instance_name: str
    zone_id: str
    template_id: str
    service_offering_id: str
    state: str = "Stopped"
    host_id: str | None = None
    last_host_id: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    account: str = "admin"
    created: str = ""
    ip_address: str = ""
    """The VM's address on the zone's guest network: its own loopback address (127.10.x.y), where
    a guest of the local stack listens."""
    mac_address: str = ""


@dataclass
class Volume:
    id: str
    name: str
    zone_id: str
    size: int
    type: str = "DATADISK"
    path: str | None = None
    storage_id: str | None = None
    vm_id: str | None = None
    device_id: int | None = None
    disk_offering_id: str | None = None
    min_iops: int | None = None
    max_iops: int | None = None
    state: str = "Ready"
    account: str = "admin"
    created: str = ""
    template_id: str | None = None
    """The template a ROOT volume was made from."""
    passphrase: str | None = field(default=None, repr=False)
    """The volume's encryption passphrase (CloudStack's `passphrase` row behind `passphrase_id`):
    generated when a volume of an encrypting offering is created; never in an API answer."""
    encrypt_format: str | None = None
    """`encryptformat` of the answers: the format the plugin reported after encrypting (`luks`)."""
    source_snapshot_id: str | None = None
    """The snapshot an Allocated ROOT volume is to be made from (deployVirtualMachine with
    `snapshotid`): its first start creates it from that snapshot instead of from the template."""


@dataclass
class Snapshot:
    id: str
    name: str
    volume_id: str
    zone_id: str
    state: str = "BackedUp"
    snapshot_type: str = "MANUAL"
    physical_size: int = 0
    created: str = ""
    account: str = "admin"
    details: dict[str, str] = field(default_factory=dict)
    """snapshot_details (not in the API): the Java plugin keeps the StorPool path under the snapshot's uuid."""
    path: str | None = None
    """Where the primary-storage driver keeps it (what the plugin returned)."""
    backup_path: str | None = None
    """Its copy on the image store, relative to the store's root; None: kept on primary only."""
    storage_id: str | None = None
    """The primary storage pool holding it (it outlives its volume there)."""
    size: int = 0
    """The volume's virtual size when it was taken (a snapshot outlives its volume)."""
    copies: dict[str, str] = field(default_factory=dict)
    """snapshot_store_ref rows on primary storage of other zones (copySnapshot with
    `usestoragereplication`): pool id -> the path the plugin answered."""


@dataclass
class VMSnapshot:
    id: str
    name: str
    vm_id: str
    zone_id: str
    state: str = "Ready"
    type: str = "Disk"
    current: bool = True
    parent_id: str | None = None
    description: str = ""
    created: str = ""
    account: str = "admin"
    details: dict[str, str] = field(default_factory=dict)
    """vm_snapshot_details (not in the API): per disk (volume uuid) the member's StorPool path."""


@dataclass
class Event:
    id: str
    type: str
    description: str
    created: float
    level: str = "INFO"
    state: str = "Completed"
    resource_id: str | None = None
    resource_type: str | None = None
    account: str = "admin"


@dataclass
class Account:
    """An account (AccountVO) in a domain; its type follows its role (AccountManagerImpl)."""

    id: str
    name: str
    domain_id: str
    role_id: str
    state: str = "enabled"
    created: str = ""
    network_domain: str | None = None


@dataclass
class User:
    """A user of an account (UserVO). The password is not kept: nothing here logs in with it."""

    id: str
    username: str
    account_id: str
    firstname: str = ""
    lastname: str = ""
    email: str = ""
    state: str = "enabled"
    created: str = ""
    timezone: str | None = None


@dataclass
class SecurityGroup:
    """A security group (SecurityGroupVO) and its rules; every account has a `default` one."""

    id: str
    name: str
    account: str
    domain_id: str
    description: str = ""
    ingress: list[dict[str, Any]] = field(default_factory=list)
    egress: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class Role:
    """One of CloudStack's default roles (the `roles` table as the schema seeds it)."""

    internal_id: int
    name: str
    type: str
    description: str

    @property
    def id(self) -> str:
        return seeded_id("role", self.name)


ROLES = (
    Role(1, "Root Admin", "Admin", "Default root admin role"),
    Role(2, "Resource Admin", "ResourceAdmin", "Default resource admin role"),
    Role(3, "Domain Admin", "DomainAdmin", "Default domain admin role"),
    Role(4, "User", "User", "Default Root Admin role"),
)
ACCOUNT_TYPES = {"User": 0, "Admin": 1, "DomainAdmin": 2, "ResourceAdmin": 3}
"""Account.Type by role type (RoleType.getAccountType)."""


def role_by_id(value: str) -> Role | None:
    """A role by uuid or by internal id: the API layer takes either for a uuid parameter."""
    return next((r for r in ROLES if value in (r.id, str(r.internal_id))), None)


@dataclass
class Alert:
    id: str
    type: int
    name: str
    description: str
    zone_id: str | None
    sent: float


@dataclass
class ConfigEntry:
    """One CloudStack configuration key (a ConfigKey): one scope, a typed value."""

    name: str
    default: str | None
    category: str = "Advanced"
    description: str = ""
    dynamic: bool = True
    scope: str = "global"
    type: str = "String"
    """The ConfigKey's Java class (Boolean, Integer, Long, Double, String): how updates are validated."""
    value: str | None = None
    component: str = "management-server"


@dataclass
class Job:
    id: str
    command: str
    created: float
    ready_at: float
    status: int  # 0 pending, 1 done, 2 failed
    result_code: int
    result: dict[str, Any]
    instance_type: str | None = None
    instance_id: str | None = None
    account_id: str = ""
    """The caller who started it (the job's owner): queryAsyncJobResult answers its ids, and a
    user sees its own jobs only. Empty: the root admin."""
    user_id: str = ""


@dataclass
class Call:
    """One request the server accepted (signature valid): for tests to assert on."""

    command: str
    params: dict[str, str]
    method: str


_SCOPE_KEYS = {
    "zoneid": "zone",
    "clusterid": "cluster",
    "storageid": "storagepool",
    "accountid": "account",
    "domainid": "domain",
}
"""updateConfiguration / listConfigurations parameter -> the scope it names."""

SCOPE_PARAMS = dict(_SCOPE_KEYS)

_T = TypeVar("_T")

_TABLES: dict[str, type] = {
    "zones": Zone,
    "clusters": Cluster,
    "hosts": Host,
    "templates": Template,
    "disk_offerings": DiskOffering,
    "service_offerings": ServiceOffering,
    "storage_pools": StoragePool,
    "vms": VirtualMachine,
    "volumes": Volume,
    "snapshots": Snapshot,
    "vm_snapshots": VMSnapshot,
    "events": Event,
    "alerts": Alert,
    "configs": ConfigEntry,
    "accounts": Account,
    "users": User,
    "security_groups": SecurityGroup,
}


class CloudStackModel:
    """The simulated management server's database and rules."""

    def __init__(self, *, state_path: Path | None = None) -> None:
        self.lock = threading.RLock()
        self.state_path = state_path
        self.zones: dict[str, Zone] = {}
        self.clusters: dict[str, Cluster] = {}
        self.hosts: dict[str, Host] = {}
        self.templates: dict[str, Template] = {}
        self.disk_offerings: dict[str, DiskOffering] = {}
        self.service_offerings: dict[str, ServiceOffering] = {}
        self.storage_pools: dict[str, StoragePool] = {}
        self.vms: dict[str, VirtualMachine] = {}
        self.volumes: dict[str, Volume] = {}
        self.snapshots: dict[str, Snapshot] = {}
        self.vm_snapshots: dict[str, VMSnapshot] = {}
        self.events: dict[str, Event] = {}
        self.alerts: dict[str, Alert] = {}
        self.configs: dict[str, ConfigEntry] = {}
        self.accounts: dict[str, Account] = {}
        self.users: dict[str, User] = {}
        self.security_groups: dict[str, SecurityGroup] = {}
        # (scope, scope id, name) -> value
        self.scoped_values: dict[tuple[str, str, str], str] = {}
        self.removed_snapshots: set[str] = set()
        """Uuids of deleted snapshots: CloudStack keeps their rows (`removed` set), so the API layer
        still translates the uuid (ParamProcessWorker, findByUuidIncludingRemoved) and a listing
        by that id is empty rather than refused."""
        # Not persisted: runtime-only state.
        self.jobs: dict[str, Job] = {}
        self.user_keys: dict[str, tuple[str, str]] = {}
        """User uuid -> (API key, secret key), made by registerUserKeys. Kept in memory only: the
        secret keys never reach the state file (a restarted simulator has none; register again)."""
        self.calls: list[Call] = []
        # How the storage commands reach the plugin (storage_commands.py); None: no plugin.
        self.plugin: StoragePlugin | None = None
        self.hypervisor: Hypervisor = NoGuests()
        self.guest_network = "127.10"
        """The first two octets of the VMs' addresses: a stack with real guests takes its own, so
        that two stacks on one machine never listen on the same address."""
        self.image_store: str | None = None
        """The image store's root as the KVM hosts see it (secondary storage)."""
        self.file_pools: str | None = str(state_path.parent / "primary") if state_path else None
        """Where the KVM hosts see the pools of other kinds (NFS, Ceph RBD): a directory per pool
        (`file_pools.py`); beside the state file unless the stack says otherwise."""
        self.job_delay = 0.0
        """Seconds an async job stays pending (jobstatus 0) before its result shows."""
        self._job_failures: dict[str, list[str]] = {}
        self.migration_faults: list[str] = []
        """The simulated hypervisor's faults: each fails the next MigrateCommand with its text
        (as a libvirt migration error would), consumed one per migration."""
        self._instance_counter = 2
        self._seeding = False
        self.domains: dict[str, str] = {seeded_id("domain", "ROOT"): "ROOT"}
        """Domain uuid -> name (the simulator has only ROOT)."""

    def account_ids(self) -> dict[str, str]:
        """Account uuid -> name, for every account that owns something (and admin)."""
        with self.lock:
            names = {"admin"} | {o.account for table in (self.vms, self.volumes, self.snapshots, self.templates)
                                 for o in table.values()}
            out = {seeded_id("account", n): n for n in names if n not in self.account_names()}
            out.update({a.id: a.name for a in self.accounts.values()})
            return out

    def account_names(self) -> set[str]:
        with self.lock:
            return {a.name for a in self.accounts.values()}

    # ------------------------------------------------------------------ helpers

    def commands_seen(self) -> list[str]:
        with self.lock:
            return [c.command for c in self.calls]

    def record_call(self, command: str, params: dict[str, str], method: str) -> None:
        with self.lock:
            self.calls.append(Call(command, dict(params), method))

    def _oid(self, kind: str, name: str) -> str:
        """Seeded objects get ids derived from their names; objects added later get fresh ones."""
        return seeded_id(kind, name) if self._seeding else new_id()

    def _need(self, table: dict[str, _T], param: str, value: str) -> _T:
        try:
            return table[value]
        except KeyError:
            raise no_entity(param, value) from None

    # ------------------------------------------------------------------ persistence

    def save(self) -> None:
        if self.state_path is None:
            return
        with self.lock:
            data: dict[str, Any] = {
                name: [dataclasses.asdict(obj) for obj in getattr(self, name).values()] for name in _TABLES
            }
            data["scoped_values"] = [[*key, value] for key, value in self.scoped_values.items()]
            data["instance_counter"] = self._instance_counter
            data["removed_snapshots"] = sorted(self.removed_snapshots)
            # Written under the lock too: async jobs save from their own threads. Owner-only: it
            # holds the volumes' encryption passphrases, as CloudStack's database does.
            tmp = self.state_path.with_suffix(".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(json.dumps(data, indent=1, sort_keys=True))
            tmp.replace(self.state_path)

    def load(self) -> bool:
        """Load the state file if it exists; True when something was loaded."""
        if self.state_path is None or not self.state_path.exists():
            return False
        data = json.loads(self.state_path.read_text())
        with self.lock:
            for name, cls in _TABLES.items():
                table = getattr(self, name)
                table.clear()
                for item in data.get(name, []):
                    if name == "configs":
                        item["type"] = _LEGACY_TYPES.get(item.get("type", ""), item.get("type", "String"))
                    obj = cls(**item)
                    table[obj.name if name == "configs" else obj.id] = obj
            self.scoped_values = {(s, i, n): v for s, i, n, v in data.get("scoped_values", [])}
            self._instance_counter = int(data.get("instance_counter", 2))
            self.removed_snapshots = set(data.get("removed_snapshots", []))
        return True

    # ------------------------------------------------------------------ seed

    def seed(self) -> None:
        """The default world: one zone, one cluster, two KVM hosts on loopback, offerings, VMs."""
        with self.lock:
            self._seeding = True
            try:
                self._seed()
            finally:
                self._seeding = False

    def _seed(self) -> None:
        with self.lock:
            for account_name, role in (("system", ROLES[0]), ("admin", ROLES[0]), ("user1", ROLES[3])):
                self.add_account(account_name, role.id)
            zone = self.add_zone("zone1")
            cluster = self.add_cluster("cluster1", zone.id)
            kvm1 = self.add_host("kvm1", "127.0.0.1", sp_ourid=1, cluster_id=cluster.id)
            kvm2 = self.add_host("kvm2", "127.0.0.1", sp_ourid=2, cluster_id=cluster.id)
            pool = self.add_storage_pool("storpool-primary", zone.id)
            tiny = self.add_template("tiny-linux", 64 * 1024 * 1024, fmt="QCOW2", zone_id=zone.id)
            self.add_template("debian-12", 2 * GIB, fmt="QCOW2", zone_id=zone.id)
            self.add_disk_offering("sp-small", disk_size_gb=10)
            self.add_disk_offering("sp-iops-500", disk_size_gb=20, min_iops=100, max_iops=500)
            self.add_disk_offering("sp-nvme-template", disk_size_gb=20, details={"SP_TEMPLATE": "nvme"})
            self.add_disk_offering("sp-gold", disk_size_gb=20, details={"SP_QOSCLASS": "gold"})
            self.add_disk_offering("sp-custom-iops", disk_size_gb=20, customized_iops=True)
            small = self.add_service_offering("small", cpu_number=1, memory=512)
            self.add_service_offering("medium-iops", cpu_number=2, memory=2048, max_iops=1000)
            self.add_service_offering("hybrid-root", cpu_number=2, memory=2048,
                                      details={"SP_TEMPLATE": "hybrid"})
            self.add_vm("vm1", template_id=tiny.id, service_offering_id=small.id, host_id=kvm1.id,
                        state="Running", storage_id=pool.id)
            self.add_vm("vm2", template_id=tiny.id, service_offering_id=small.id, host_id=kvm2.id,
                        state="Stopped", storage_id=pool.id)
            self.add_vm("user-vm", template_id=tiny.id, service_offering_id=small.id, host_id=kvm2.id,
                        state="Running", storage_id=pool.id, account="user1")
            self.seed_settings()

    def seed_settings(self, *, skip: tuple[str, ...] = ()) -> None:
        """Register CloudStack's keys from `configuration.json` (as a management server with the
        StorPool plugin installed has them); `skip` leaves some out (an older plugin)."""
        keys = json.loads(CONFIGURATION_FILE.read_text())["keys"]
        with self.lock:
            for key in keys:
                if key["name"] in skip:
                    continue
                self.register_setting(
                    key["name"], key["default"], scope=key["scope"], category=key["category"],
                    description=key["description"], dynamic=key["dynamic"], type=key["type"],
                    component=key["component"],
                )

    # ------------------------------------------------------------------ topology API for tests

    def add_account(self, name: str, role_id: str, *, domain_id: str | None = None, username: str | None = None,
                    firstname: str = "", lastname: str = "", email: str = "", account_id: str | None = None,
                    user_id: str | None = None) -> Account:
        """AccountManagerImpl.createUserAccount: the account, its first user and (in a zone with
        security groups) its `default` security group (SecurityGroupManagerImpl)."""
        with self.lock:
            acc = Account(account_id or (seeded_id("account", name) if self._seeding else new_id()), name,
                          domain_id or seeded_id("domain", "ROOT"), role_id, created=cs_time())
            self.accounts[acc.id] = acc
            user = User(user_id or self._oid("user", username or name), username or name, acc.id, firstname,
                        lastname, email, created=cs_time())
            self.users[user.id] = user
            group = SecurityGroup(self._oid("securitygroup", name), "default", acc.name, acc.domain_id,
                                  "Default Security Group")
            self.security_groups[group.id] = group
            return acc

    def user_by_api_key(self, api_key: str) -> tuple[str, str] | None:
        """(user uuid, secret key) of the user an API key belongs to (AccountDao.findUserAccountByApiKey)."""
        with self.lock:
            return next(((uid, secret) for uid, (key, secret) in self.user_keys.items() if key == api_key), None)

    def account_by_name(self, name: str, domain_id: str | None = None) -> Account | None:
        with self.lock:
            return next((a for a in self.accounts.values()
                         if a.name == name and (domain_id is None or a.domain_id == domain_id)), None)

    def _next_guest_address(self) -> tuple[str, str]:
        """The next free address on the guest network (`guest_network`.0.1 onwards, 127.10.0.1 by
        default) and a MAC made from it."""
        used = {vm.ip_address for vm in self.vms.values()}
        n = 0
        while True:
            ip = f"{self.guest_network}.{n // 254}.{n % 254 + 1}"
            if ip not in used:
                octets = [int(x) for x in ip.split(".")]
                return ip, "1e:00:" + ":".join(f"{o:02x}" for o in octets)
            n += 1

    def add_zone(self, name: str) -> Zone:
        with self.lock:
            zone = Zone(self._oid("zone", name), name)
            self.zones[zone.id] = zone
            return zone

    def add_cluster(self, name: str, zone_id: str) -> Cluster:
        with self.lock:
            cluster = Cluster(self._oid("cluster", name), name, zone_id)
            self.clusters[cluster.id] = cluster
            return cluster

    def _default(self, table: dict[str, _T]) -> _T:
        return next(iter(table.values()))

    def add_host(
        self,
        name: str,
        ip_address: str = "127.0.0.1",
        *,
        sp_ourid: int | None = None,
        cluster_id: str | None = None,
        details: dict[str, str] | None = None,
        state: str = "Up",
        parent: str | None = None,
    ) -> Host:
        with self.lock:
            cluster = self.clusters[cluster_id] if cluster_id else self._default(self.clusters)
            all_details = dict(details or {})
            if sp_ourid is not None:
                all_details["SP_OURID"] = str(sp_ourid)
            host = Host(self._oid("host", name), name, ip_address, cluster.id, cluster.zone_id,
                        state=state, details=all_details, parent=parent)
            self.hosts[host.id] = host
            return host

    def set_host_details(self, host_id: str, **details: str) -> Host:
        with self.lock:
            host = self.hosts[host_id]
            host.details.update(details)
            return host

    def host_connected(self, host_id: str, parent: str) -> Host:
        """What CloudStack's StorPool host listener does with the driver's answer when a host
        connects: it writes the client id into `host.parent` through the host DAO (there is no
        API for it), only while the host has none (StorPoolHostListener.hostConnect:
        `host.getParent() == null`)."""
        with self.lock:
            host = self.hosts[host_id]
            if host.parent is None:
                host.parent = parent
            return host

    def cluster_details(self, cluster_id: str) -> dict[str, str]:
        """The cluster's `cluster_details` rows (ClusterDetailsDao.findDetails). They hold the
        values of cluster-scoped settings (the cluster scope's config storage:
        updateConfiguration with `clusterid` writes here) and what plugins record directly."""
        with self.lock:
            return {name: value for (scope, sid, name), value in self.scoped_values.items()
                    if scope == "cluster" and sid == cluster_id}

    def set_cluster_detail(self, cluster_id: str, name: str, value: str | None) -> None:
        """ClusterDetailsDao.persist / update: a row written by code, not by the API (no event,
        no check of the value). None is a NULL value: the API never shows it and a setting reads
        its global value instead, as if the row were not there, so none is kept."""
        with self.lock:
            if cluster_id not in self.clusters:
                raise KeyError(cluster_id)
            if value is None:
                self.scoped_values.pop(("cluster", cluster_id, name), None)
            else:
                self.scoped_values[("cluster", cluster_id, name)] = value

    def set_host_state(self, host_id: str, state: str) -> Host:
        with self.lock:
            self.hosts[host_id].state = state
            return self.hosts[host_id]

    def delete_host(self, host_id: str) -> None:
        with self.lock:
            del self.hosts[host_id]

    def add_storage_pool(self, name: str, zone_id: str | None = None, *, pool_id: str | None = None,
                         **kw: Any) -> StoragePool:
        """`pool_id` as CloudStack stores it; the Java plugin's pools have `<SP_TEMPLATE>;<uuid>`."""
        with self.lock:
            zone = zone_id or self._default(self.zones).id
            if kw.get("provider", "StorPool") == "StorPool":
                kw.setdefault("tags", name)  # StorPoolPrimaryDataStoreLifeCycle.initialize: no tags -> the name
            pool = StoragePool(pool_id or self._oid("pool", name), name, zone, **kw)
            self.storage_pools[pool.id] = pool
            return pool

    def add_template(
        self,
        name: str,
        size: int,
        *,
        fmt: str = "QCOW2",
        zone_id: str | None = None,
        template_id: str | None = None,
        ready: bool = True,
        url: str = "",
        project_id: str = "",
    ) -> Template:
        with self.lock:
            zone = zone_id or self._default(self.zones).id
            tid = template_id or self._oid("template", name)
            tpl = Template(tid, name, size, format=fmt, zone_id=zone, ready=ready, url=url, created=cs_time(),
                           project_id=project_id)
            self.templates[tpl.id] = tpl
            self.add_event("TEMPLATE.CREATE", f"Successfully registered template {name}", tpl.id, "Template")
            return tpl

    def delete_template(self, template_id: str, *, forced: bool = False) -> None:
        """CloudStack's rule: a template in use by a VM is deleted only when forced."""
        with self.lock:
            tpl = self._need(self.templates, "id", template_id)
            users = [vm.name for vm in self.vms.values() if vm.template_id == template_id]
            if users and not forced:
                raise ParamError(
                    f"Unable to delete template with id: {template_id} because VM instances: "
                    f"[{', '.join(users)}] are using it."
                )
            del self.templates[template_id]
            self.add_event("TEMPLATE.DELETE", f"Deleting template {tpl.name}", template_id, "Template")

    def add_disk_offering(self, name: str, **kw: Any) -> DiskOffering:
        with self.lock:
            off = DiskOffering(self._oid("diskoffering", name), name, **kw)
            self.disk_offerings[off.id] = off
            return off

    def add_service_offering(self, name: str, **kw: Any) -> ServiceOffering:
        with self.lock:
            off = ServiceOffering(self._oid("serviceoffering", name), name, **kw)
            self.service_offerings[off.id] = off
            return off

    def add_vm(
        self,
        name: str,
        *,
        template_id: str | None = None,
        service_offering_id: str | None = None,
        host_id: str | None = None,
        state: str = "Running",
        storage_id: str | None = None,
        root_size: int | None = None,
        account: str = "admin",
        tags: dict[str, str] | None = None,
        vm_id: str | None = None,
    ) -> VirtualMachine:
        """A VM with its ROOT volume (on `storage_id`, else the first pool)."""
        with self.lock:
            tpl = self.templates[template_id] if template_id else self._default(self.templates)
            off = (self.service_offerings[service_offering_id] if service_offering_id
                   else self._default(self.service_offerings))
            self._instance_counter += 1
            vid = vm_id or self._oid("vm", name)
            running = state == "Running"
            vm = VirtualMachine(
                vid, name, f"i-2-{self._instance_counter}-VM", tpl.zone_id, tpl.id, off.id,
                state=state, host_id=host_id if running else None, last_host_id=host_id,
                tags=dict(tags or {}), account=account, created=cs_time(),
            )
            vm.ip_address, vm.mac_address = self._next_guest_address()
            self.vms[vm.id] = vm
            pool = storage_id or (self._default(self.storage_pools).id if self.storage_pools else None)
            self.add_volume(
                f"ROOT-{self._instance_counter}", root_size or tpl.size, vm_id=vm.id, type="ROOT",
                storage_id=pool, device_id=0, min_iops=off.min_iops, max_iops=off.max_iops, account=account,
            )
            self.add_event("VM.CREATE", f"Successfully created VM {name}", vm.id, "VirtualMachine")
            return vm

    def delete_vm(self, vm_id: str, *, expunge: bool = True) -> None:
        """Destroy (and expunge) a VM: its ROOT volume goes, data volumes are detached."""
        with self.lock:
            vm = self.vms.pop(vm_id)
            for vol in list(self.volumes.values()):
                if vol.vm_id == vm_id:
                    if vol.type == "ROOT" and expunge:
                        del self.volumes[vol.id]
                    else:
                        vol.vm_id = None
                        vol.device_id = None
            self.add_event("VM.DESTROY", f"Destroyed VM {vm.name}", vm_id, "VirtualMachine")

    def start_vm(self, vm_id: str, host_id: str | None = None) -> VirtualMachine:
        with self.lock:
            vm = self.vms[vm_id]
            target = host_id or vm.last_host_id or self._default(self.hosts).id
            vm.state, vm.host_id, vm.last_host_id = "Running", target, target
            self.add_event("VM.START", f"Started VM {vm.name}", vm_id, "VirtualMachine")
            return vm

    def stop_vm(self, vm_id: str) -> VirtualMachine:
        with self.lock:
            vm = self.vms[vm_id]
            if vm.host_id:
                vm.last_host_id = vm.host_id
            vm.state, vm.host_id = "Stopped", None
            self.add_event("VM.STOP", f"Stopped VM {vm.name}", vm_id, "VirtualMachine")
            return vm

    def move_vm(self, vm_id: str, host_id: str) -> VirtualMachine:
        """Live migration (running VM: VirtualMachineManagerImpl.migrate sets the last host to the
        source before the move) or a new last host (stopped VM)."""
        with self.lock:
            vm = self.vms[vm_id]
            self._need(self.hosts, "hostid", host_id)
            if vm.state == "Running":
                vm.last_host_id, vm.host_id = vm.host_id, host_id
            else:
                vm.last_host_id = host_id
            self.add_event("VM.MIGRATE", f"Migrated VM {vm.name}", vm_id, "VirtualMachine")
            return vm

    def hypervisor_migrate(self, vm_id: str, host_id: str) -> None:
        """MigrateCommand's move of the running guest by the hypervisors: nothing to record
        here (the VM's host changes once the command answers), unless a pending entry of
        `migration_faults` fails it, the guest left on its source."""
        with self.lock:
            self._need(self.hosts, "hostid", host_id)
            if self.migration_faults:
                raise ApiError(self.migration_faults.pop(0))

    def set_vm_tags(self, vm_id: str, tags: dict[str, str]) -> VirtualMachine:
        """Replace the VM's resource tags (an empty dict removes them all)."""
        with self.lock:
            vm = self.vms[vm_id]
            vm.tags = dict(tags)
            return vm

    def set_vm_tag(self, vm_id: str, key: str, value: str | None) -> VirtualMachine:
        with self.lock:
            vm = self.vms[vm_id]
            if value is None:
                vm.tags.pop(key, None)
            else:
                vm.tags[key] = value
            return vm

    def add_volume(
        self,
        name: str,
        size: int,
        *,
        vm_id: str | None = None,
        type: str = "DATADISK",
        storage_id: str | None = None,
        device_id: int | None = None,
        disk_offering_id: str | None = None,
        min_iops: int | None = None,
        max_iops: int | None = None,
        path: str | None = None,
        account: str = "admin",
        volume_id: str | None = None,
    ) -> Volume:
        with self.lock:
            zone = self.vms[vm_id].zone_id if vm_id else self._default(self.zones).id
            if vm_id and device_id is None:
                used = {v.device_id for v in self.volumes.values() if v.vm_id == vm_id}
                device_id = next(i for i in range(1, 64) if i not in used and i != 3)
            if disk_offering_id and max_iops is None:
                off = self.disk_offerings[disk_offering_id]
                min_iops, max_iops = off.min_iops, off.max_iops
            vol = Volume(
                volume_id or self._oid("volume", name), name, zone, size, type=type, path=path, storage_id=storage_id,
                vm_id=vm_id, device_id=device_id, disk_offering_id=disk_offering_id,
                min_iops=min_iops, max_iops=max_iops, account=account, created=cs_time(),
            )
            self.volumes[vol.id] = vol
            return vol

    def update_volume(self, volume_id: str, **changes: Any) -> Volume:
        with self.lock:
            vol = self.volumes[volume_id]
            for key, value in changes.items():
                if not hasattr(vol, key):
                    raise AttributeError(key)
                setattr(vol, key, value)
            return vol

    def delete_volume(self, volume_id: str) -> None:
        with self.lock:
            del self.volumes[volume_id]

    def add_snapshot(self, volume_id: str, name: str | None = None, **kw: Any) -> Snapshot:
        with self.lock:
            vol = self.volumes[volume_id]
            snap = Snapshot(new_id(), name or f"{vol.name}_snap", volume_id, vol.zone_id, created=cs_time(), **kw)
            self.snapshots[snap.id] = snap
            return snap

    def delete_snapshot(self, snapshot_id: str) -> None:
        with self.lock:
            del self.snapshots[snapshot_id]

    def add_vm_snapshot(self, vm_id: str, name: str, **kw: Any) -> VMSnapshot:
        with self.lock:
            vm = self.vms[vm_id]
            for other in self.vm_snapshots.values():
                if other.vm_id == vm_id:
                    other.current = False
            snap = VMSnapshot(new_id(), name, vm_id, vm.zone_id, created=cs_time(), **kw)
            self.vm_snapshots[snap.id] = snap
            return snap

    def delete_vm_snapshot(self, vm_snapshot_id: str) -> None:
        with self.lock:
            del self.vm_snapshots[vm_snapshot_id]

    def add_event(
        self,
        type: str,
        description: str,
        resource_id: str | None = None,
        resource_type: str | None = None,
        *,
        level: str = "INFO",
        created: float | None = None,
    ) -> Event:
        with self.lock:
            event = Event(new_id(), type, description, created if created is not None else time.time(),
                          level=level, resource_id=resource_id, resource_type=resource_type)
            self.events[event.id] = event
            return event

    # ------------------------------------------------------------------ configuration

    def register_setting(
        self,
        name: str,
        default: str | None,
        *,
        scope: str = "global",
        category: str = "Advanced",
        description: str = "",
        dynamic: bool = True,
        type: str = "String",
        component: str = "management-server",
    ) -> ConfigEntry:
        if type not in _JAVA_TYPES:
            raise ValueError(f"{name}: {type!r} is not a ConfigKey type ({', '.join(_JAVA_TYPES)})")
        with self.lock:
            entry = ConfigEntry(name, default, category, description, dynamic, scope, type, value=default,
                                component=component)
            self.configs[name] = entry
            return entry

    def unregister_setting(self, name: str) -> None:
        """As if the plugin defining `name` were not installed."""
        with self.lock:
            self.configs.pop(name, None)
            for key in [k for k in self.scoped_values if k[2] == name]:
                del self.scoped_values[key]

    def _scope_id_known(self, scope: str, scope_id: str, param: str) -> None:
        """The API layer translates every scope uuid before the command runs."""
        tables: dict[str, Any] = {
            "zone": self.zones, "cluster": self.clusters, "storagepool": self.storage_pools,
            "account": self.account_ids(), "domain": self.domains,
        }
        table = tables.get(scope)
        if table is not None and scope_id not in table:
            raise no_entity(param, scope_id)

    def config_value(self, name: str, scope: str = "global", scope_id: str | None = None) -> str | None:
        """ConfigKey.valueIn(): the scope's own value, else the global value."""
        with self.lock:
            entry = self.configs[name]
            if scope != "global" and scope_id is not None:
                scoped = self.scoped_values.get((scope, scope_id, name))
                if scoped is not None:
                    return scoped
            return entry.value

    def set_configuration(
        self, name: str, value: str | None, scope: str = "global", scope_id: str | None = None,
        *, param: str | None = None,
    ) -> ConfigEntry:
        """updateConfiguration's rules (ConfigurationManagerImpl), in CloudStack's order.

        Unknown name: "... doesn't exist". No value: nothing changes. The value is trimmed; empty
        or "null" means no value (NULL globally, "" for a scope object). A scope other than the
        key's own is refused; the value must parse as the key's Java type (Booleans in any case,
        stored lower-case; Integer/Long within Java's range; finite Doubles).
        """
        with self.lock:
            entry = self.configs.get(name)
            if entry is None:
                raise ParamError(f"Config parameter with name {name} doesn't exist")
            if value is None:
                return entry
            if scope != "global":
                assert scope_id is not None
                self._scope_id_known(scope, scope_id, param or "id")
            text: str | None = value.strip()
            if text == "" or text == "null":
                text = None if scope == "global" else ""
            if scope != "global" and entry.scope != scope:
                raise ParamError(f"Invalid scope id provided for the parameter {name}")
            if text is not None and text != "":
                if not _valid_java_value(text, entry.type):
                    raise ParamError(f"Value [{text}] is not a valid [class java.lang.{entry.type}].")
                if entry.type == "Boolean":
                    text = text.lower()
            if scope == "global":
                entry.value = text
            else:
                assert scope_id is not None
                self.scoped_values[(scope, scope_id, name)] = text or ""
            self.add_event("CONFIGURATION.VALUE.EDIT", f"Value of {name} changed", None, "Configuration")
            return entry

    # ------------------------------------------------------------------ async jobs

    def inject_job_failure(self, command: str, errortext: str) -> None:
        """Make the next async job of `command` fail with `errortext` (errorcode 530)."""
        with self.lock:
            self._job_failures.setdefault(command.lower(), []).append(errortext)

    def run_job(
        self,
        command: str,
        work: Callable[[], dict[str, Any]],
        *,
        instance_type: str | None = None,
        instance_id: str | None = None,
    ) -> Job:
        """Run `work` now, reveal its outcome through queryAsyncJobResult after job_delay.

        A failure is reported as ApiAsyncJobDispatcher does: an ExceptionResponse with the error
        code (431 for a bad parameter, 530 otherwise) and text, and no cserrorcode.
        """
        with self.lock:
            now = time.time()
            injected = self._job_failures.get(command.lower())
            status, code, result = 1, 0, {}
            if injected:
                text = injected.pop(0)
                status, code, result = 2, 530, {"errorcode": 530, "errortext": text}
            else:
                try:
                    result = work()
                except ApiError as exc:
                    status, code = 2, 431 if exc.code == 431 else 530
                    result = {"errorcode": code, "errortext": exc.text}
            job = Job(new_id(), command, now, now + self.job_delay, status, code, result,
                      instance_type, instance_id)
            self.jobs[job.id] = job
            return job

    def add_alert(self, alert_type: int, name: str, description: str, zone_id: str | None) -> Alert:
        with self.lock:
            alert = Alert(new_id(), alert_type, name, description, zone_id, time.time())
            self.alerts[alert.id] = alert
            self.add_event("ALERT.GENERATE", f"Generating alert of type {alert_type}; name {name}")
            return alert


_RESERVED_ALERT_TYPES = {
    0: "ALERT.MEMORY", 1: "ALERT.CPU", 2: "ALERT.STORAGE", 3: "ALERT.STORAGE.ALLOCATED",
    6: "ALERT.COMPUTE.HOST", 7: "ALERT.USERVM", 11: "ALERT.STORAGE.MISC", 13: "ALERT.MANAGEMENT",
}
"""A few of CloudStack's built-in alert types: a custom alert may not reuse them under another name."""


def check_alert_type(alert_type: int, name: str) -> None:
    builtin = _RESERVED_ALERT_TYPES.get(alert_type)
    if builtin is not None and builtin.lower() != name.lower():
        raise ParamError(f"There is a default alert having type {alert_type} and name {builtin}")


_JAVA_TYPES = ("Boolean", "Integer", "Long", "Double", "String")
_LEGACY_TYPES = {"bool": "Boolean", "int": "Integer", "float": "Double", "str": "String"}
"""Type names of state files written before the table followed CloudStack's Java types."""
_JAVA_INTEGER = re.compile(r"[+-]?[0-9]+")
_JAVA_DOUBLE = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?[fFdD]?")
_RANGES = {"Integer": (-(2**31), 2**31 - 1), "Long": (-(2**63), 2**63 - 1)}


def _valid_java_value(text: str, java_type: str) -> bool:
    """ConfigurationValueValidator.validateValueType: Boolean.parseBoolean's words, Integer.parseInt /
    Long.parseLong (decimal, in range), Double.parseDouble except infinities (and NaN)."""
    if java_type == "Boolean":
        return text.lower() in ("true", "false")
    if java_type in _RANGES:
        low, high = _RANGES[java_type]
        return bool(_JAVA_INTEGER.fullmatch(text)) and low <= int(text) <= high
    if java_type == "Double":
        return bool(_JAVA_DOUBLE.fullmatch(text)) and math.isfinite(float(text.rstrip("fFdD")))
    return True
