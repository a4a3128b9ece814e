"""The StorPool connection layer against a scripted StorPool endpoint over real HTTP.

The official bindings speak `http.client`, which `responses` cannot intercept, so these tests
run a tiny scripted server on loopback instead: each test says what the "cluster" answers,
including answers that never come (the connection is closed after the request was read),
and asserts what the layer sent.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote

import pytest

from cloudstack_storpool.errors import (
    SpBusy,
    SpExists,
    SpMalformed,
    SpNotFound,
    SpTransient,
    SpUnreachable,
    StorPoolError,
    ValidationError,
)
from cloudstack_storpool.spconn import Ref, StorPoolConn
from cloudstack_storpool.sprecords import SpActiveRequest, SpAttachment, SpSnapshot, SpTemplate, SpVolume

TOKEN = "t0ps3cr3t-token"
DROP = object()


def summary(name: str, gid: str, tags: dict[str, str] | None = None) -> dict[str, Any]:
    """A VolumeSummary with every field the bindings require."""
    return {
        "name": name, "globalId": gid, "parentName": "", "templateName": "ssd", "size": 1 << 30,
        "replication": 3, "placeAll": "ssd", "placeTail": "ssd", "placeHead": "ssd", "visibleVolumeId": 7,
        "objectsCount": 32, "creationTimestamp": 1700000000, "tags": tags or {}, "iops": "-", "bw": "-",
        "id": 1, "parentVolumeId": 0, "originalParentVolumeId": 0, "templateId": 1, "flags": 0,
        "firstNotParentObjectId": 0,
    }


def ok(**extra: Any) -> tuple[int, dict[str, Any]]:
    return 200, {"generation": 5, "data": {"ok": True, "generation": 5, **extra}}


def data(value: Any) -> tuple[int, dict[str, Any]]:
    return 200, {"generation": 5, "data": value}


def err(name: str, descr: str, transient: bool = False, status: int = 500) -> tuple[int, dict[str, Any]]:
    e: dict[str, Any] = {"name": name, "descr": descr}
    if transient:
        e["transient"] = True
    return status, {"error": e}


class Script:
    """Answers per query name, in order; the last answer repeats. Records every request."""

    def __init__(self) -> None:
        self.answers: dict[str, list[Any]] = {}
        self.requests: list[tuple[str, str, Any]] = []

    def on(self, query: str, *answers: Any) -> None:
        self.answers[query] = list(answers)

    def sent(self, query: str) -> list[Any]:
        return [body for _, q, body in self.requests if q == query]

    def next(self, query: str) -> Any:
        queue = self.answers.get(query)
        if not queue:
            return err("objectDoesNotExist", f"no script for {query}", status=404)
        return queue.pop(0) if len(queue) > 1 else queue[0]


@pytest.fixture
def script() -> Iterator[tuple[Script, StorPoolConn]]:
    sc = Script()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def handle_any(self, method: str) -> None:
            path = self.path
            body: Any = None
            if "?json=" in path:
                path, arg = path.split("?json=", 1)
                body = json.loads(unquote(arg))
            n = int(self.headers.get("Content-Length") or 0)
            if n:
                body = json.loads(self.rfile.read(n))
            query = path.removeprefix("/ctrl/1.0/").removeprefix("MultiCluster/").split("/")[0]
            sc.requests.append((method, query, body))
            assert self.headers["Authorization"] == f"Storpool v1:{TOKEN}"
            answer = sc.next(query)
            if answer is DROP:
                self.close_connection = True
                self.connection.shutdown(2)
                return
            status, payload = answer
            raw = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def do_GET(self) -> None:
            self.handle_any("GET")

        def do_POST(self) -> None:
            self.handle_any("POST")

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    conn = StorPoolConn("127.0.0.1", server.server_address[1], TOKEN, retries=3, sleep=lambda s: None, timeout=5)
    try:
        yield sc, conn
    finally:
        server.shutdown()
        server.server_close()


def test_read_retried_on_transient_errors(script: tuple[Script, StorPoolConn]) -> None:
    sc, conn = script
    busy = err("busy", "try later", transient=True)
    sc.on("Volume", busy, busy, data([summary("v1", "a.b.c")]))
    v = conn.volume("v1")
    assert v is not None and v.global_id == "a.b.c"
    assert len(sc.sent("Volume")) == 3
    assert conn.calls["Volume"] == 3


def test_read_gives_up_after_bounded_retries(script: tuple[Script, StorPoolConn]) -> None:
    sc, conn = script
    sc.on("VolumesList", err("busy", "overloaded", transient=True))
    with pytest.raises(SpTransient) as info:
        conn.volumes()
    assert info.value.name == "busy" and info.value.descr == "overloaded"
    assert len(sc.sent("VolumesList")) == 4  # first try + 3 retries


def test_error_mapping_keeps_storpool_name_and_description(script: tuple[Script, StorPoolConn]) -> None:
    sc, conn = script
    sc.on("Volume", err("objectDoesNotExist", "volume v1 does not exist", status=404))
    assert conn.volume("v1") is None
    sc.on("VolumeCreate", err("objectExists", "volume v1 already exists"))
    with pytest.raises(SpExists):
        conn.volume_create(name="v1", size=1 << 20, template="ssd")
    sc.on("VolumesReassign", err("invalidParam", "volume v1 is open at client 3"))
    with pytest.raises(SpBusy) as busy:
        conn.detach(Ref("volume", "v1"))
    assert "is open at" in busy.value.descr
    sc.on("VolumeRevert", err("notAllowed", "volume is attached"))
    with pytest.raises(StorPoolError) as other:
        conn.volume_revert("v1", "snap1")
    assert type(other.value) is StorPoolError
    assert (other.value.name, other.value.descr) == ("notAllowed", "volume is attached")
    assert len(sc.sent("VolumeRevert")) == 1  # not transient: not retried


def test_token_is_redacted_from_errors_and_logs(script: tuple[Script, StorPoolConn], caplog: pytest.LogCaptureFixture) -> None:
    sc, conn = script
    caplog.set_level(logging.DEBUG)
    sc.on("VolumeTemplateDescribe", err("authError", f"bad token {TOKEN} for you"))
    with pytest.raises(StorPoolError) as info:
        conn.template("ssd")
    assert TOKEN not in str(info.value) and TOKEN not in info.value.descr
    logging.getLogger("cloudstack_storpool.spconn").warning("echo %s", TOKEN)
    assert caplog.records, "the layer logged nothing"
    assert TOKEN not in caplog.text
    assert TOKEN not in repr(conn)


def test_lost_create_response_named_is_found_not_resent(script: tuple[Script, StorPoolConn]) -> None:
    sc, conn = script
    sc.on("VolumeCreate", DROP)
    sc.on("Volume", data([summary("tmpl-cache-fill", "x.y.z")]))
    created = conn.volume_create(name="tmpl-cache-fill", size=1 << 20, template="ssd", tags={"cs": "temporary"})
    assert created.recovered and created.global_id == "x.y.z"
    assert len(sc.sent("VolumeCreate")) == 1


def test_lost_create_response_anonymous_found_by_identity_tags(script: tuple[Script, StorPoolConn]) -> None:
    sc, conn = script
    tags = {"uuid": "4a2b7c1e-0000-4000-8000-000000000001", "cs": "volume"}
    sc.on("VolumeCreate", DROP)
    sc.on("VolumesList", data([summary("other", "o.o.o", {"uuid": "else", "cs": "volume"}), summary("~q.r.s", "q.r.s", tags)]))
    created = conn.volume_create(size=1 << 20, template="ssd", tags=tags)
    assert created.recovered and created.ref == "~q.r.s"
    assert created.path == "/dev/storpool-byid/q.r.s"
    assert len(sc.sent("VolumeCreate")) == 1


def test_lost_create_that_was_not_applied_is_sent_again(script: tuple[Script, StorPoolConn]) -> None:
    sc, conn = script
    sc.on("VolumeCreate", DROP, ok(name="v2", globalId="n.e.w"))
    sc.on("Volume", err("objectDoesNotExist", "no v2", status=404))
    created = conn.volume_create(name="v2", size=1 << 20, template="ssd")
    assert not created.recovered and created.global_id == "n.e.w"
    assert len(sc.sent("VolumeCreate")) == 2


def test_exists_after_ambiguous_retry_means_ours(script: tuple[Script, StorPoolConn]) -> None:
    sc, conn = script
    # The lookup raced the create: absent at lookup, then the re-send says it exists.
    sc.on("VolumeCreate", DROP, err("objectExists", "v3 exists"))
    sc.on("Volume", err("objectDoesNotExist", "no v3", status=404), data([summary("v3", "t.h.r")]))
    created = conn.volume_create(name="v3", size=1 << 20, template="ssd")
    assert created.recovered and created.global_id == "t.h.r"


def test_create_without_identity_is_never_resent(script: tuple[Script, StorPoolConn]) -> None:
    sc, conn = script
    sc.on("VolumeCreate", DROP)
    with pytest.raises(SpUnreachable):
        conn.volume_create(size=1 << 20, template="ssd")
    assert len(sc.sent("VolumeCreate")) == 1


def test_lost_snapshot_response_found_by_tags(script: tuple[Script, StorPoolConn]) -> None:
    sc, conn = script
    tags = {"uuid": "5b3c8d2f-0000-4000-8000-000000000002", "cs": "snapshot"}
    snap = summary("v1@3", "s.n.p", tags) | {
        "onVolume": "v1", "autoName": True, "bound": False, "deleted": False, "transient": False, "recoveringFromRemote": False,
    }
    sc.on("VolumeSnapshot", DROP)
    sc.on("SnapshotsList", data([snap]))
    created = conn.snapshot_create("v1", tags=tags)
    assert created.recovered and created.ref == "~s.n.p"
    assert len(sc.sent("VolumeSnapshot")) == 1


def test_delete_sends_on_attached_and_missing_is_success(script: tuple[Script, StorPoolConn]) -> None:
    sc, conn = script
    sc.on("VolumeDelete", ok())
    assert conn.volume_delete("~a.b.c") is True
    assert sc.sent("VolumeDelete") == [{"onAttached": "detachForce"}]
    sc.on("VolumeDelete", err("objectDoesNotExist", "gone", status=404))
    assert conn.volume_delete("~a.b.c") is False
    with pytest.raises(SpNotFound):
        conn.volume_delete("~a.b.c", missing_ok=False)


def test_bad_input_is_refused_before_sending(script: tuple[Script, StorPoolConn]) -> None:
    sc, conn = script
    cases: list[tuple[Any, str]] = [
        (lambda: conn.volume_create(name="bad name", size=1 << 20, template="ssd"), "name"),
        (lambda: conn.volume_create(name="v", size=1000, template="ssd"), "size"),
        (lambda: conn.volume_create(name="v", size=-512, template="ssd"), "size"),
        (lambda: conn.volume_create(name="v", size=512, template="a.b"), "template"),
        (lambda: conn.volume_create(name="v", size=512, template="ssd", tags={"uuid": "a b"}), "tags.uuid"),
        (lambda: conn.volume_create(name="v", size=512, template="ssd", iops=-1), "iops"),
        (lambda: conn.volume_update("v", size=513), "size"),
        (lambda: conn.snapshot_create("v", name="bad/name"), "name"),
        (lambda: conn.volume_delete("v", on_attached="later"), "onAttached"),
    ]
    for call, field in cases:
        with pytest.raises(ValidationError) as info:
            call()
        assert info.value.field == field
    assert sc.requests == []


def test_unreachable_api_is_transient_not_absent() -> None:
    conn = StorPoolConn("127.0.0.1", 1, TOKEN, retries=2, sleep=lambda s: None, timeout=2)
    with pytest.raises(SpUnreachable):
        conn.volume("v1")
    assert conn.calls["Volume"] == 3


def test_from_config_file(tmp_path: Any) -> None:
    cfg = tmp_path / "storpool.conf"
    cfg.write_text(f"SP_API_HTTP_HOST=127.0.0.9\nSP_API_HTTP_PORT=8181\nSP_AUTH_TOKEN={TOKEN}\nSP_OURID=7\n")
    conn = StorPoolConn.from_config(cfg)
    assert (conn.host, conn.port, conn.our_id) == ("127.0.0.9", 8181, 7)
    for bad in ("0", "4096", "seven"):
        (tmp_path / "bad.conf").write_text(f"SP_API_HTTP_HOST=h\nSP_AUTH_TOKEN=t\nSP_OURID={bad}\n")
        with pytest.raises(ValidationError) as info:
            StorPoolConn.from_config(tmp_path / "bad.conf")
        assert info.value.field == "storpool.conf.SP_OURID"
    (tmp_path / "empty.conf").write_text("SP_OURID=3\n")
    with pytest.raises(ValidationError):
        StorPoolConn.from_config(tmp_path / "empty.conf")


def test_records_hide_the_wire_quirks(script: tuple[Script, StorPoolConn]) -> None:
    """`"-"` is no limit (0), `""` is no parent, camel case stays on the wire."""
    sc, conn = script
    sc.on("Volume", data([summary("v1", "a.b.c", {"uuid": "u"})]))
    v = conn.volume("v1")
    assert v == SpVolume(name="v1", global_id="a.b.c", size=1 << 30, template="ssd", parent="", iops=0, bw=0,
                         tags={"uuid": "u"}, created=1700000000.0)
    assert (v.ref, v.path) == ("~a.b.c", "/dev/storpool-byid/a.b.c")
    sc.on("Volume", data([summary("v1", "a.b.c") | {"iops": 700, "parentName": "snap1"}]))
    v = conn.volume("v1")
    assert v is not None and (v.iops, v.parent) == (700, "snap1")
    sc.on("AttachmentsList", data([{"volume": "v1", "snapshot": False, "client": 3, "rights": "rw", "pos": 0,
                                    "globalId": "a.b.c"}]))
    assert conn.attachments() == [SpAttachment(name="v1", global_id="a.b.c", kind="volume", client=3, rights="rw")]


def snapshot_summary(name: str, gid: str, **extra: Any) -> dict[str, Any]:
    return summary(name, gid) | {"onVolume": "v1", "autoName": False, "bound": False, "deleted": False,
                                 "transient": False, "recoveringFromRemote": False} | extra


def test_bulk_lists_build_the_same_records(script: tuple[Script, StorPoolConn]) -> None:
    """The lists are read from the answer's JSON (not the bindings' per-object types): every
    field a record carries comes through as before, one request per list."""
    sc, conn = script
    sc.on("SnapshotsList", data([
        snapshot_summary("s1", "s.n.a", tags={"uuid": "u", "cs": "template"}),
        snapshot_summary("s2", "s.n.b", iops=500, bw="-", parentName="s1", deleted=True, transient=True,
                         targetDeleteDate=1700000600),
    ]))
    assert conn.snapshots() == [
        SpSnapshot(name="s1", global_id="s.n.a", size=1 << 30, template="ssd", tags={"uuid": "u", "cs": "template"},
                   created=1700000000.0, on_volume="v1"),
        SpSnapshot(name="s2", global_id="s.n.b", size=1 << 30, template="ssd", parent="s1", iops=500,
                   created=1700000000.0, on_volume="v1", deleted=True, transient=True, delete_at=1700000600.0),
    ]
    sc.on("VolumesSpace", data([summary("v1", "a.b.c") | {"spaceUsed": 4096, "storedSize": 512, "bw": 100}]))
    assert conn.volumes_space() == [SpVolume(name="v1", global_id="a.b.c", size=1 << 30, template="ssd", bw=100,
                                             created=1700000000.0, space_used=4096, stored=512)]
    sc.on("VolumesList", data([summary("v1", "a.b.c"), summary("v2", "a.b.d", {"cs": "volume"})]))
    assert [(v.name, v.ref, dict(v.tags)) for v in conn.volumes()] == [("v1", "~a.b.c", {}),
                                                                       ("v2", "~a.b.d", {"cs": "volume"})]
    sc.on("VolumeTemplateDescribe", data({"name": "ssd", "iops": 1000, "bw": "-", "replication": 3,
                                          "placeAll": "ssd", "placeTail": "ssd", "placeHead": "ssd",
                                          "parentName": "", "size": "-"}))
    assert conn.template("ssd") == SpTemplate(name="ssd", iops=1000, bw=0, replication=3)
    assert [conn.calls[q] for q in ("SnapshotsList", "VolumesSpace", "VolumesList")] == [1, 1, 1]


MALFORMED_LISTS = {
    # answer of VolumesList -> the field named
    "globalId missing": ([summary("v1", "a.b.c"), {**summary("v2", "x"), "globalId": None}], "data[1].globalId"),
    "size a string": ([summary("v1", "a.b.c") | {"size": "1G"}], "data[0].size"),
    "tag value a number": ([summary("v1", "a.b.c", {"uuid": 7})], "data[0].tags.uuid"),  # type: ignore[dict-item]
    "iops a word": ([summary("v1", "a.b.c") | {"iops": "many"}], "data[0].iops"),
    "object a string": (["v1"], "data[0]"),
    "data an object": ({"v1": summary("v1", "a.b.c")}, "data"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED_LISTS))
def test_a_malformed_list_answer_is_an_error_naming_the_field(script: tuple[Script, StorPoolConn], case: str) -> None:
    """Not a crash, not a record with globalId "None": SpMalformed, with the field, not retried."""
    sc, conn = script
    answer, field = MALFORMED_LISTS[case]
    sc.on("VolumesList", data(answer))
    with pytest.raises(SpMalformed) as info:
        conn.volumes()
    assert info.value.field == field and info.value.query == "VolumesList"
    assert str(info.value).startswith(f"StorPool malformedAnswer (VolumesList): {field}: ")
    assert conn.calls["VolumesList"] == 1
    sc.on("Volume", data(answer))
    with pytest.raises(SpMalformed) as one:
        conn.volume("v1")
    assert one.value.field == field


def test_active_requests_without_their_list_are_malformed_not_idle(script: tuple[Script, StorPoolConn]) -> None:
    """The bindings filled a missing `requests` with [], which reads as "no I/O"."""
    sc, conn = script
    sc.on("ClientActiveRequests", data({"clientId": 3, "requests": [
        {"requestId": "1", "requestIdx": 0, "volume": "v1", "address": 0, "size": 4096, "op": "write",
         "msecActive": 10}]}))
    assert conn.client_active_requests(3) == [SpActiveRequest(volume="v1")]
    sc.on("ClientActiveRequests", data({"clientId": 3, "requests": []}))
    assert conn.client_active_requests(3) == []
    for answer, field in (({"clientId": 3}, "data.requests"), ({"clientId": 3, "requests": None}, "data.requests"),
                          ({"clientId": 3, "requests": [{"op": "write"}]}, "data.requests[0].volume"),
                          ("idle", "data")):
        sc.on("ClientActiveRequests", data(answer))
        with pytest.raises(SpMalformed) as info:
            conn.client_active_requests(3)
        assert info.value.field == field


def test_attach_and_detach_are_one_interface(script: tuple[Script, StorPoolConn]) -> None:
    """Attach waits for the client; detach from named clients waits too, from all it does not."""
    sc, conn = script
    sc.on("VolumesReassignWait", ok())
    sc.on("VolumesReassign", ok())
    snap = Ref("snapshot", "~s.n.p")
    conn.attach(snap, 5, "ro", timeout=30)
    conn.detach(snap, 5)
    conn.detach([Ref("volume", "v1"), snap], force=True)
    conn.detach(Ref("volume", "v1"), [2, 3], force=True)
    # (the bindings add "force": false where none was asked for)
    assert sc.sent("VolumesReassignWait") == [
        {"reassign": [{"snapshot": "~s.n.p", "ro": [5], "force": False}], "attachTimeout": 30},
        {"reassign": [{"snapshot": "~s.n.p", "detach": [5], "force": False}]},
        {"reassign": [{"volume": "v1", "detach": [2, 3], "force": True}]},
    ]
    assert sc.sent("VolumesReassign") == [[{"volume": "v1", "detach": "all", "force": True},
                                          {"snapshot": "~s.n.p", "detach": "all", "force": True}]]
    sc.on("VolumesReassign", err("objectDoesNotExist", "gone", status=404))
    assert conn.detach(snap) is False
    for bad in (lambda: conn.attach(snap, 5, "rw"), lambda: conn.attach(snap, 0, "ro"),
                lambda: conn.detach(snap, 4096)):
        with pytest.raises(ValidationError):
            bad()


def test_alternative_endpoint_takes_over_when_the_primary_does_not_answer(
    script: tuple[Script, StorPoolConn], caplog: pytest.LogCaptureFixture,
) -> None:
    """A refused connection (nothing sent) is re-sent to the alternative; the switch is logged once."""
    sc, good = script
    asked: list[int] = []

    def alternative() -> tuple[str, int, str]:
        asked.append(1)
        return good.host, good.port, TOKEN

    conn = StorPoolConn("127.0.0.1", 1, TOKEN, retries=0, sleep=lambda s: None, timeout=5, alternative=alternative)
    sc.on("Volume", data([summary("v1", "a.b.c")]))
    sc.on("VolumeCreate", ok(name="v2", globalId="n.e.w"))
    with caplog.at_level(logging.WARNING, logger="cloudstack_storpool.spconn"):
        v = conn.volume("v1")
        created = conn.volume_create(name="v2", size=1 << 20, template="ssd")
    assert v is not None and v.global_id == "a.b.c" and created.global_id == "n.e.w"
    assert len(asked) == 1 and len(sc.sent("VolumeCreate")) == 1
    assert [r.getMessage() for r in caplog.records if "switching" in r.getMessage()] == [
        f"StorPool API 127.0.0.1:1 does not answer (ConnectionRefusedError): switching to the alternative "
        f"endpoint {good.host}:{good.port}"]


def test_a_write_whose_answer_was_lost_is_not_resent_to_the_alternative(script: tuple[Script, StorPoolConn]) -> None:
    """It may have been applied: the caller decides; the next call goes to the other endpoint."""
    sc, good = script
    conn = StorPoolConn(good.host, good.port, TOKEN, retries=0, sleep=lambda s: None, timeout=5,
                        alternative=lambda: (good.host, good.port, TOKEN))
    sc.on("VolumeUpdate", DROP, ok())
    with pytest.raises(SpUnreachable):
        conn.volume_update("v1", size=1 << 21)
    assert len(sc.sent("VolumeUpdate")) == 1
    conn.volume_update("v1", size=1 << 21)
    assert len(sc.sent("VolumeUpdate")) == 2


def test_a_create_and_its_lookups_share_one_retry_budget(script: tuple[Script, StorPoolConn]) -> None:
    sc, conn = script
    busy = err("busy", "overloaded", transient=True)
    sc.on("VolumeCreate", busy)
    sc.on("Volume", busy)
    with pytest.raises(SpTransient):
        conn.volume_create(name="v3", size=1 << 20, template="ssd")
    # Before: 4 creates, each followed by a lookup retried 4 times (16 calls). Now every try
    # after the first spends the one budget of 3 retries.
    assert len(sc.sent("VolumeCreate")) + len(sc.sent("Volume")) == 1 + 3
    # The budget is per operation: the next call has a fresh one.
    sc.on("VolumesList", busy, data([]))
    assert conn.volumes() == []


def test_the_retry_budget_bounds_the_time_spent(script: tuple[Script, StorPoolConn]) -> None:
    sc, base = script
    now = [0.0]
    slept: list[float] = []

    def sleep(s: float) -> None:
        slept.append(s)
        now[0] += s

    conn = StorPoolConn(base.host, base.port, TOKEN, retries=50, sleep=sleep, clock=lambda: now[0], timeout=5)
    busy = err("busy", "overloaded", transient=True)
    sc.on("VolumeCreate", busy)
    sc.on("Volume", busy)
    with pytest.raises(SpTransient):
        conn.volume_create(name="v4", size=1 << 20, template="ssd")
    assert sum(slept) <= 10.0
    assert sum(slept) + 8.0 > 10.0  # it stopped because the next pause would not fit


def test_a_delete_whose_answer_was_lost_reports_that_it_deleted(script: tuple[Script, StorPoolConn]) -> None:
    sc, conn = script
    # The first VolumeDelete is applied but its answer is lost; the retry finds nothing.
    sc.on("VolumeDelete", DROP, err("objectDoesNotExist", "gone", status=404))
    assert conn.volume_delete("~a.b.c") is True
    assert len(sc.sent("VolumeDelete")) == 2
    sc.on("SnapshotDelete", DROP, err("objectDoesNotExist", "gone", status=404))
    assert conn.snapshot_delete("snap1", missing_ok=False) is True


def test_a_create_made_here_shows_the_endpoints_own_cluster(script: tuple[Script, StorPoolConn]) -> None:
    """An empty volume nothing forwarded is in the endpoint's own cluster: its global id's first
    two parts are that cluster's SP_CLUSTER_ID. A forwarded create, a clone (its parent may be
    elsewhere) or a recovered answer (found anywhere) says nothing about it."""
    sc, conn = script
    sc.on("VolumeCreate", ok(name="~ab.e.1", globalId="ab.e.1", autoName=True))
    sc.on("RemoteCommand", ok(name="~ab.e.1", globalId="ab.e.1", autoName=True))  # RemoteCommand/east/VolumeCreate
    conn.volume_create(size=1 << 20, template="ssd", cluster="east")
    conn.volume_create(parent="snap", template="ssd")
    assert conn.home_cluster is None
    sc.on("VolumeCreate", DROP)
    sc.on("Volume", data([summary("found", "ab.e.2")]))
    conn.volume_create(name="found", size=1 << 20, template="ssd")
    assert conn.home_cluster is None
    sc.on("VolumeCreate", ok(name="~ab.w.3", globalId="ab.w.3", autoName=True))
    conn.volume_create(size=1 << 20, template="ssd")
    assert conn.home_cluster == "ab.w"
