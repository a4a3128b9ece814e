"""The agent link over TLS with a CA made by the test: the driver's client verifies the agent's
certificate (CA, validity, name); the agent refuses plain HTTP off loopback unless told."""

from __future__ import annotations

import datetime as dt
import logging
import socket
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import requests
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

from cloudstack_storpool.agent.client import AgentClient, AgentRequestError
from cloudstack_storpool.agent.commands import Context
from cloudstack_storpool.agent.hostconfig import HostConfig
from cloudstack_storpool.agent.server import AgentServer, serve_in_thread
from cloudstack_storpool.agent.tls import INSECURE_WARNING, server_context, serving_context
from cloudstack_storpool.driver.agents import AgentDirectory
from cloudstack_storpool.errors import ValidationError
from cloudstack_storpool.spconn import StorPoolConn
from integration.certs import Issued, TestCA


class _OneHost:
    """The CloudStack lookups AgentDirectory makes, for one host (no other dependency)."""

    def __init__(self, ip_address: str, port: int) -> None:
        self.h = SimpleNamespace(id="h1", name="kvm1", ip_address=ip_address, agent_port=port)

    def host(self, host_id: str) -> Any:
        return self.h if host_id == self.h.id else None

TOKEN = "tls-test-token-0123456789"


@pytest.fixture(scope="module")
def cas(tmp_path_factory: pytest.TempPathFactory) -> tuple[TestCA, TestCA]:
    return TestCA(tmp_path_factory.mktemp("ca")), TestCA(tmp_path_factory.mktemp("other-ca"), "another CA")


def _serve(tmp_path: Path, issued: Issued) -> AgentServer:
    host = HostConfig(client_id=1, dev_root=str(tmp_path / "dev"), mount_root=str(tmp_path / "mnt"),
                      secondary_roots=(str(tmp_path),))
    srv = AgentServer(("127.0.0.1", 0), TOKEN, lambda: Context(
        host=host, conn=StorPoolConn("127.0.0.1", 1, "t", retries=0, timeout=1)),
        tls=server_context(str(issued.cert), str(issued.key)))
    serve_in_thread(srv)
    return srv


@pytest.fixture
def agent(tmp_path: Path, cas: tuple[TestCA, TestCA]) -> Iterator[AgentServer]:
    srv = _serve(tmp_path, cas[0].issue("good"))
    yield srv
    srv.shutdown_all()


def test_the_driver_talks_to_an_agent_whose_certificate_its_ca_signed(agent: AgentServer,
                                                                       cas: tuple[TestCA, TestCA]) -> None:
    assert agent.url.startswith("https://127.0.0.1:")
    client = AgentClient(agent.url, TOKEN, ca_file=str(cas[0].ca_file), poll_interval=0.05)
    assert client.facts()["client_id"] == 1
    job = client.start("facts", {})
    assert client.wait(str(job["id"]), timeout=30)["client_id"] == 1
    # Through the directory, as the driver dials a CloudStack host.
    cs = _OneHost("127.0.0.1", agent.server_address[1])
    d = AgentDirectory(cs, TOKEN, ca_file=str(cas[0].ca_file))  # type: ignore[arg-type]
    assert d.for_host("h1").base_url.startswith("https://")
    assert d.for_host("h1").facts()["client_id"] == 1


