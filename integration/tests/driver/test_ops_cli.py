"""The operator commands against the local stack, through the real console-script entry point."""

from __future__ import annotations

import json
import uuid

from click.testing import CliRunner

from cloudstack_storpool.cli import cli
from cloudstack_storpool.driver import volumes
from integration.stack import LocalStack


def env(stack: LocalStack) -> dict[str, str]:
    return {
        "CSSP_POOLS_FILE": str(stack.pools_file),
        "CLOUDSTACK_ENDPOINT": stack.cs.endpoint,
        "CLOUDSTACK_KEY": stack.cs.key,
        "CLOUDSTACK_SECRET": stack.cs.secret,
        "CLOUDSTACK_STORPOOL_AGENT_TOKEN": stack.agent_token,
    }


def test_pool_list_table_and_json_never_show_the_token(stack: LocalStack) -> None:
    runner = CliRunner()
    res = runner.invoke(cli, ["pool", "list"], env=env(stack))
    assert res.exit_code == 0, res.output
    assert "storpool-primary" in res.output and "storpool-hybrid" in res.output
    assert stack.sp.token not in res.output
    res = runner.invoke(cli, ["pool", "list", "--json"], env=env(stack))
    assert {p["template"] for p in json.loads(res.output)} == {"ssd", "hybrid"}


def test_volume_list_describe_and_gc_dry_run(stack: LocalStack) -> None:
    runner = CliRunner()
    vid = str(uuid.uuid4())
    volumes.create(stack.ctx, "storpool-primary", vid, 8 << 20)
    res = runner.invoke(cli, ["volume", "list", "storpool-primary", "--json"], env=env(stack))
    assert res.exit_code == 0, res.output
    assert [o["uuid"] for o in json.loads(res.output)] == [vid]
    res = runner.invoke(cli, ["pool", "describe", "storpool-primary", "--json"], env=env(stack))
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["volumes"] == 1
    res = runner.invoke(cli, ["gc", "--dry-run", "--json"], env=env(stack))
    assert res.exit_code == 0, res.output
    assert json.loads(res.output) == []


def test_bad_input_names_the_field_and_exits_non_zero(stack: LocalStack) -> None:
    res = CliRunner().invoke(cli, ["pool", "describe", "no-such-pool"], env=env(stack))
    assert res.exit_code == 1
    assert "pool" in res.output and "no-such-pool" in res.output
