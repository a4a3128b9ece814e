"""One uuid, one StorPool name: the CLI and the service accept the same spelling of a CloudStack
uuid and refuse the same others, so no entry point can give a volume a second StorPool name."""

from __future__ import annotations

import json

import pytest
import requests
from click.testing import CliRunner

from cloudstack_storpool.cli import cli
from cloudstack_storpool.service import ServiceServer
from integration.stack import LocalStack, new_uuid

pytestmark = pytest.mark.root

MiB = 1 << 20
POOL = "storpool-primary"


def _spellings(uuid: str) -> list[str]:
    """Other spellings of the same uuid that Python's `uuid.UUID` reads as equal."""
    return [uuid.replace("-", ""), f"urn:uuid:{uuid}", f"{{{uuid}}}", uuid.upper()]


def _cli_create(stack: LocalStack, volume_uuid: str) -> tuple[int, str]:
    res = CliRunner().invoke(cli, ["volume", "create", POOL, volume_uuid, "--size", str(8 * MiB), "--json"],
                             env=stack.driver_env())
    return res.exit_code, res.output


def _service_create(service: ServiceServer, token: str, volume_uuid: str) -> requests.Response:
    return requests.post(f"{service.url}/v1/volumes", json={"pool": POOL, "volume_uuid": volume_uuid,
                                                            "size": 8 * MiB},
                         headers={"Authorization": f"Bearer {token}"}, timeout=30)


def _named_for(stack: LocalStack, uuid: str) -> list[str]:
    """Every StorPool volume carrying this CloudStack uuid, whatever its name."""
    conn = stack.ctx.conn(POOL)
    return sorted(v.name for v in conn.volumes() if (v.tags or {}).get("uuid", "").replace("-", "").lower()
                  == uuid.replace("-", ""))


@pytest.mark.parametrize("first", ["cli", "service"])
def test_cli_and_service_agree_on_the_one_spelling(stack: LocalStack, service: ServiceServer, service_token: str,
                                                   first: str) -> None:
    def cli_gid(volume_uuid: str) -> str:
        code, output = _cli_create(stack, volume_uuid)
        assert code == 0, output
        return str(json.loads(output)["global_id"])

    def service_gid(volume_uuid: str) -> str:
        r = _service_create(service, service_token, volume_uuid)
        assert r.status_code == 200, r.text
        return str(r.json()["global_id"])

    vid = new_uuid()
    for other in _spellings(vid):
        code, output = _cli_create(stack, other)
        assert code == 1 and "volume_uuid" in output and "not a CloudStack uuid" in output, output
        r = _service_create(service, service_token, other)
        assert r.status_code == 400 and r.json()["error"]["field"] == "volume_uuid", r.text
    assert _named_for(stack, vid) == []  # nothing was created by a refused spelling

    create, retry = (cli_gid, service_gid) if first == "cli" else (service_gid, cli_gid)
    # The retry through the other entry point finds the same StorPool volume.
    assert create(vid) == retry(vid)
    assert _named_for(stack, vid) == [f"cs-vol-{vid}"]

    for other in _spellings(vid):  # still refused once the volume exists: no second name
        assert _cli_create(stack, other)[0] == 1
        assert _service_create(service, service_token, other).status_code == 400
    assert _named_for(stack, vid) == [f"cs-vol-{vid}"]
