"""Domains, accounts, users, roles and security groups: what a test's set-up asks the management
server before it makes anything (CloudStack's DomainManagerImpl, AccountManagerImpl,
RoleManagerImpl, SecurityGroupManagerImpl and their command and response classes).

The simulator has one domain, ROOT. An account belongs to it, has a role (a default role, by
uuid or by its internal id, as the API layer takes either for a uuid parameter), a first user and
a `default` security group. Deleting an account removes what it owns, in AccountManagerImpl's
order (VM snapshots, VMs expunged, volumes, snapshots, templates), through the storage plugin
like any other removal, as an async job.

A user's API key pair is made by `registerUserKeys` and read back by `getUserKeys`
(AccountManagerImpl.createApiKeyAndSecretKey / getKeys); requests signed with it run as that user
(callers.py). A user of the `User` role lists only its own account and users.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Callable
from typing import Any

from integration.cloudstack_sim import callers
from integration.cloudstack_sim import model as m
from integration.cloudstack_sim import orchestrator as orch
from integration.cloudstack_sim.params import Params, flag, map_param, need, required
from integration.cloudstack_sim.storage_commands import _async

Item = dict[str, Any]
ROOT_DOMAIN = m.seeded_id("domain", "ROOT")


# ---------------------------------------------------------------------------- renderers


def domain_item(model: m.CloudStackModel, domain_id: str) -> Item:
    """DomainResponse: ROOT is level 0, path ROOT, no parent."""
    return {"id": domain_id, "name": model.domains[domain_id], "level": 0, "haschild": False, "path": "ROOT",
            "state": "Active", "hasannotations": False}


def _role(account: m.Account) -> m.Role:
    return m.role_by_id(account.role_id) or m.ROLES[3]


def account_item(model: m.CloudStackModel, acc: m.Account) -> Item:
    """AccountResponse (ApiResponseHelper.createUserAccountResponse): type from the role, the
    account's users in `user`, counts of what it owns."""
    role = _role(acc)
    vms = [v for v in model.vms.values() if v.account == acc.name]
    return _opt({
        "id": acc.id, "name": acc.name, "accounttype": m.ACCOUNT_TYPES[role.type], "roleid": role.id,
        "roletype": role.type, "rolename": role.name, "domainid": acc.domain_id,
        "domain": model.domains.get(acc.domain_id), "domainpath": "ROOT", "state": acc.state,
        "created": acc.created, "networkdomain": acc.network_domain, "isdefault": acc.name in ("system", "admin"),
        "vmtotal": len(vms), "vmrunning": sum(v.state == "Running" for v in vms),
        "vmstopped": sum(v.state == "Stopped" for v in vms),
        "volumetotal": sum(v.account == acc.name for v in model.volumes.values()),
        "user": [user_item(model, u) for u in model.users.values() if u.account_id == acc.id],
    })


def user_item(model: m.CloudStackModel, user: m.User) -> Item:
    """UserResponse, without keys (none are made for users here)."""
    acc = model.accounts[user.account_id]
    role = _role(acc)
    return _opt({
        "id": user.id, "username": user.username, "firstname": user.firstname, "lastname": user.lastname,
        "email": user.email, "created": user.created, "state": user.state, "account": acc.name,
        "accountid": acc.id, "accounttype": m.ACCOUNT_TYPES[role.type], "roleid": role.id, "roletype": role.type,
        "rolename": role.name, "domainid": acc.domain_id, "domain": model.domains.get(acc.domain_id),
        "timezone": user.timezone, "usersource": "native", "isdefault": acc.name in ("system", "admin"),
        "iscallerchilddomain": False, "is2faenabled": False,
    })


def role_item(role: m.Role) -> Item:
    return {"id": role.id, "name": role.name, "type": role.type, "description": role.description,
            "isdefault": True, "ispublic": True, "state": "ENABLED"}


def security_group_item(model: m.CloudStackModel, group: m.SecurityGroup) -> Item:
    vm_ids = [v.id for v in model.vms.values() if v.account == group.account]
    return {"id": group.id, "name": group.name, "description": group.description, "account": group.account,
            "domainid": group.domain_id, "domain": model.domains.get(group.domain_id), "domainpath": "ROOT",
            "ingressrule": list(group.ingress), "egressrule": list(group.egress), "tags": [],
            "virtualmachinecount": len(vm_ids), "virtualmachineids": vm_ids}


def _opt(item: Item) -> Item:
    return {k: v for k, v in item.items() if v is not None}


# ---------------------------------------------------------------------------- lists


