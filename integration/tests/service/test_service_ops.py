"""Real driver operations through the service: a job that makes an agent copy, idempotency
keys across retries, and the error mapping of real driver failures."""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

import pytest
import requests

from cloudstack_storpool.service import ServiceServer
from integration.stack import LocalStack
from integration.tests.service.conftest import ServiceFactory

pytestmark = pytest.mark.root

MiB = 1 << 20


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _wait(server: ServiceServer, token: str, job_id: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = cast(dict[str, Any], requests.get(f"{server.url}/v1/jobs/{job_id}", headers=_auth(token),
                                                timeout=10).json())
        if job["state"] in ("succeeded", "failed"):
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish")


def test_root_volumes_from_an_uncached_template_run_as_one_fill(
    stack: LocalStack, service: ServiceServer, service_token: str,
) -> None:
    """Eight concurrent root-volume requests for a template no pool has cached yet: every one
    is a job, exactly one agent copy fills the cache, and all volumes descend from it."""
    tpl = stack.cs.model.add_template(f"svc-{uuid.uuid4().hex[:6]}", 16 * MiB)
    image = stack.template_image(tpl.id, 16 * MiB, {0: b"service root"})
    source = {"store": str(stack.secondary), "path": str(image.relative_to(stack.secondary)), "format": "qcow2"}
    pool = stack.pools().pools[0].uuid
    vids = [str(uuid.uuid4()) for _ in range(8)]

    def start(vid: str) -> requests.Response:
        return requests.post(f"{service.url}/v1/volumes/from-template", headers=_auth(service_token), timeout=30,
                             json={"pool": pool, "volume_uuid": vid, "template_uuid": tpl.id, "source": source,
                                   "idempotency_key": f"root-{vid}"})

    with ThreadPoolExecutor(8) as ex:
        started = list(ex.map(start, vids))
    assert all(r.status_code == 202 for r in started), [r.text for r in started]
    jobs = [_wait(service, service_token, r.json()["id"]) for r in started]
    assert all(j["state"] == "succeeded" for j in jobs), [j["error"] for j in jobs]
    results = {j["result"]["uuid"]: j["result"] for j in jobs}
    assert set(results) == set(vids)
    cached = requests.get(f"{service.url}/v1/pools/{pool}/templates/{tpl.id}", headers=_auth(service_token),
                          timeout=10).json()
    assert cached is not None and cached["template_uuid"] == tpl.id
    # A retry with the same key (a lost answer) returns the finished job instead of a new one.
    again = start(vids[0])
    assert again.status_code == 200 and again.json()["id"] == started[0].json()["id"]
    fills = sum(1 for a in stack.agents.values() for j in a.server.jobs.list() if j.command == "copy_template")
    assert fills == 1


def test_real_driver_errors_are_mapped(stack: LocalStack, service: ServiceServer, service_token: str) -> None:
    h = _auth(service_token)
    pool = stack.pools().pools[0].name
    missing = str(uuid.uuid4())
    r = requests.get(f"{service.url}/v1/volumes/{missing}", params={"pool": pool}, headers=h, timeout=10)
    assert r.status_code == 404 and r.json()["error"]["code"] == "not-found"
    r = requests.post(f"{service.url}/v1/volumes", headers=h, timeout=10,
                      json={"pool": "nope", "volume_uuid": missing, "size": MiB})
    assert r.status_code == 400 and r.json()["error"]["field"] == "pool"
    r = requests.post(f"{service.url}/v1/volumes", headers=h, timeout=10,
                      json={"pool": pool, "volume_uuid": missing, "size": 1000})
    assert r.status_code == 400 and r.json()["error"]["field"] == "size"
    # StorPool keeps answering "transient, try again": 503 with Retry-After, not 500.
    stack.sp.faults.fail_next("*", 100, error="busy", transient=True)
    try:
        r = requests.post(f"{service.url}/v1/volumes", headers=h, timeout=60,
                          json={"pool": pool, "volume_uuid": missing, "size": MiB})
    finally:
        stack.sp.faults.reset()
    assert r.status_code == 503, r.text
    assert r.headers["Retry-After"] and stack.sp.token not in r.text


def test_pool_registered_through_one_service_is_seen_by_another(
    stack: LocalStack, start_service: ServiceFactory, service_token: str,
) -> None:
    a, b = start_service(), start_service()
    h = _auth(service_token)
    r = requests.post(f"{a.url}/v1/pools", headers=h, timeout=30,
                      json={"name": "svc-nvme", "url": stack.sp.pool_url("nvme"), "zone": stack.zone_id})
    assert r.status_code == 200, r.text
    assert stack.sp.token not in r.text
    # `b` re-reads the pools file it shares with `a` on its next request.
    seen = requests.get(f"{b.url}/v1/pools/svc-nvme", headers=h, timeout=30)
    assert seen.status_code == 200 and seen.json()["template"] == "nvme"
    gone = requests.delete(f"{b.url}/v1/pools/svc-nvme", headers=h, timeout=30)
    assert gone.status_code == 200
    assert requests.get(f"{a.url}/v1/pools/svc-nvme", headers=h, timeout=30).status_code == 400


def test_volume_from_snapshot_through_the_service_takes_the_offering(
    stack: LocalStack, service: ServiceServer, service_token: str,
) -> None:
    """The service schema carries the offering of a volume made from a snapshot."""
    from integration.tests.driver.test_snapshots_e2e import make_volume

    stack.set_bypass(True, wait=True)
    vid, _ = make_volume(stack)
    sid = stack.cs.model.add_snapshot(vid).id
    taken = requests.post(f"{service.url}/v1/snapshots", headers=_auth(service_token), timeout=30,
                          json={"volume_uuid": vid, "snapshot_uuid": sid})
    assert _wait(service, service_token, taken.json()["id"])["state"] == "succeeded"
    gold = next(o.id for o in stack.cs.model.disk_offerings.values() if o.name == "sp-gold")
    made = requests.post(f"{service.url}/v1/volumes/from-snapshot", headers=_auth(service_token), timeout=30,
                         json={"pool": stack.pool_id(), "snapshot_uuid": sid, "volume_uuid": str(uuid.uuid4()),
                               "disk_offering_id": gold, "iops": 900})
    assert made.status_code == 202, made.text
    job = _wait(service, service_token, made.json()["id"])
    assert job["state"] == "succeeded", job["error"]
    vol = stack.ctx.conn(stack.pool_id()).volume(job["result"]["name"])
    assert vol.tags["qc"] == "gold" and vol.iops == 900
    assert (job["result"]["qos_class"], job["result"]["iops"]) == ("gold", 900)
