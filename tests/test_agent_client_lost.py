"""An agent that accepted a job and then stopped answering: the outcome is unknown ("lost"),
which must not look like "unreachable" (that would send the same copy to a second host)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from cloudstack_storpool.agentapi.client import AgentClient, AgentRequestError


@pytest.fixture
def vanishing_agent() -> Iterator[tuple[str, threading.Event]]:
    gone = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            body = json.dumps({"id": "a" * 32, "state": "running", "progress": 10.0}).encode()
            self.send_response(202)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            gone.set()

        def do_GET(self) -> None:
            # After accepting the job the host drops off the network: connections die unanswered.
            self.close_connection = True
            self.connection.shutdown(2)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", gone
    finally:
        server.shutdown()
        server.server_close()


def test_contact_lost_after_the_job_started_is_not_unreachable(vanishing_agent: tuple[str, threading.Event]) -> None:
    url, accepted = vanishing_agent
    client = AgentClient(url, "token", timeout=2, poll_interval=0.01)
    with pytest.raises(AgentRequestError) as info:
        client.run("facts", {})
    assert accepted.is_set()
    assert info.value.code == "lost"
    assert info.value.job_id == "a" * 32
    assert info.value.applied is None  # the job may have done its work: nobody can vouch for it


def test_an_agent_that_never_answered_is_unreachable() -> None:
    client = AgentClient("http://127.0.0.1:1", "token", timeout=1, post_retries=0)
    with pytest.raises(AgentRequestError) as info:
        client.run("facts", {})
    assert info.value.code == "unreachable"
    assert info.value.applied is False  # nothing ever connected: the command cannot have run


def test_a_post_whose_answer_was_lost_is_not_vouched_for() -> None:
    """The agent read the request and dropped the connection: it may have started the job."""
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.close_connection = True
            self.connection.shutdown(2)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        client = AgentClient(f"http://127.0.0.1:{server.server_address[1]}", "token", timeout=2, post_retries=1)
        with pytest.raises(AgentRequestError) as info:
            client.run("facts", {})
    finally:
        server.shutdown()
        server.server_close()
    assert info.value.code == "unreachable" and info.value.applied is None


def _scripted_agent(post: list[Any], get_status: int = 404) -> ThreadingHTTPServer:
    """POST /v1/jobs answers `post` in order (None: read the request, drop the connection);
    GET answers `get_status` with an error body."""
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _reply(self, status: int, body: Any) -> None:
            raw = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            answer = post.pop(0) if len(post) > 1 else post[0]
            if answer is None:
                self.close_connection = True
                self.connection.shutdown(2)
                return
            self._reply(*answer)

        def do_GET(self) -> None:
            self._reply(get_status, {"error": {"code": "not-found", "message": "no such resource"}})

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return server


REFUSED = (400, {"error": {"code": "invalid", "message": "vm: unknown field", "field": "vm"}})


@pytest.mark.parametrize(("post", "applied"), [
    ([REFUSED], False),                                    # refused at once: no job started
    ([None, REFUSED], None),                               # the lost first send may have started it
    ([(500, {"error": {"code": "internal", "message": "boom"}})], None),  # a 5xx confirms nothing
    ([(202, {"id": "a" * 32, "state": "running"})], None),  # accepted, then 404 while polling
], ids=["refused", "lost-then-refused", "server-error", "404-while-polling"])
def test_only_a_refused_submission_is_vouched_for(post: list[Any], applied: bool | None) -> None:
    server = _scripted_agent(post)
    try:
        client = AgentClient(f"http://127.0.0.1:{server.server_address[1]}", "token", timeout=2, post_retries=1,
                             poll_interval=0.01)
        with pytest.raises(AgentRequestError) as info:
            client.run("resize", {"volume": "v1", "size": 1 << 20})
    finally:
        server.shutdown()
        server.server_close()
    assert info.value.applied is applied, info.value