def list_domains(model: m.CloudStackModel, p: Params) -> list[Item]:
    if p.get("id") and p["id"] not in model.domains:
        raise m.no_entity("id", p["id"])
    return [domain_item(model, d) for d, name in model.domains.items()
            if (not p.get("id") or p["id"] == d) and (not p.get("name") or p["name"] == name)
            and (not p.get("level") or p["level"] == "0")]


def _account_named(model: m.CloudStackModel, p: Params) -> m.Account | None:
    """`account` + `domainid` name an account (BaseListAccountResourcesCmd); an unknown one is
    refused as AccountManagerImpl does."""
    name = p.get("account")
    if not name:
        return None
    domain = p.get("domainid") or ROOT_DOMAIN
    if domain not in model.domains:
        raise m.no_entity("domainid", domain)
    acc = model.account_by_name(name, domain)
    if acc is None:
        raise m.ParamError(f"Unable to find account {name} in domain id={domain}")
    return acc


def list_accounts(model: m.CloudStackModel, p: Params) -> list[Item]:
    if p.get("id") and p["id"] not in model.accounts:
        raise m.no_entity("id", p["id"])
    out = []
    for acc in model.accounts.values():
        if acc.name == "system":
            continue  # the system account is never listed
        if (p.get("id") and acc.id != p["id"]) or (p.get("name") and acc.name != p["name"]):
            continue
        if p.get("domainid") and acc.domain_id != p["domainid"]:
            continue
        if p.get("accounttype") and str(m.ACCOUNT_TYPES[_role(acc).type]) != p["accounttype"]:
            continue
        if not callers.sees(acc.name):
            continue  # a user's listing holds its own account only
        out.append(account_item(model, acc))
    return out


def list_users(model: m.CloudStackModel, p: Params) -> list[Item]:
    if p.get("id") and p["id"] not in model.users:
        raise m.no_entity("id", p["id"])
    acc = _account_named(model, p)
    out = []
    for user in model.users.values():
        owner = model.accounts[user.account_id]
        if owner.name == "system":
            continue
        if (p.get("id") and user.id != p["id"]) or (p.get("username") and user.username != p["username"]):
            continue
        if acc is not None and owner.id != acc.id:
            continue
        if p.get("domainid") and owner.domain_id != p["domainid"]:
            continue
        if not callers.sees(owner.name):
            continue  # a user's listing holds its own account's users only
        out.append(user_item(model, user))
    return out


def list_roles(model: m.CloudStackModel, p: Params) -> list[Item]:
    if p.get("id") and m.role_by_id(p["id"]) is None:
        raise m.no_entity("id", p["id"])
    found = [r for r in m.ROLES if (not p.get("id") or m.role_by_id(p["id"]) == r)
             and (not p.get("name") or p["name"] == r.name) and (not p.get("type") or p["type"] == r.type)]
    if p.get("keyword"):
        found = [r for r in found if p["keyword"].lower() in r.name.lower()]
    return [role_item(r) for r in found]


def list_security_groups(model: m.CloudStackModel, p: Params) -> list[Item]:
    if p.get("id") and p["id"] not in model.security_groups:
        raise m.no_entity("id", p["id"])
    acc = _account_named(model, p)
    out = []
    for group in model.security_groups.values():
        if p.get("id") and group.id != p["id"]:
            continue
        if p.get("securitygroupname") and group.name != p["securitygroupname"]:
            continue
        if acc is not None and group.account != acc.name:
            continue
        if acc is None and not p.get("id") and not flag(p, "listall") and group.account != callers.current().account:
            continue  # an admin sees other accounts' groups with listall=true or account=...
        if not callers.sees(group.account):
            continue  # a user sees its own account's groups only
        if p.get("virtualmachineid") and not any(v.id == p["virtualmachineid"] and v.account == group.account
                                                 for v in model.vms.values()):
            continue
        out.append(security_group_item(model, group))
    return out


LISTS: dict[str, tuple[str, Callable[[m.CloudStackModel, Params], list[Item]]]] = {
    "listDomains": ("domain", list_domains),
    "listAccounts": ("account", list_accounts),
    "listUsers": ("user", list_users),
    "listRoles": ("role", list_roles),
    "listSecurityGroups": ("securitygroup", list_security_groups),
}


# ---------------------------------------------------------------------------- accounts


