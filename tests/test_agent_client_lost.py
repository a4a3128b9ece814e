"""An agent that accepted a job and then stopped answering: the outcome is unknown ("lost"),
which must not look like "unreachable" (that would send the same copy to a second host)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from cloudstack_storpool.agent.client import AgentClient, AgentRequestError


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
