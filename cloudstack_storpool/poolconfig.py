"""Pool descriptions: the two URL forms CloudStack users type, and the TOML pools file.

A pool is configuration, not state: which StorPool API endpoint, which token, which template.
Every malformed part is reported with the field it came from, because the operator typed it
into CloudStack's "add primary storage" dialog and needs to know what to fix.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from storpool import spconfig

from cloudstack_storpool import names
from cloudstack_storpool.errors import ValidationError
from cloudstack_storpool.uuids import is_uuid

DEFAULT_PORT = 81
POOLS_FILE_ENV = "CSSP_POOLS_FILE"
"""Where `serve` and the operator commands find the pools file when no `--pools` is given."""
URL_KEYS = ("SP_API_HTTP", "SP_AUTH_TOKEN", "SP_TEMPLATE")
STORPOOL_CONF_ENV = "CSSP_STORPOOL_CONF"
"""Where the management server's StorPool configuration is when not `/etc/storpool.conf`: a pool
URL that is a template name alone takes its endpoint and token from there (as the Java plugin's
`storpool_confget` does)."""


class Secret(str):
    """A string that never shows itself in repr/str/format, so it cannot leak into logs."""

    def __repr__(self) -> str:
        return "Secret('***')"

    def __str__(self) -> str:
        return "***"

    def __format__(self, spec: str) -> str:
        return "***"

    def reveal(self) -> str:
        """The real value, for the one place that puts it on the wire."""
        return str.__str__(self)


def check_pool_id(value: str, field_name: str = "uuid") -> str:
    """A CloudStack storage pool id: a uuid, or the Java plugin's `<SP_TEMPLATE>;<uuid>` (its
    LifeCycle.initialize rewrites the pool's uuid to that form). The uuid part is checked by the
    project's one uuid rule (`uuids.check_uuid`: canonical lower case, as CloudStack writes it)."""
    if not isinstance(value, str) or not value:
        raise ValidationError(field_name, "a pool id is required")
    template, sep, rest = value.partition(";")
    if not is_uuid(rest if sep else value):
        raise ValidationError(field_name, f"{value[:80]!r} is not a pool id (a uuid, or <template>;<uuid>)")
    if sep:
        names.template_name(template, field_name)
    return value


def pool_key(pool_id: str) -> str:
    """The uuid part of a pool id: what names and the `pool` tag carry (`;` is valid in neither)."""
    return pool_id.rpartition(";")[2]


@dataclass(frozen=True)
class PoolSpec:
    """One StorPool primary storage pool as CloudStack knows it."""

    host: str
    port: int
    token: Secret = field(repr=False)
    template: str
    uuid: str = ""
    name: str = ""
    zone: str = ""

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def key(self) -> str:
        """The pool's uuid without a Java `<template>;` prefix: the `pool` tag and name part."""
        return pool_key(self.uuid)

    def url(self, *, redact: bool = True) -> str:
        """The pool URL in the `SP_API_HTTP=...` form; the token is masked unless asked not to."""
        token = "***" if redact else self.token.reveal()
        return f"SP_API_HTTP={self.endpoint};SP_AUTH_TOKEN={token};SP_TEMPLATE={self.template}"


def _host_port(value: str, field_name: str) -> tuple[str, int]:
    if not value:
        raise ValidationError(field_name, "API endpoint is empty (expected host:port)")
    host, sep, port_s = value.rpartition(":")
    if not sep:
        host, port_s = value, ""
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host or any(c in host for c in "/@;= \t"):
        raise ValidationError(field_name, f"bad API host {host!r}")
    if port_s == "":
        if sep:
            raise ValidationError(field_name, "port is empty after ':'")
        return host, DEFAULT_PORT
    if not port_s.isdigit():
        raise ValidationError(field_name, f"port {port_s!r} is not a number")
    port = int(port_s)
    if not 1 <= port <= 65535:
        raise ValidationError(field_name, f"port {port} is out of range 1-65535")
    return host, port


def _token(value: str, field_name: str) -> Secret:
    if not value:
        raise ValidationError(field_name, "auth token is empty")
    if any(c.isspace() or c in ";@/" for c in value):
        raise ValidationError(field_name, "auth token contains a forbidden character (space, ';', '@' or '/')")
    return Secret(value)


@dataclass(frozen=True)
class StorPoolConf:
    """What a StorPool configuration file says about the API (and this host's client id)."""

    host: str
    port: int
    token: Secret = field(repr=False)
    our_id: int | None = None