def create_account(model: m.CloudStackModel, p: Params) -> Item:
    """CreateAccountCmd (synchronous): AccountManagerImpl.createUserAccount. The account is named
    after the user unless `account` is given; the role comes from `roleid`, else from the
    deprecated `accounttype`; a name taken in the domain is refused."""
    required("createAccount", p, "email", "firstname", "lastname", "password", "username")
    domain = p.get("domainid") or ROOT_DOMAIN
    if domain not in model.domains:
        raise m.no_entity("domainid", domain)
    role: m.Role | None = None
    if p.get("roleid"):
        role = m.role_by_id(p["roleid"])
        if role is None:
            raise m.no_entity("roleid", p["roleid"])
    elif p.get("accounttype"):
        wanted = p["accounttype"]
        by_type = {str(t): name for name, t in m.ACCOUNT_TYPES.items()}
        if wanted not in by_type:
            raise m.ParamError(f"Invalid account type {wanted} given; unable to create user")
        role = next(r for r in m.ROLES if r.type == by_type[wanted])
    else:
        raise m.ParamError("Neither role ID nor role type provided, unable to create account")
    name = p.get("account") or p["username"]
    with model.lock:
        if any(u.username == p["username"] and model.accounts[u.account_id].domain_id == domain
               for u in model.users.values()):
            raise m.ParamError(f"The user {p['username']} already exists in domain {domain}")
        if model.account_by_name(name, domain) is not None:
            raise m.ParamError(f"The specified account: {name} already exists")
        acc = model.add_account(name, role.id, domain_id=domain, username=p["username"],
                                firstname=p["firstname"], lastname=p["lastname"], email=p["email"],
                                account_id=p.get("accountid") or None, user_id=p.get("userid") or None)
        model.add_event("ACCOUNT.CREATE", f"Successfully completed creating Account. Account Name: {name}",
                        acc.id, "Account")
        return {"account": account_item(model, acc)}


def delete_account(model: m.CloudStackModel, p: Params) -> Item:
    """DeleteAccountCmd (async): AccountManagerImpl.deleteAccount -> cleanupAccount. The default
    accounts cannot go; the rest goes with everything it owns, each removal through the storage
    plugin as a user's own removal would."""
    required("deleteAccount", p, "id")
    acc = need(model.accounts, p, "id")
    if acc.name in ("system", "admin"):
        raise m.ParamError(f"Account id : {acc.id} is a system account, delete is not allowed")

    def work() -> Item:
        _cleanup_account(model, acc)
        return {"success": True}

    return _async(model, "deleteAccount", work, instance_type="Account", instance_id=acc.id, create=False)


def _cleanup_account(model: m.CloudStackModel, acc: m.Account) -> None:
    with model.lock:
        vm_snapshots = [s.id for s in model.vm_snapshots.values() if s.account == acc.name]
        vms = [v.id for v in model.vms.values() if v.account == acc.name]
    for sid in vm_snapshots:
        orch.delete_vm_snapshot(model, sid)
    for vid in vms:
        with model.lock:
            running = model.vms[vid].state == "Running"
        if running:
            orch.stop_vm(model, vid)
        orch.destroy_vm(model, vid, expunge=True)
    with model.lock:
        volumes = [v.id for v in model.volumes.values() if v.account == acc.name]
    for vol_id in volumes:
        with model.lock:
            vol = model.volumes.get(vol_id)
            attached = vol is not None and vol.vm_id
        if vol is None:
            continue
        if attached:
            orch.detach_volume(model, vol_id)
        orch.delete_volume(model, vol_id)
    with model.lock:
        snapshots = [s.id for s in model.snapshots.values() if s.account == acc.name]
        templates = [t.id for t in model.templates.values() if t.account == acc.name]
    for sid in snapshots:
        orch.delete_snapshot(model, sid)
    for tid in templates:
        orch.delete_template(model, tid, forced=True)
    with model.lock:
        for table in (model.users, model.security_groups):
            for key in [k for k, o in table.items() if getattr(o, "account_id", None) == acc.id
                        or getattr(o, "account", None) == acc.name]:
                del table[key]
                model.user_keys.pop(key, None)  # a removed user's keys sign nothing any more
        model.accounts.pop(acc.id, None)
        model.add_event("ACCOUNT.DELETE", f"Successfully completed deleting account. Account Id: {acc.id}",
                        acc.id, "Account")


# ---------------------------------------------------------------------------- security groups


