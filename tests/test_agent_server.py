"""The agent's HTTP API on loopback: authentication, validation, jobs, idempotency, client."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import requests

from cloudstack_storpool.agent.hostconfig import HostConfig
from cloudstack_storpool.agent.server import AgentServer, parse_listen
from cloudstack_storpool.agentapi.client import AgentClient, AgentError, AgentRequestError
from cloudstack_storpool.errors import ValidationError
from integration.stack import free_port
from tests.agent_support import TOKEN, serve_agent


def _post(srv: AgentServer, body: object, token: str | None = TOKEN) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return requests.post(srv.url + "/v1/jobs", json=body, headers=headers, timeout=10)


def test_requests_without_or_with_a_wrong_token_are_refused(agent_server: AgentServer) -> None:
    for token in (None, "wrong", TOKEN + "x", ""):
        r = _post(agent_server, {"command": "facts", "args": {}}, token=token)
        assert r.status_code == 401, token
        assert r.headers["WWW-Authenticate"] == "Bearer"
        assert TOKEN not in r.text
    assert requests.get(agent_server.url + "/v1/facts", timeout=10).status_code == 401
    r = requests.get(agent_server.url + "/v1/facts", headers={"Authorization": f"Basic {TOKEN}"}, timeout=10)
    assert r.status_code == 401
    assert agent_server.jobs.list() == []
    with pytest.raises(AgentError) as exc:
        AgentClient(agent_server.url, "nope").facts()
    assert getattr(exc.value, "status", None) == 401


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"command": "copy_template", "args": {"store": "/x", "path": "a.qcow2"}}, "volume"),
        ({"command": "copy_template", "args": {"store": "/x", "path": "../a", "volume": "v"}}, "path"),
        ({"command": "resize", "args": {"volume": "v", "size": 511}}, "size"),
        ({"command": "explode", "args": {}}, "command"),
        ({"args": {}}, "command"),
        ({"command": "facts", "args": {}, "priority": 1}, "priority"),
        ({"command": "facts", "args": {}, "idempotency_key": 5}, "idempotency_key"),
        ([1, 2], "body"),
    ],
)
def test_malformed_commands_get_400_naming_the_field(agent_server: AgentServer, body: object, field: str) -> None:
    r = _post(agent_server, body)
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["field"] == field
    assert field in err["message"]


def test_bad_json_and_unknown_routes(agent_server: AgentServer) -> None:
    h = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    r = requests.post(agent_server.url + "/v1/jobs", data=b"{not json", headers=h, timeout=10)
    assert r.status_code == 400 and r.json()["error"]["field"] == "body"
    assert requests.get(agent_server.url + "/v1/jobs/" + "0" * 32, headers=h, timeout=10).status_code == 404
    assert requests.get(agent_server.url + "/v2/x", headers=h, timeout=10).status_code == 404


def test_job_lifecycle_and_idempotency_key(agent_server: AgentServer) -> None:
    r1 = _post(agent_server, {"command": "facts", "args": {}, "idempotency_key": "k1"})
    assert r1.status_code == 202
    job_id = r1.json()["id"]
    r2 = _post(agent_server, {"command": "facts", "args": {}, "idempotency_key": "k1"})
    assert r2.status_code == 200 and r2.json()["id"] == job_id
    r3 = _post(agent_server, {"command": "facts", "args": {"timeout": 5}, "idempotency_key": "k1"})
    assert r3.status_code == 409 and r3.json()["error"]["field"] == "idempotency_key"
    client = AgentClient(agent_server.url, TOKEN, poll_interval=0.05)
    result = client.wait(job_id, timeout=30)
    assert result["client_id"] == 1
    assert result["storpool"]["reachable"] is False
    assert "qemu-img" in result["qemu_img"]
    assert len(agent_server.jobs.list()) == 1


def test_client_surfaces_a_failed_job_with_its_field(agent_server: AgentServer, tmp_path: Path) -> None:
    client = AgentClient(agent_server.url, TOKEN, poll_interval=0.05)
    # Syntactically fine, but /etc is not a configured secondary root: the job fails, and the
    # client raises with the agent's message and field.
    with pytest.raises(AgentRequestError) as exc:
        client.copy_template(store="/etc", path="passwd", volume="v1", timeout=30)
    assert exc.value.field == "store"
    assert "secondary-storage root" in exc.value.message
    assert exc.value.job_id
    with pytest.raises(AgentRequestError) as exc:
        client.resize(volume="v1", size=100)
    assert exc.value.status == 400 and exc.value.field == "size"


def test_client_progress_and_facts(agent_server: AgentServer) -> None:
    client = AgentClient(agent_server.url, TOKEN, poll_interval=0.05)
    seen: list[float] = []
    out = client.run("facts", {}, progress=seen.append, timeout=30)
    assert out["dev_root"].endswith("dev")
    assert seen and seen[-1] == 100.0
    assert client.facts()["client_id"] == 1
    assert TOKEN not in repr(client)


def test_client_unreachable_agent() -> None:
    client = AgentClient(f"http://127.0.0.1:{free_port()}", TOKEN, timeout=2, post_retries=0)
    with pytest.raises(AgentRequestError) as exc:
        client.facts()
    assert exc.value.code == "unreachable"


def test_cancel_of_a_finished_job_is_harmless(agent_server: AgentServer) -> None:
    job, _ = agent_server.jobs.submit("facts", {})
    assert job.done.wait(30)
    client = AgentClient(agent_server.url, TOKEN)
    assert client.cancel(job.id)["state"] == "succeeded"
    time.sleep(0)


def test_parse_listen() -> None:
    assert parse_listen("127.0.0.1:8250") == ("127.0.0.1", 8250)
    assert parse_listen("[::1]:80") == ("::1", 80)
    for bad in ("8250", "host:", ":80", "h:99999"):
        with pytest.raises(ValidationError):
            parse_listen(bad)


def test_queued_copy_can_be_cancelled_over_http(agent_server: AgentServer, tmp_path: Path) -> None:
    # Occupy every copy slot so the job stays queued, then cancel it with DELETE.
    slots = agent_server.jobs._copy_slots
    while slots.acquire(blocking=False):
        pass
    try:
        client = AgentClient(agent_server.url, TOKEN, poll_interval=0.05)
        job = client.start("copy_template", {"store": str(tmp_path), "path": "t.qcow2", "volume": "v1"})
        assert client.job(job["id"])["state"] == "queued"
        client.cancel(job["id"])
        with pytest.raises(AgentRequestError) as exc:
            client.wait(job["id"], timeout=10)
        assert exc.value.code == "cancelled"
        assert client.job(job["id"])["state"] == "cancelled"
    finally:
        for _ in range(2):
            slots.release()


def test_heartbeat_status_is_served_to_authenticated_callers_only(tmp_path: Path) -> None:
    from cloudstack_storpool.heartbeat.hostloop import write_status

    status_file = tmp_path / "hb.json"
    host = HostConfig(client_id=1, dev_root=str(tmp_path / "dev"), heartbeat_status_file=str(status_file))
    with serve_agent(host) as srv:
        client = AgentClient(srv.url, TOKEN)
        assert client.heartbeat() is None  # the loop has not run yet
        write_status(status_file, {"result": "fail", "reason": "client 1 down", "failures": 2})
        assert client.heartbeat() == {"result": "fail", "reason": "client 1 down", "failures": 2}
        assert requests.get(srv.url + "/v1/heartbeat", timeout=10).status_code == 401


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (b"[" * 100_000 + b"]" * 100_000, "body"),  # nested too deep for the JSON parser
        (b'{"command": "facts", "args": {"timeout": 1' + b"0" * 400 + b"}}", "timeout"),  # beyond a float
        (b'{"command": "facts", "args": {"timeout": NaN}}', "timeout"),
        (b'{"command": "facts", "args": {"timeout": Infinity}}', "timeout"),
    ],
)
def test_hostile_bodies_get_400_naming_the_field_not_500(agent_server: AgentServer, raw: bytes, field: str) -> None:
    h = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    r = requests.post(agent_server.url + "/v1/jobs", data=raw, headers=h, timeout=10)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["field"] == field
    assert agent_server.jobs.list() == []


def test_agent_listens_on_the_settings_files_port(tmp_path: Path) -> None:
    """`agent serve` without --listen serves on storpool.agent.port of this machine's settings file:
    the port the driver dials."""
    from cloudstack_storpool.agent.cli import _default_listen

    settings = tmp_path / "settings.toml"
    assert _default_listen(str(settings)) == "127.0.0.1:8259"  # no file: the default
    settings.write_text("storpool.agent.port = 9123\n")
    assert _default_listen(str(settings)) == "127.0.0.1:9123"