def test_concurrent_keep_alive_callers_over_tls_are_all_answered_in_step(agent: AgentServer,
                                                                         cas: tuple[TestCA, TestCA]) -> None:
    """Workers take TLS connections from the epoll set one event at a time (handshake steps,
    then requests), and answer every request already buffered before re-arming. Eight callers
    with a connection each, many requests, then pipelined pairs: every answer arrives, in
    order, on the connection it was asked on."""
    import json
    import ssl
    import threading

    ctx = ssl.create_default_context(cafile=str(cas[0].ca_file))
    host, port = agent.server_address[:2]
    failures: list[str] = []

    def request(path: str) -> bytes:
        return f"GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\r\n".encode()

    def caller(n: int) -> None:
        try:
            with socket.create_connection((host, port), timeout=10) as raw, \
                    ctx.wrap_socket(raw, server_hostname=host) as s:
                buf = b""

                def answer() -> tuple[int, Any]:
                    nonlocal buf
                    while b"\r\n\r\n" not in buf:
                        buf += s.recv(65536)
                    head, _, buf = buf.partition(b"\r\n\r\n")
                    length = int(next(ln.split(b":")[1] for ln in head.split(b"\r\n")
                                      if ln.lower().startswith(b"content-length")))
                    while len(buf) < length:
                        buf += s.recv(65536)
                    body, buf = buf[:length], buf[length:]
                    return int(head.split()[1]), json.loads(body)

                for _ in range(30):
                    s.sendall(request("/v1/jobs"))
                    assert answer() == (200, {"jobs": []})
                # Two requests in one TLS record (both land in the worker's buffer at once), then
                # in two records sent back to back before any answer.
                for burst in ([request("/v1/jobs") + request("/v1/jobs/" + "f" * 32)],
                              [request("/v1/jobs"), request("/v1/jobs/" + "f" * 32)]):
                    for record in burst:
                        s.sendall(record)
                    assert answer() == (200, {"jobs": []})
                    status, body = answer()
                    assert status == 404 and body["error"]["code"] == "not-found"
        except Exception as exc:
            failures.append(f"caller {n}: {exc!r}")

    threads = [threading.Thread(target=caller, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert failures == []


@pytest.mark.parametrize("case", ["other-ca", "expired", "not-yet-valid", "other-name"])
def test_the_driver_refuses_an_agent_certificate_that_does_not_verify(tmp_path: Path, cas: tuple[TestCA, TestCA],
                                                                      case: str) -> None:
    ca, other = cas
    now = dt.datetime.now(dt.UTC)
    issued = {
        "other-ca": lambda: other.issue("foreign"),
        "expired": lambda: ca.issue("expired", not_before=now - dt.timedelta(days=10),
                                    not_after=now - dt.timedelta(days=1)),
        "not-yet-valid": lambda: ca.issue("future", not_before=now + dt.timedelta(days=1)),
        "other-name": lambda: ca.issue("elsewhere", ("10.9.8.7", "kvm-elsewhere.example")),
    }[case]()
    srv = _serve(tmp_path, issued)
    try:
        client = AgentClient(srv.url, TOKEN, ca_file=str(ca.ca_file), timeout=5)
        with pytest.raises(AgentRequestError) as exc:
            client.facts()
        assert exc.value.code == "tls"
        assert "certificate" in str(exc.value).lower()
        assert TOKEN not in str(exc.value)
        assert srv.jobs.list() == []
    finally:
        srv.shutdown_all()


def test_plain_http_to_a_tls_agent_gets_nothing_and_the_agent_keeps_serving(agent: AgentServer,
                                                                            cas: tuple[TestCA, TestCA]) -> None:
    plain = agent.url.replace("https://", "http://")
    with pytest.raises(requests.RequestException):
        requests.get(plain + "/v1/jobs", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5)
    # A client that opens TLS and never completes the handshake costs no worker either.
    stalled = [socket.create_connection(agent.server_address[:2]) for _ in range(40)]
    try:
        client = AgentClient(agent.url, TOKEN, ca_file=str(cas[0].ca_file), timeout=5)
        assert client.facts()["client_id"] == 1
    finally:
        for s in stalled:
            s.close()


def test_an_https_client_needs_a_ca_file() -> None:
    with pytest.raises(ValueError, match="CA file"):
        AgentClient("https://127.0.0.1:1", TOKEN)


def test_the_driver_sends_no_token_in_clear_to_an_agent_off_loopback() -> None:
    cs = _OneHost("10.1.2.3", 8259)
    d = AgentDirectory(cs, TOKEN)  # type: ignore[arg-type]
    with pytest.raises(AgentRequestError) as exc:
        d.for_host("h1")
    assert exc.value.code == "tls" and "CLOUDSTACK_STORPOOL_AGENT_CA" in str(exc.value)
    d = AgentDirectory(cs, TOKEN, insecure_http=True)  # type: ignore[arg-type]
    assert d.for_host("h1").base_url == "http://10.1.2.3:8259"


def test_serving_rules(cas: tuple[TestCA, TestCA], caplog: pytest.LogCaptureFixture) -> None:
    good = cas[0].issue("rules")
    assert serving_context("127.0.0.1", None, None, insecure_http=False) is None
    assert serving_context("::1", None, None, insecure_http=False) is None
    with pytest.raises(ValidationError) as exc:
        serving_context("0.0.0.0", None, None, insecure_http=False)
    assert exc.value.field == "listen"
    with pytest.raises(ValidationError) as exc:
        serving_context("10.0.0.5", str(good.cert), None, insecure_http=False)
    assert exc.value.field == "tls_key"
    with pytest.raises(ValidationError) as exc:
        serving_context("10.0.0.5", str(good.cert), str(good.key), insecure_http=True)
    assert exc.value.field == "insecure_http"
    with pytest.raises(ValidationError) as exc:
        serving_context("10.0.0.5", str(good.cert), str(cas[1].directory / "ca.key"), insecure_http=False)
    assert exc.value.field == "tls_cert"
    assert serving_context("0.0.0.0", str(good.cert), str(good.key), insecure_http=False) is not None
    with caplog.at_level(logging.WARNING):
        assert serving_context("0.0.0.0", None, None, insecure_http=True) is None
    assert INSECURE_WARNING in caplog.text


def test_agent_serve_refuses_plain_http_off_loopback(tmp_path: Path) -> None:
    from cloudstack_storpool.agent.cli import agent_group

    token = tmp_path / "token"
    token.write_text(TOKEN)
    token.chmod(0o600)
    result = CliRunner().invoke(agent_group, ["serve", "--listen", "0.0.0.0:0", "--token-file", str(token),
                                              "--client-id", "1", "--sp-host", "127.0.0.1", "--sp-port", "1"])
    assert result.exit_code != 0
    assert "--insecure-http" in result.output and "loopback" in result.output


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
@pytest.mark.parametrize("when", ["expired", "not-yet-valid", "valid"])
def test_the_agent_says_when_its_certificate_is_outside_its_validity(tmp_path: Path, cas: tuple[TestCA, TestCA],
                                                                      when: str) -> None:
    """A real `agent serve` on a certificate its CA signed: expired or not yet valid, it warns at
    start naming notBefore and notAfter, its facts say `valid: false` and why, and its metrics
    show the period and 0; a valid one gets no warning, `valid: true` and 1."""
    from integration import processes
    from integration.stack import free_port

    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    start, end = {"expired": (now - dt.timedelta(days=10), now - dt.timedelta(days=1)),
                  "not-yet-valid": (now + dt.timedelta(days=1), now + dt.timedelta(days=10)),
                  "valid": (now - dt.timedelta(days=1), now + dt.timedelta(days=10))}[when]
    issued = cas[0].issue(when, not_before=start, not_after=end)
    sp_token = tmp_path / "sp.token"
    sp_token.write_text("t")
    sp_token.chmod(0o600)
    agent = processes.agent(client_id=1, sp_host="127.0.0.1", sp_port=free_port(), sp_token_file=str(sp_token),
                            dev_root=str(tmp_path / "dev"), mount_root=str(tmp_path / "mnt"),
                            secondary_root=str(tmp_path), status_file=str(tmp_path / "hb.json"), token=TOKEN,
                            tls=issued)
    with agent:
        started = [line for line in agent.output if "TLS certificate" in line]
        auth = {"Authorization": f"Bearer {TOKEN}"}
        # Not verified here: an expired or not yet valid certificate cannot be (that is the point).
        facts = requests.get(f"{agent.url}/v1/facts", headers=auth, verify=False, timeout=30).json()
        scraped = requests.get(f"{agent.url}/metrics", headers=auth, verify=False, timeout=30).text
    cert = facts["certificate"]
    assert cert["file"] == str(issued.cert)
    assert cert["not_before"] == start.isoformat() and cert["not_after"] == end.isoformat()
    assert cert["valid"] is (when == "valid")
    samples = {(s.name, s.labels.get("file")): s.value
               for family in text_string_to_metric_families(scraped) for s in family.samples}
    assert samples[("cssp_agent_certificate_not_before_timestamp_seconds", str(issued.cert))] == start.timestamp()
    assert samples[("cssp_agent_certificate_expiry_timestamp_seconds", str(issued.cert))] == end.timestamp()
    assert samples[("cssp_agent_certificate_valid", str(issued.cert))] == (1.0 if when == "valid" else 0.0)
    if when == "valid":
        assert started == [] and "problem" not in cert
        return
    assert len(started) == 1, agent.output
    assert f"notBefore {start.isoformat()}" in started[0] and f"notAfter {end.isoformat()}" in started[0]
    problem = f"expired at {end.isoformat()}" if when == "expired" else f"not valid before {start.isoformat()}"
    assert cert["problem"] == problem and problem in started[0]