def authorize_security_group_ingress(model: m.CloudStackModel, p: Params) -> Item:
    """AuthorizeSecurityGroupIngressCmd (async): SecurityGroupManagerImpl.authorizeSecurityGroupRule.
    The group by id, else by name within the owner's groups; a rule is a protocol with a port
    range (TCP/UDP) or ICMP type and code, for CIDRs or other accounts' groups; the job answers
    the group with its rules."""
    if p.get("securitygroupid"):
        group = need(model.security_groups, p, "securitygroupid")
    elif p.get("securitygroupname"):
        owner = _account_named(model, p)
        owner_name = owner.name if owner else "admin"
        group = next((g for g in model.security_groups.values()
                      if g.name == p["securitygroupname"] and g.account == owner_name), None)
        if group is None:
            raise m.ParamError(f"Unable to find security group {p['securitygroupname']} for account {owner_name}")
    else:
        raise m.ParamError("Either securityGroupId or securityGroupName is required by authorizeSecurityGroup"
                           "Ingress command")
    protocol = (p.get("protocol") or "all").lower()
    cidrs = [c.strip() for c in p.get("cidrlist", "").split(",") if c.strip()]
    groups = map_param(p, "usersecuritygrouplist")
    if not cidrs and not groups:
        raise m.ParamError("At least one cidr or at least one security group needs to be specified")
    rule: Item = {"protocol": protocol}
    if protocol in ("tcp", "udp"):
        start, end = p.get("startport"), p.get("endport")
        if not start or not end:
            raise m.ParamError(f"Invalid port range {start}:{end}")
        if not 0 <= int(start) <= int(end) <= 65535:
            raise m.ParamError(f"Invalid port range {start}:{end}")
        rule.update({"startport": int(start), "endport": int(end)})
    elif protocol == "icmp":
        icmp_type, icmp_code = p.get("icmptype", "-1"), p.get("icmpcode", "-1")
        if not -1 <= int(icmp_type) <= 255 or not -1 <= int(icmp_code) <= 255:
            raise m.ParamError(f"Invalid ICMP type/code specified, icmpType = {icmp_type} icmpCode = {icmp_code}")
        rule.update({"icmptype": int(icmp_type), "icmpcode": int(icmp_code)})
    elif protocol != "all":
        raise m.ParamError(f"Invalid protocol {protocol}")

    def work() -> Item:
        with model.lock:
            new = [{**rule, "ruleid": m.new_id(), "cidr": c, "tags": []} for c in cidrs]
            new += [{**rule, "ruleid": m.new_id(), "account": g.get("account"),
                     "securitygroupname": g.get("group"), "tags": []} for g in groups]
            for existing in new:
                same = {k: v for k, v in existing.items() if k not in ("ruleid", "tags")}
                if any({k: v for k, v in r.items() if k not in ("ruleid", "tags")} == same for r in group.ingress):
                    raise m.ParamError("Failed to authorize security group ingress rule(s): the rule exists")
            group.ingress.extend(new)
            return {"securitygroup": security_group_item(model, group)}

    return _async(model, "authorizeSecurityGroupIngress", work, instance_type="SecurityGroup",
                  instance_id=group.id, create=False)


# ---------------------------------------------------------------------------- API keys


def _new_key() -> str:
    """AccountManagerImpl.createUserApiKey / createUserSecretKey: an HmacSHA1 KeyGenerator key
    (64 random bytes), URL-safe base64 without padding."""
    return base64.urlsafe_b64encode(secrets.token_bytes(64)).rstrip(b"=").decode("ascii")


def _keys_user(model: m.CloudStackModel, p: Params, command: str) -> m.User:
    """The user whose keys a command reads or makes: it must exist, and the caller must have
    access to its account (checkAccess: a user only to its own)."""
    required(command, p, "id")
    user = need(model.users, p, "id")
    acc = model.accounts[user.account_id]
    if acc.name == "system":
        raise m.PermissionDenied(f"user id : {user.id} is system account, update is not allowed")
    callers.check_access(acc.name, acc.id)
    return user


def _userkeys(keys: tuple[str, str] | None) -> Item:
    """RegisterResponse, object name `userkeys`; no keys: an empty object (nulls are left out)."""
    return {"userkeys": {"apikey": keys[0], "secretkey": keys[1]} if keys else {}}


def register_user_keys(model: m.CloudStackModel, p: Params) -> Item:
    """RegisterCmd (`registerUserKeys`, synchronous): a new API key and secret key for the user,
    replacing any it had (the old key signs nothing any more)."""
    with model.lock:
        user = _keys_user(model, p, "registerUserKeys")
        keys = (_new_key(), _new_key())
        model.user_keys[user.id] = keys
        model.add_event("USER.UPDATE", f"Successfully completed updating user keys. User Id: {user.id}",
                        user.id, "User")
        return _userkeys(keys)


def get_user_keys(model: m.CloudStackModel, p: Params) -> Item:
    """GetUserKeysCmd (synchronous): the user's API key and secret key, none if it has none."""
    with model.lock:
        user = _keys_user(model, p, "getUserKeys")
        return _userkeys(model.user_keys.get(user.id))


COMMANDS: dict[str, Callable[[m.CloudStackModel, Params], Item]] = {
    "registerUserKeys": register_user_keys,
    "getUserKeys": get_user_keys,
    "createAccount": create_account,
    "deleteAccount": delete_account,
    "authorizeSecurityGroupIngress": authorize_security_group_ingress,
}
"""The commands here that change the world (server.py registers them)."""