def read_storpool_conf(path: str | Path | None = None, *, section: str | None = None) -> StorPoolConf:
    """`/etc/storpool.conf` (+ `.conf.d/`), or another file, read by the bindings' own reader
    (`storpool.spconfig`: the host's section, environment overrides)."""
    config_cls: type[spconfig.SPConfig] = spconfig.SPConfig
    if path is not None:
        config_cls = type("_SPConfigAt", (spconfig.SPConfig,), {
            "PATH_CONFIG": str(path), "PATH_CONFIG_DIR": str(path) + ".d",
        })
    try:
        cfg = config_cls(section=section, missing_ok=False)
        host, port_s, token = cfg["SP_API_HTTP_HOST"], cfg.get("SP_API_HTTP_PORT", "81"), cfg["SP_AUTH_TOKEN"]
    except KeyError as exc:
        raise ValidationError(f"storpool.conf.{exc.args[0]}", "missing from the StorPool configuration") from None
    except (spconfig.SPConfigException, OSError) as exc:
        raise ValidationError("storpool.conf", f"cannot read the StorPool configuration: {exc}") from None
    if not str(port_s).isdigit() or not 1 <= int(port_s) <= 65535:
        raise ValidationError("storpool.conf.SP_API_HTTP_PORT", f"must be a port 1..65535, got {port_s!r}")
    our = cfg.get("SP_OURID")
    our_id = None
    if our:
        if not str(our).isdigit() or not names.is_client_id(int(our)):
            raise ValidationError("storpool.conf.SP_OURID", f"must be a client id 1..4095, got {our!r}")
        our_id = int(our)
    return StorPoolConf(str(host), int(port_s), _token(str(token), "storpool.conf.SP_AUTH_TOKEN"), our_id)


def parse_pool_url(url: str, field_name: str = "url") -> PoolSpec:
    """Parse `SP_API_HTTP=h:p;SP_AUTH_TOKEN=t;SP_TEMPLATE=x`, `storpool://t@h:p/x`, or a template
    name alone (endpoint and token from the management server's StorPool configuration)."""
    if not isinstance(url, str) or not url.strip():
        raise ValidationError(field_name, "pool URL is empty")
    url = url.strip()
    if not any(c in url for c in ";=:/@"):
        template = names.template_name(url, field_name)
        conf = read_storpool_conf(os.environ.get(STORPOOL_CONF_ENV) or None)
        return PoolSpec(host=conf.host, port=conf.port, token=conf.token, template=template)
    if url.startswith("storpool://"):
        return _parse_storpool_scheme(url[len("storpool://"):], field_name)
    if "://" in url:
        raise ValidationError(field_name, f"unknown URL scheme {url.split('://', 1)[0]!r} (expected storpool://)")
    parts: dict[str, str] = {}
    for n, item in enumerate(filter(None, (p.strip() for p in url.split(";"))), 1):
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep:
            # Never echo the item: a token typed without its key would end up in a log.
            where = f"{field_name}.{key}" if key in URL_KEYS else field_name
            raise ValidationError(where, f"item {n} is not KEY=VALUE")
        if key not in URL_KEYS:
            raise ValidationError(f"{field_name}.{key}", f"unknown key {key!r} (known: {', '.join(URL_KEYS)})")
        if key in parts:
            raise ValidationError(f"{field_name}.{key}", "given twice")
        parts[key] = value.strip()
    for key in URL_KEYS:
        if key not in parts:
            raise ValidationError(f"{field_name}.{key}", f"missing {key}")
    host, port = _host_port(parts["SP_API_HTTP"], f"{field_name}.SP_API_HTTP")
    token = _token(parts["SP_AUTH_TOKEN"], f"{field_name}.SP_AUTH_TOKEN")
    template = names.template_name(parts["SP_TEMPLATE"], f"{field_name}.SP_TEMPLATE")
    return PoolSpec(host=host, port=port, token=token, template=template)


def parse_cluster_endpoint(text: str, template: str, field_name: str = "sp.cluster.endpoint") -> PoolSpec:
    """A StorPool sub-cluster's API as the Java plugin reads `sp.cluster.endpoint`
    (StorPoolHelper.getSpConnectionDesc): `SP_API_HTTP=host:port;SP_AUTH_TOKEN=token`, by
    position, the first item's value the address and the second's the token; anything after is
    not read (a `SP_TEMPLATE` there is ignored). The template stays the pool's (`template`).
    Stricter than Java, which would index past the end of a short value: both items must be
    there, with their keys, in that order."""
    items = [p.strip() for p in text.strip().split(";")]
    expected = ("SP_API_HTTP", "SP_AUTH_TOKEN")
    if len(items) < 2:
        raise ValidationError(field_name, "expected SP_API_HTTP=host:port;SP_AUTH_TOKEN=token")
    values = []
    for item, key in zip(items, expected, strict=False):
        got, sep, value = item.partition("=")
        if not sep or got.strip() != key:
            # Never echo the item: a token typed without its key would end up in a log.
            raise ValidationError(f"{field_name}.{key}", f"expected {key}=... as item {expected.index(key) + 1} "
                                                         "(SP_API_HTTP=host:port;SP_AUTH_TOKEN=token)")
        values.append(value.strip())
    host, port = _host_port(values[0], f"{field_name}.SP_API_HTTP")
    token = _token(values[1], f"{field_name}.SP_AUTH_TOKEN")
    return PoolSpec(host=host, port=port, token=token, template=template)


