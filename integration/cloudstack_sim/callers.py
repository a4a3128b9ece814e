"""Who is calling: the user whose API key signed the request, and what that user may do.

CloudStack runs every command in a CallContext naming the calling user and account
(ApiServer.verifyRequest finds the user by the request's API key, checks the signature with that
user's secret, then whether the user's role has the command). A root admin sees and acts on every
account's resources; a user of the `User` role only on its own account's (AccountManagerImpl
.checkAccess with DomainChecker; BaseListCmd listings scoped by buildACLSearchParameters).

The caller is held per request in a context variable: the HTTP handler sets it before the command
runs and resets it after. Work of an async job runs in its own thread and sees the admin; what a
job needs of its caller (the owner of what it makes) is taken before the job starts, as
CloudStack's create commands take their owner in `create()`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from integration.cloudstack_sim import model as m


@dataclass(frozen=True)
class Caller:
    """The calling user and its account (CallContext's calling user and account)."""

    user_id: str
    account: str
    """The account's name: what the simulator's resources record as their owner."""
    account_id: str
    domain_id: str
    role_type: str
    """RoleType of the account's role: Admin, ResourceAdmin, DomainAdmin or User."""

    @property
    def is_root_admin(self) -> bool:
        return self.role_type == "Admin"


ADMIN = Caller(m.seeded_id("user", "admin"), "admin", m.seeded_id("account", "admin"),
               m.seeded_id("domain", "ROOT"), "Admin")
"""The root admin the stack's own keys belong to (and the caller of work outside a request)."""

_current: ContextVar[Caller] = ContextVar("cloudstack_sim_caller", default=ADMIN)


def current() -> Caller:
    return _current.get()


@contextmanager
def acting_as(caller: Caller) -> Iterator[Caller]:
    token = _current.set(caller)
    try:
        yield caller
    finally:
        _current.reset(token)


def caller_of(model: m.CloudStackModel, user_id: str) -> Caller | None:
    """The caller a user is, from its account; None when the user or its account is gone."""
    with model.lock:
        user = model.users.get(user_id)
        acc = model.accounts.get(user.account_id) if user is not None else None
        if user is None or acc is None:
            return None
        role = m.role_by_id(acc.role_id) or m.ROLES[3]
        return Caller(user.id, acc.name, acc.id, acc.domain_id, role.type)


ADMIN_ONLY = frozenset({
    # org.apache.cloudstack.api.command.admin.*: a root admin's commands (no User in `authorized`).
    "createAccount", "deleteAccount",
    "createDiskOffering", "createServiceOffering", "deleteDiskOffering", "deleteServiceOffering",
    "createStoragePool", "deleteStoragePool", "updateStoragePool", "listStoragePools",
    "listClusters", "listHosts", "findHostsForMigration",
    "listConfigurations", "updateConfiguration", "generateAlert", "listAlerts",
    "migrateVirtualMachine", "migrateVirtualMachineWithVolume",
})
"""The simulator's commands a user of the `User` role does not have: ApiServer refuses them while
verifying the request (the role's API checker), with the same 401 as an unknown command."""


def command_available(caller: Caller, command: str) -> bool:
    return caller.is_root_admin or command not in ADMIN_ONLY


def sees(account: str) -> bool:
    """Whether the caller may see a resource of `account` (a root admin sees every account's)."""
    caller = current()
    return caller.is_root_admin or caller.account == account


def check_access(account: str, resource_id: str) -> None:
    """AccountManagerImpl.checkAccess for a resource the caller acts on: a user only on its own
    account's (DomainChecker: PermissionDeniedException, 531)."""
    caller = current()
    if not caller.is_root_admin and caller.account != account:
        raise m.PermissionDenied(f"Account {caller.account} does not have permission to operate with resource "
                                 f"{resource_id}")


def owned_by(model: m.CloudStackModel, value: str) -> str | None:
    """The owning account of the resource a uuid names, if it is an account's resource (VM,
    volume, snapshot, VM snapshot, a template that is not public)."""
    with model.lock:
        for table in (model.vms, model.volumes, model.snapshots, model.vm_snapshots):
            obj = table.get(value)
            if obj is not None:
                return str(obj.account)
        tpl = model.templates.get(value)
        if tpl is not None and not tpl.public:
            return tpl.account
    return None


def check_entities(model: m.CloudStackModel, params: dict[str, str] | object) -> None:
    """ParamProcessWorker's access check of a command's entity parameters: every uuid given that
    names an account's resource must be one the caller may use."""
    if current().is_root_admin or not isinstance(params, dict):
        return
    for value in params.values():
        for one in str(value).split(","):
            owner = owned_by(model, one.strip())
            if owner is not None:
                check_access(owner, one.strip())
