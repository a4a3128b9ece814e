"""The operator commands against the local stack, through the real console-script entry point."""

from __future__ import annotations

import json

from click.testing import CliRunner

from cloudstack_storpool.cli import cli
from cloudstack_storpool.driver import volumes
from integration.stack import LocalStack, new_uuid


def test_pool_list_table_and_json_never_show_the_token(stack: LocalStack) -> None:
    runner = CliRunner()
    res = runner.invoke(cli, ["pool", "list"], env=stack.driver_env())
    assert res.exit_code == 0, res.output
    assert "storpool-primary" in res.output and "storpool-hybrid" in res.output
    assert stack.sp.token not in res.output
    res = runner.invoke(cli, ["pool", "list", "--json"], env=stack.driver_env())
    assert {p["template"] for p in json.loads(res.output)} == {"ssd", "hybrid"}


def test_volume_list_describe_and_gc_dry_run(stack: LocalStack) -> None:
    runner = CliRunner()
    vid = new_uuid()
    volumes.create(stack.ctx, "storpool-primary", vid, 8 << 20)
    res = runner.invoke(cli, ["volume", "list", "storpool-primary", "--json"], env=stack.driver_env())
    assert res.exit_code == 0, res.output
    assert [o["uuid"] for o in json.loads(res.output)] == [vid]
    res = runner.invoke(cli, ["pool", "describe", "storpool-primary", "--json"], env=stack.driver_env())
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["volumes"] == 1
    res = runner.invoke(cli, ["gc", "--dry-run", "--json"], env=stack.driver_env())
    assert res.exit_code == 0, res.output
    assert json.loads(res.output) == []


def test_bad_input_names_the_field_and_exits_non_zero(stack: LocalStack) -> None:
    res = CliRunner().invoke(cli, ["pool", "describe", "no-such-pool"], env=stack.driver_env())
    assert res.exit_code == 1
    assert "pool" in res.output and "no-such-pool" in res.output


def test_volume_from_template_shows_progress_then_snapshot_and_resize(stack: LocalStack) -> None:
    runner = CliRunner()
    e = stack.driver_env()
    tmpl = next(t for t in stack.cs.model.templates.values() if t.name == "tiny-linux")
    image = stack.template_image(tmpl.id, tmpl.size, {0: b"hello"})
    vid = new_uuid()
    res = runner.invoke(cli, ["volume", "create", "storpool-primary", vid, "--template", tmpl.id,
                              "--source-store", str(stack.secondary),
                              "--source-path", str(image.relative_to(stack.secondary))], env=e)
    assert res.exit_code == 0, res.output
    assert "copying template: 100%" in res.output
    assert vid in res.output
    gid = stack.ctx.conn("storpool-primary").volume(f"cs-vol-{vid}").global_id
    stack.cs.model.add_volume("cli-vol", tmpl.size, storage_id=stack.pool_id(),
                              path=f"/dev/storpool-byid/{gid}", volume_id=vid)
    stack.set_bypass(True)
    stack.settings.invalidate()
    sid = stack.cs.model.add_snapshot(vid).id
    res = runner.invoke(cli, ["snapshot", "take", vid, sid, "--json"], env=e)
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["bypassed"] is True
    res = runner.invoke(cli, ["snapshot", "delete", "storpool-primary", sid, "--json"], env=e)
    assert res.exit_code == 0 and json.loads(res.output)["existed"] is True
    res = runner.invoke(cli, ["volume", "resize", vid, str(tmpl.size + (1 << 20)), "--json"], env=e)
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["new_size"] == tmpl.size + (1 << 20)
    res = runner.invoke(cli, ["volume", "resize", vid, "1024", "--json"], env=e)
    assert res.exit_code == 1 and "shrink" in res.output.lower()


def test_volume_resize_tells_the_running_vms_host_or_the_hosts_given(stack: LocalStack) -> None:
    """Outside the management server only a running VM's host is known (the API shows no last
    host); `--host-id` names the hosts to tell for a stopped VM."""
    runner = CliRunner()
    model = stack.cs.model
    host = next(iter(stack.agents))
    vm = model.add_vm(f"cli-{new_uuid()[:6]}", host_id=host, state="Running", storage_id=stack.pool_id())
    vid = new_uuid()
    info = volumes.create(stack.ctx, stack.pool_id(), vid, 8 << 20)
    model.add_volume("cli-rs", 8 << 20, vm_id=vm.id, storage_id=stack.pool_id(), path=info.path, volume_id=vid)
    res = runner.invoke(cli, ["volume", "resize", vid, str(16 << 20), "--json"], env=stack.driver_env())
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["host_id"] == host
    model.stop_vm(vm.id)
    res = runner.invoke(cli, ["volume", "resize", vid, str(24 << 20), "--json"], env=stack.driver_env())
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["host_id"] is None
    res = runner.invoke(cli, ["volume", "resize", vid, str(32 << 20), "--host-id", host, "--json"],
                        env=stack.driver_env())
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["host_id"] == host
    assert [j.result["size"] for j in stack.agents[host].server.jobs.list() if j.command == "resize"] == [
        16 << 20, 32 << 20]
