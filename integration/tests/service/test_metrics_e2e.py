"""Prometheus metrics scraped during a run: the service's and an agent's `/metrics` show the
operations that ran with the right counts, StorPool calls, copies and heartbeat verdicts, and
refuse callers without the token."""

from __future__ import annotations

from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from cloudstack_storpool.driver import volumes
from cloudstack_storpool.service import ServiceServer
from integration.stack import LocalStack, new_uuid

pytestmark = pytest.mark.root

MiB = 1 << 20


@pytest.fixture(autouse=True)
def trust_the_stack_ca(stack: LocalStack, monkeypatch: pytest.MonkeyPatch) -> None:
    """The stack's agents serve TLS from the stack's own CA: scrape them trusting it."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(stack.ca.ca_file))


def scrape(url: str, token: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    r = requests.get(f"{url}/metrics", headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/plain"), r.text
    return {(s.name, frozenset(s.labels.items())): s.value
            for fam in text_string_to_metric_families(r.text) for s in fam.samples}


def value(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_service_metrics_count_what_ran(stack: LocalStack, service: ServiceServer, service_token: str) -> None:
    url, auth = service.url, {"Authorization": f"Bearer {service_token}"}
    pool = stack.pool_id()
    before = scrape(url, service_token)
    made = [new_uuid() for _ in range(3)]
    for vid in made:
        r = requests.post(f"{url}/v1/volumes", json={"pool": pool, "volume_uuid": vid, "size": 8 * MiB},
                          headers=auth, timeout=30)
        assert r.status_code == 200, r.text
    missing = requests.get(f"{url}/v1/volumes/{new_uuid()}", params={"pool": pool}, headers=auth, timeout=30)
    assert missing.status_code == 404
    assert requests.delete(f"{url}/v1/volumes/{made[0]}", params={"pool": pool}, headers=auth, timeout=30).ok
    checked = requests.post(f"{url}/v1/heartbeat/check", json={}, headers=auth, timeout=30)
    assert checked.status_code == 200, checked.text
    after = scrape(url, service_token)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("cssp_operations_total", side="service", operation="create_volume", outcome="ok") == 3
    assert delta("cssp_operations_total", side="service", operation="get_volume", outcome="refused") == 1
    assert delta("cssp_operations_total", side="service", operation="delete_volume", outcome="ok") == 1
    assert delta("cssp_operation_duration_seconds_count", side="service", operation="create_volume") == 3
    assert value(after, "cssp_operations_in_flight", side="service", operation="create_volume") == 0
    assert delta("cssp_storpool_calls_total", query="VolumeCreate", outcome="ok") == 3
    assert delta("cssp_storpool_calls_total", query="VolumeDelete", outcome="ok") == 1
    assert delta("cssp_storpool_call_duration_seconds_count", query="VolumeCreate") == 3
    assert delta("cssp_cloudstack_calls_total", command="listHosts", outcome="ok") >= 1
    hosts = checked.json()
    assert hosts, "the stack has hosts"
    for h in hosts:
        assert value(after, "cssp_heartbeat_verdict", host=h["host_id"], verdict=h["verdict"]) == 1
        assert delta("cssp_heartbeat_verdicts_total", host=h["host_id"], verdict=h["verdict"]) == 1


def test_metrics_refuse_callers_without_the_token(stack: LocalStack, service: ServiceServer, service_token: str) -> None:
    agent = next(iter(stack.agents.values()))
    agent_url = agent.url
    for url, good, other in ((service.url, service_token, stack.agent_token),
                             (agent_url, stack.agent_token, service_token)):
        assert requests.get(f"{url}/metrics", timeout=10).status_code == 401
        assert requests.get(f"{url}/metrics", headers={"Authorization": f"Bearer {other}"}, timeout=10).status_code == 401
        ok = requests.get(f"{url}/metrics", headers={"Authorization": f"Bearer {good}"}, timeout=10)
        assert ok.status_code == 200 and "cssp_operations_total" in ok.text
    assert requests.post(f"{service.url}/metrics", headers={"Authorization": f"Bearer {service_token}"},
                         timeout=10).status_code == 405


def test_agent_metrics_show_copies_and_bytes(stack: LocalStack) -> None:
    tmpl = next(t for t in stack.cs.model.templates.values() if t.name == "tiny-linux")
    image = stack.template_image(tmpl.id, tmpl.size, {0: b"hello"})
    agents = list(stack.agents.values())
    befores: list[Any] = [scrape(a.url, stack.agent_token) for a in agents]
    volumes.create_from_template(stack.ctx, "storpool-primary", new_uuid(), tmpl.id, source=stack.source_of(image))
    copied = ran = 0.0
    for a, before in zip(agents, befores, strict=True):
        after = scrape(a.url, stack.agent_token)
        copied += value(after, "cssp_agent_copied_bytes_total") - value(before, "cssp_agent_copied_bytes_total")
        ran += (value(after, "cssp_operations_total", side="agent", operation="copy_template", outcome="ok")
                - value(before, "cssp_operations_total", side="agent", operation="copy_template", outcome="ok"))
        assert value(after, "cssp_agent_copies_in_flight") == 0
    # One process runs every agent here (one registry): each scrape shows the same one copy.
    assert ran == len(agents) and copied == len(agents) * tmpl.size


def test_agent_metrics_show_its_hosts_heartbeat(stack: LocalStack) -> None:
    from pathlib import Path

    from cloudstack_storpool.heartbeat.hostloop import write_status

    agent = next(iter(stack.agents.values()))
    status_file = Path(stack.root) / f"heartbeat-{agent.client_id}.json"
    host = str(agent.client_id)
    for result, verdict in (("unknown", "unknown"), ("ok", "alive"), ("fail", "dead")):
        write_status(status_file, {"result": result, "client_id": agent.client_id, "reason": "test"})
        got = scrape(agent.url, stack.agent_token)
        assert value(got, "cssp_heartbeat_verdict", host=host, verdict=verdict) == 1
        assert sum(value(got, "cssp_heartbeat_verdict", host=host, verdict=v) for v in ("alive", "dead", "unknown")) == 1


def test_gc_results_and_failures_are_counted(stack: LocalStack) -> None:
    import time

    from cloudstack_storpool import metrics
    from cloudstack_storpool.driver import pools
    from cloudstack_storpool.service import counted
    from cloudstack_storpool.service.periodic import PeriodicGc

    spec = stack.ctx.pool("storpool-primary")
    for _ in range(2):
        stack.ctx.conn(spec).volume_create(
            size=MiB, template=spec.template,
            tags=pools.identity_tags(new_uuid(), "temporary", spec, started=str(int(time.time()) - 10 * 86400)))
    counted.register()
    task = PeriodicGc(stack.ctx, interval=lambda: 0.0, on_result=metrics.record_result)

    def sample(name: str, **labels: str) -> float:
        return metrics.REGISTRY.get_sample_value(name, labels) or 0.0

    failed, ok = (sample("cssp_periodic_runs_total", task="gc", outcome=o) for o in ("failed", "ok"))
    deleted = sample("cssp_gc_deleted_total")
    stack.sp.faults.fail_next("SnapshotsList", 1, error="notAllowed")
    assert task.once() is None
    assert sample("cssp_periodic_runs_total", task="gc", outcome="failed") == failed + 1
    report = task.once()
    assert report is not None and len(report.done) == 2
    assert sample("cssp_periodic_runs_total", task="gc", outcome="ok") == ok + 1
    assert sample("cssp_gc_deleted_total") == deleted + 2
