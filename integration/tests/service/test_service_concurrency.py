"""Two service processes on one StorPool cluster, hammered at once: the driver is stateless and
its creates are idempotent by name, so concurrent and duplicated requests through different
services must converge on exactly one StorPool object per CloudStack volume."""

from __future__ import annotations

import random
import threading
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests

from cloudstack_storpool.spconn import StorPoolConn
from integration.stack import LocalStack
from integration.tests.service.conftest import ServiceFactory

pytestmark = pytest.mark.root

CLIENT_THREADS = 16
VOLUMES = 70      # each created twice, once through each service, concurrently: 140 requests
DELETED = 60      # then deleted concurrently, alternating services: 60 requests (200 in all)
SIZE = 64 << 20


def test_concurrent_creates_and_deletes_through_two_services(
    stack: LocalStack, start_service: ServiceFactory, service_token: str,
) -> None:
    services = [start_service(), start_service()]
    assert services[0].ctx is not services[1].ctx
    pools = [p.uuid for p in stack.pools().pools]
    headers = {"Authorization": f"Bearer {service_token}"}
    local = threading.local()

    def session() -> requests.Session:
        s: requests.Session | None = getattr(local, "session", None)
        if s is None:
            s = local.session = requests.Session()
            s.headers.update(headers)
        return s

    uuids = [str(uuid.uuid4()) for _ in range(VOLUMES)]
    pool_of = {u: pools[i % len(pools)] for i, u in enumerate(uuids)}

    def create(job: tuple[str, int]) -> tuple[str, int, dict[str, Any]]:
        vid, which = job
        r = session().post(f"{services[which].url}/v1/volumes", timeout=60,
                           json={"pool": pool_of[vid], "volume_uuid": vid, "size": SIZE})
        return vid, r.status_code, r.json()

    def delete(job: tuple[str, int]) -> tuple[str, int, dict[str, Any]]:
        vid, which = job
        r = session().delete(f"{services[which].url}/v1/volumes/{vid}", params={"pool": pool_of[vid]}, timeout=60)
        return vid, r.status_code, r.json()

    creates = [(u, s) for u in uuids for s in (0, 1)]
    random.Random(7).shuffle(creates)
    with ThreadPoolExecutor(CLIENT_THREADS) as pool:
        created = list(pool.map(create, creates))
    errors = [(vid, status, body) for vid, status, body in created if status != 200]
    assert not errors, errors[:5]
    # Both answers for one uuid name the same StorPool object.
    by_uuid: dict[str, set[str]] = {}
    for vid, _, body in created:
        assert body["uuid"] == vid and body["size"] == SIZE and body["pool"] == pool_of[vid]
        by_uuid.setdefault(vid, set()).add(body["global_id"])
    assert all(len(gids) == 1 for gids in by_uuid.values()), by_uuid

    doomed = uuids[:DELETED]
    with ThreadPoolExecutor(CLIENT_THREADS) as pool:
        deleted = list(pool.map(delete, [(u, i % 2) for i, u in enumerate(doomed)]))
    errors = [(vid, status, body) for vid, status, body in deleted if status != 200 or not body["deleted"]]
    assert not errors, errors[:5]
    assert len(created) + len(deleted) == 200

    # StorPool holds exactly the volumes not deleted: none leaked, none duplicated.
    conn = StorPoolConn(stack.sp.host, stack.sp.port, stack.sp.token)
    volumes = [v for v in conn.volumes() if (v.tags or {}).get("cs") == "volume"]
    per_uuid = Counter((v.tags or {}).get("uuid") for v in volumes)
    assert per_uuid == Counter(uuids[DELETED:])
    assert {v.name for v in volumes} == {f"cs-vol-{u}" for u in uuids[DELETED:]}
    assert {(v.tags or {}).get("pool") for v in volumes} <= set(pools)
    assert all(v.size == SIZE for v in volumes)
    assert conn.snapshots() == []  # nothing else was made on the way (no delay-delete configured)
    assert services[0].jobs.list() == [] and services[1].jobs.list() == []