def _parse_storpool_scheme(rest: str, field_name: str) -> PoolSpec:
    auth, sep, hostpart = rest.rpartition("@")
    if not sep:
        raise ValidationError(f"{field_name}.token", "missing 'token@' in storpool://token@host:port/template")
    endpoint, slash, template = hostpart.partition("/")
    if not slash or not template:
        raise ValidationError(f"{field_name}.template", "missing '/template' in storpool://token@host:port/template")
    host, port = _host_port(endpoint, f"{field_name}.endpoint")
    token = _token(unquote(auth), f"{field_name}.token")
    tmpl = names.template_name(unquote(template.rstrip("/")), f"{field_name}.template")
    return PoolSpec(host=host, port=port, token=token, template=tmpl)


def pool_from_entry(entry: dict[str, Any], where: str) -> PoolSpec:
    """One `[[pool]]` table of the pools file."""
    known = {"uuid", "name", "zone", "url"}
    for key in entry:
        if key not in known:
            raise ValidationError(f"{where}.{key}", f"unknown key (known: {', '.join(sorted(known))})")
    for key in ("uuid", "name", "url"):
        if not isinstance(entry.get(key), str) or not entry[key]:
            raise ValidationError(f"{where}.{key}", "required, a non-empty string")
    pool_id = check_pool_id(entry["uuid"], f"{where}.uuid")
    spec = parse_pool_url(entry["url"], f"{where}.url")
    zone = entry.get("zone", "")
    if not isinstance(zone, str):
        raise ValidationError(f"{where}.zone", "must be a string")
    return PoolSpec(
        host=spec.host, port=spec.port, token=spec.token, template=spec.template,
        uuid=pool_id, name=entry["name"], zone=zone,
    )


@dataclass(frozen=True)
class PoolsFile:
    pools: tuple[PoolSpec, ...]

    def get(self, key: str) -> PoolSpec:
        """A pool by CloudStack id (also its uuid part, for a Java `<template>;<uuid>` id) or name."""
        for pool in self.pools:
            if key in (pool.uuid, pool.name) or (pool.key != pool.uuid and key.lower() == pool.key):
                return pool
        raise ValidationError("pool", f"unknown pool {key!r} (known: {', '.join(p.name for p in self.pools) or 'none'})")


def parse_pools(data: dict[str, Any], source: str = "pools") -> PoolsFile:
    """Validate the whole file at once: one bad pool refuses the file, naming the pool."""
    entries = data.get("pool", [])
    unknown = set(data) - {"pool"}
    if unknown:
        raise ValidationError(f"{source}.{sorted(unknown)[0]}", "unknown top-level key (expected [[pool]] tables)")
    if not isinstance(entries, list):
        raise ValidationError(f"{source}.pool", "must be an array of tables ([[pool]])")
    pools: list[PoolSpec] = []
    seen: dict[str, str] = {}
    for i, entry in enumerate(entries):
        where = f"{source}.pool[{i}]"
        if not isinstance(entry, dict):
            raise ValidationError(where, "must be a table")
        pool = pool_from_entry(entry, where)
        for key, label in ((pool.uuid, "uuid"), (pool.name, "name"), (f"{pool.endpoint}/{pool.template}", "url")):
            marker = f"{label}:{key}"
            if marker in seen:
                rule = "same API endpoint and template" if label == "url" else f"duplicate {label}"
                raise ValidationError(f"{where}.{label}", f"{rule} as {seen[marker]}")
            seen[marker] = where
        pools.append(pool)
    return PoolsFile(tuple(pools))


def load_pools(path: str | Path) -> PoolsFile:
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text())
    except FileNotFoundError:
        raise ValidationError("pools_file", f"{p} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValidationError("pools_file", f"{p} is not valid TOML: {exc}") from None
    return parse_pools(data, p.name)
