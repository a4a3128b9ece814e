"""Reading a command's parameters the way CloudStack's API layer does (ApiServlet,
ParamProcessWorker): required ones, booleans, integers, uuids that must name something, and the
`name[N].field` spelling of map and list-of-map parameters."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from integration.cloudstack_sim import callers
from integration.cloudstack_sim import model as m

Params = Mapping[str, str]


def required(cmd: str, params: Params, *names: str) -> None:
    for name in names:
        if not params.get(name):
            raise m.MissingParam(f"Unable to execute API command {cmd.lower()} due to missing parameter {name}")


def flag(params: Params, name: str) -> bool:
    return params.get(name, "").lower() == "true"


def int_param(params: Params, name: str, bits: int = 32) -> int | None:
    """An INTEGER (32 bits: Integer.parseInt) or LONG (64) parameter, as ParamProcessWorker parses it."""
    raw = params.get(name)
    if raw is None or raw == "":
        return None
    if not re.fullmatch(r"[+-]?[0-9]+", raw) or not -(2 ** (bits - 1)) <= int(raw) <= 2 ** (bits - 1) - 1:
        raise m.InvalidValue(f"Invalid parameter {name} value={raw} due to incorrect long value format, or entity "
                             "does not exist or due to incorrect parameter annotation for the field in api cmd "
                             "class.")
    return int(raw)


def need(table: Mapping[str, Any], params: Params, name: str) -> Any:
    """The object a uuid parameter names; an unknown uuid is refused before the command runs."""
    value = params.get(name, "")
    obj = table.get(value)
    if obj is None:
        raise m.no_entity(name, value)
    return obj


def map_param(params: Params, name: str) -> list[dict[str, str]]:
    """A MAP parameter, `name[N].field=value`, as one dict per index in index order (CloudStack
    keeps the entries of each index together; indexes need not start at 0)."""
    prefix = name + "["
    entries: dict[int, dict[str, str]] = {}
    for key, value in params.items():
        if not key.startswith(prefix) or "]." not in key:
            continue
        index, _, fld = key[len(prefix):].partition("].")
        if index.isdigit():
            entries.setdefault(int(index), {})[fld] = value
    return [entries[i] for i in sorted(entries)]


def details_param(params: Params, name: str) -> dict[str, str]:
    """A details map: entries given as `key`/`value` pairs or as `<key>=<value>` (both spellings
    CloudStack's commands accept)."""
    out: dict[str, str] = {}
    for entry in map_param(params, name):
        if "key" in entry:
            out[entry["key"]] = entry.get("value", "")
        else:
            out.update(entry)
    return out


def owner_of(model: m.CloudStackModel, params: Params) -> str:
    """The account a new resource belongs to (BaseAsyncCreateCmd's `account` + `domainid`, else the
    caller); an account the domain does not have is refused as AccountManagerImpl does, and a
    user naming another account is refused (AccountManagerImpl.finalizeOwner -> checkAccess)."""
    caller = callers.current()
    name = params.get("account")
    if not name:
        return caller.account
    if not caller.is_root_admin and name != caller.account:
        raise m.PermissionDenied(f"Account {caller.account} does not have permission to operate within account {name}")
    domain = params.get("domainid") or m.seeded_id("domain", "ROOT")
    if domain not in model.domains:
        raise m.no_entity("domainid", domain)
    if model.account_by_name(name, domain) is None:
        raise m.ParamError(f"Unable to find account {name} in domain id={domain}")
    return name
