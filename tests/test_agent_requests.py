"""Request validation, secondary-storage mapping and host configuration: pure logic."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from cloudstack_storpool.agent import secondary
from cloudstack_storpool.agent.commands import COMMANDS, parse
from cloudstack_storpool.agent.hostconfig import load_host_config
from cloudstack_storpool.agentapi import locations
from cloudstack_storpool.agentapi.command_types import CopyTemplateRequest, CopyToVolumeRequest
from cloudstack_storpool.agentapi.link import AGENT_TOKEN_ENV, read_agent_token
from cloudstack_storpool.errors import ValidationError
from cloudstack_storpool.typedjson import to_json

GOOD: dict[str, dict[str, Any]] = {
    "copy_template": {"store": "/sec", "path": "template/1/t.qcow2", "volume": "~a.b.c"},
    "copy_to_volume": {"store": "nfs://10.0.0.1/export", "path": "snapshots/s.qcow2",
                       "volume": "/dev/storpool-byid/a.b.c"},
    "backup_snapshot": {"store": "/sec", "path": "snapshots/2/s.qcow2", "snapshot": "snap@1"},
    "copy_volume_out": {"store": "/sec", "path": "volumes/v.raw", "volume": "vol-1", "format": "raw"},
    "resize": {"volume": "~a.b.c", "size": 2 << 30, "vm": "i-2-3-VM"},
    "prepare_start": {"volumes": ["~a.b.c", "/dev/storpool/legacy"]},
    "facts": {},
    "connect": {"volume": "/dev/storpool-byid/a.b.c"},
    "disconnect": {"volume": "~a.b.c", "retries": 3, "force": False},
    "encrypt_volume": {"volume": "~a.b.c", "passphrase": "correct horse battery", "source": "~d.e.f"},
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_has_a_valid_example(command: str) -> None:
    cmd, req = parse(command, GOOD[command])
    assert cmd is COMMANDS[command] and isinstance(req, cmd.request)
    assert req.timeout > 0


def test_template_copy_defaults_to_zeroed_target() -> None:
    _, req = parse("copy_template", GOOD["copy_template"])
    assert isinstance(req, CopyTemplateRequest) and req.target_is_zero
    _, req2 = parse("copy_to_volume", GOOD["copy_to_volume"])
    assert isinstance(req2, CopyToVolumeRequest) and not req2.target_is_zero


@pytest.mark.parametrize(
    ("command", "change", "field"),
    [
        ("copy_template", {"volume": None}, "volume"),
        ("copy_template", {"volume": "bad name!"}, "volume"),
        ("copy_template", {"path": "../../etc/shadow"}, "path"),
        ("copy_template", {"path": "/etc/shadow"}, "path"),
        ("copy_template", {"store": "relative/dir"}, "store"),
        ("copy_template", {"store": "nfs:///nohost"}, "store"),
        ("copy_template", {"source_format": "vmdk"}, "source_format"),
        ("copy_template", {"target_is_zero": "yes"}, "target_is_zero"),
        ("copy_template", {"timeout": -1}, "timeout"),
        ("copy_template", {"colour": "red"}, "colour"),
        ("backup_snapshot", {"snapshot": ""}, "snapshot"),
        ("copy_volume_out", {"format": "raw", "compress": True}, "compress"),
        ("resize", {"size": 1000}, "size"),
        ("resize", {"size": "big"}, "size"),
        ("resize", {"volume": "/dev/sda"}, "volume"),
        ("prepare_start", {"volumes": []}, "volumes"),
        ("connect", {"volume": "/dev/sda"}, "volume"),
        ("disconnect", {"retries": 1000}, "retries"),
        ("encrypt_volume", {"passphrase": "short"}, "passphrase"),
        ("encrypt_volume", {"passphrase": "has\nnewline"}, "passphrase"),
        ("encrypt_volume", {"source": "/etc/passwd"}, "source"),
        ("prepare_start", {"volumes": ["ok", 3]}, "volumes[1]"),
        ("prepare_start", {"volumes": ["ok", "no way"]}, "volumes[1]"),
    ],
)
def test_bad_requests_name_the_field(command: str, change: dict[str, Any], field: str) -> None:
    args = {**GOOD[command], **change}
    args = {k: v for k, v in args.items() if not (v is None and k in ("volume",))}
    with pytest.raises(ValidationError) as exc:
        parse(command, args)
    assert exc.value.field == field


def test_unknown_command_and_non_object_args() -> None:
    with pytest.raises(ValidationError) as exc:
        parse("format_disk", {})
    assert exc.value.field == "command"
    with pytest.raises(ValidationError) as exc:
        parse("facts", [1, 2])
    assert exc.value.field == "args"


def test_nfs_url_maps_to_a_stable_unique_mountpoint() -> None:
    a = secondary.mountpoint_for("nfs://10.1.1.5/export/secondary", "/mnt/root")
    assert a == secondary.mountpoint_for("nfs://10.1.1.5/export/secondary/", "/mnt/root")
    assert a.startswith("/mnt/root/10.1.1.5_export_secondary-")
    b = secondary.mountpoint_for("nfs://10.1.1.5/export_secondary", "/mnt/root")
    assert a != b  # same sanitised name, different export
    assert locations.parse_nfs_url("nfs://nfs.example:2049/srv/sec").source == "nfs.example:/srv/sec"
    assert locations.parse_nfs_url("nfs://[fd00::1]/srv").source == "[fd00::1]:/srv"
    with pytest.raises(ValidationError):
        locations.parse_nfs_url("nfs://host/../etc")


def test_mount_fails_clearly_without_an_nfs_client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(secondary.shutil, "which", lambda _name: None)
    monkeypatch.setattr(secondary.os.path, "exists", lambda _p: False)
    with pytest.raises(secondary.MountError, match="no NFS client"):
        secondary.ensure_mounted("nfs://127.0.0.1/export", str(tmp_path))


def test_local_store_must_be_under_an_allowed_root(tmp_path: Path) -> None:
    root = tmp_path / "sec"
    (root / "t").mkdir(parents=True)
    got = secondary.resolve(str(root), "t/x.qcow2", mount_root=str(tmp_path / "mnt"), allowed_roots=(str(root),))
    assert got == str(root / "t" / "x.qcow2")
    with pytest.raises(ValidationError) as exc:
        secondary.resolve("/etc", "passwd", mount_root=str(tmp_path / "mnt"), allowed_roots=(str(root),))
    assert exc.value.field == "store"
    os.symlink("/etc/passwd", root / "t" / "link.qcow2")
    with pytest.raises(ValidationError) as exc:
        secondary.resolve(str(root), "t/link.qcow2", mount_root=str(tmp_path), allowed_roots=(str(root),))
    assert exc.value.field == "path"
    os.symlink("/etc", root / "escape")
    with pytest.raises(ValidationError) as exc:
        secondary.resolve(str(root), "escape/passwd", mount_root=str(tmp_path), allowed_roots=(str(root),))
    assert exc.value.field == "path"


def test_agent_token_from_file_or_env(tmp_path: Path) -> None:
    f = tmp_path / "tok"
    f.write_text("s3cret-value\n")
    assert read_agent_token(str(f)) == "s3cret-value"
    assert read_agent_token(None, env={AGENT_TOKEN_ENV: "from-env"}) == "from-env"
    with pytest.raises(ValidationError) as exc:
        read_agent_token(None, env={})
    assert exc.value.field == "token_file"
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ValidationError, match="empty") as exc:
        read_agent_token(str(tmp_path / "empty"))


def test_host_config_explicit_values_and_storpool_conf(tmp_path: Path) -> None:
    tok = tmp_path / "sptok"
    tok.write_text("sp-token\n")
    cfg = load_host_config(client_id=7, sp_host="127.0.0.1", sp_port=8181, sp_token_file=str(tok),
                           dev_root=str(tmp_path / "dev"), secondary_roots=(str(tmp_path),))
    assert cfg.client_id == 7 and cfg.sp_token == "sp-token"
    assert "sp-token" not in repr(cfg)
    assert cfg.device_path("a.b.c") == str(tmp_path / "dev" / "storpool-byid" / "a.b.c")
    conf = tmp_path / "storpool.conf"
    conf.write_text("SP_API_HTTP_HOST=127.0.0.1\nSP_API_HTTP_PORT=8181\nSP_AUTH_TOKEN=abc\nSP_OURID=12\n")
    assert load_host_config(sp_config=str(conf)).client_id == 12
    conf.write_text("SP_API_HTTP_HOST=127.0.0.1\nSP_AUTH_TOKEN=abc\n")
    with pytest.raises(ValidationError) as exc:
        load_host_config(sp_config=str(conf))
    assert exc.value.field == "client_id"
    with pytest.raises(ValidationError) as exc:
        load_host_config(client_id=5000)
    assert exc.value.field == "client_id"


@pytest.mark.parametrize("store", ["nfs://-oremount,exec/export", "nfs://--fstab=x/export", "nfs://-a/export"])
def test_nfs_host_that_reads_as_a_mount_option_is_refused(store: str) -> None:
    """The host becomes `host:/export` in root's `mount` argv: a leading '-' would be an option."""
    with pytest.raises(ValidationError) as exc:
        parse("copy_template", {**GOOD["copy_template"], "store": store})
    assert exc.value.field == "store"
    with pytest.raises(ValidationError):
        secondary.mountpoint_for(store, "/mnt/root")


def test_a_passphrase_stays_out_of_the_request_repr_and_fingerprint_text() -> None:
    _, req = parse("encrypt_volume", GOOD["encrypt_volume"])
    assert "correct horse" not in repr(req)
    assert "correct horse" not in str(to_json(req))
    with pytest.raises(ValidationError) as exc:
        parse("encrypt_volume", {**GOOD["encrypt_volume"], "passphrase": "x\x01yyyyyyyyy"})
    assert "yyyyyyyy" not in str(exc.value)
