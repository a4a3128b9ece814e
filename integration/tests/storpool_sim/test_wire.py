"""The wire as a hand-written client sees it: paths, auth, envelopes, request validation."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from integration.storpool_sim.testing import EmulatorHandle, run_emulator

from .conftest import raw

GiB = 1 << 30


@pytest.mark.parametrize("token", ["", "wrong"])
def test_bad_or_missing_token_is_refused(emu: EmulatorHandle, token: str) -> None:
    status, body = raw(emu, "GET", "/ctrl/1.0/VolumesList", token=token)
    assert status == 401
    assert body["error"]["name"] == "authError"
    assert emu.token not in str(body)
    status, body = raw(emu, "POST", "/ctrl/1.0/VolumeCreate", {"name": "x", "size": GiB, "template": "ssd"},
                       token=token)
    assert status == 401
    assert raw(emu, "GET", "/ctrl/1.0/VolumesList")[1]["data"] == []  # nothing was created


@pytest.mark.parametrize(
    "prefix",
    ["/ctrl/1.0/", "/ctrl/1.0/MultiCluster/", "/ctrl/1.0/MultiCluster/AllClusters/",
     "/ctrl/1.0/RemoteCommand/sim/", "/ctrl/1.0/RemoteCommand/sim/MultiCluster/"],
)
def test_every_path_form_reaches_the_cluster(emu: EmulatorHandle, prefix: str) -> None:
    status, body = raw(emu, "POST", prefix + "VolumeCreate", {"name": "v", "size": GiB, "template": "ssd"})
    assert status == 200
    assert body["data"]["ok"] is True and body["data"]["name"] == "v"
    assert body["generation"] == body["data"]["generation"]
    status, body = raw(emu, "GET", prefix + "Volume/v")
    assert status == 200 and body["data"][0]["name"] == "v"
    assert isinstance(body["generation"], int)


def test_generation_grows_with_each_mutation(emu: EmulatorHandle) -> None:
    g0 = raw(emu, "GET", "/ctrl/1.0/VolumesList")[1]["generation"]
    raw(emu, "POST", "/ctrl/1.0/VolumeCreate", {"name": "v", "size": GiB, "template": "ssd"})
    g1 = raw(emu, "GET", "/ctrl/1.0/VolumesList")[1]["generation"]
    assert g1 > g0


def test_get_arguments_travel_as_json_query(emu: EmulatorHandle) -> None:
    status, body = raw(emu, "GET", "/ctrl/1.0/VolumesList", args={})
    assert status == 200 and body["data"] == []


def test_unknown_query_and_wrong_method(emu: EmulatorHandle) -> None:
    status, body = raw(emu, "GET", "/ctrl/1.0/NoSuchQuery")
    assert status == 404 and "error" in body
    status, body = raw(emu, "GET", "/ctrl/1.0/VolumeCreate")
    assert status == 405 and body["error"]["name"] == "invalidParam"


@pytest.mark.parametrize(
    "body",
    [
        {"name": "bad name", "size": GiB, "template": "ssd"},
        {"name": "list", "size": GiB, "template": "ssd"},
        {"name": "v", "size": 1000, "template": "ssd"},
        {"name": "v", "size": GiB, "template": "ssd", "tags": {"bad key": "x"}},
        {"name": "v", "size": GiB, "template": "ssd", "tags": {"k": "bad value"}},
        {"name": "v", "size": GiB, "template": "ssd", "colour": "blue"},
        {"name": "v" * 200, "size": GiB, "template": "ssd"},
    ],
)
def test_invalid_create_requests(emu: EmulatorHandle, body: dict[str, object]) -> None:
    status, res = raw(emu, "POST", "/ctrl/1.0/MultiCluster/VolumeCreate", body)
    assert status == 400 and res["error"]["name"] == "invalidParam", res
    assert raw(emu, "GET", "/ctrl/1.0/VolumesList")[1]["data"] == []


def test_empty_name_makes_an_anonymous_volume(emu: EmulatorHandle) -> None:
    status, res = raw(emu, "POST", "/ctrl/1.0/VolumeCreate", {"name": "", "size": GiB, "template": "ssd"})
    assert status == 200
    gid = res["data"]["globalId"]
    assert res["data"]["name"] == f"~{gid}"


def test_malformed_json_is_invalid_param(emu: EmulatorHandle) -> None:
    import http.client

    conn = http.client.HTTPConnection(emu.host, emu.port, timeout=10)
    conn.request("POST", "/ctrl/1.0/VolumeCreate", "{not json", {"Authorization": f"Storpool v1:{emu.token}"})
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    assert resp.status == 400 and b"invalidParam" in body


def test_token_never_logged(emu: EmulatorHandle, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    raw(emu, "GET", "/ctrl/1.0/VolumesList")
    raw(emu, "GET", "/ctrl/1.0/VolumesList", token="wrong")
    assert caplog.records, "request lines are expected at debug level"
    assert all(emu.token not in r.getMessage() for r in caplog.records)


def test_calls_are_counted_per_query(emu: EmulatorHandle) -> None:
    api = emu.api()
    api.volumesList()
    api.volumesList()
    api.servicesList()
    assert emu.calls["VolumesList"] == 2 and emu.calls["ServicesList"] == 1
    status, body = raw(emu, "GET", "/_sim/calls")
    assert status == 200 and body["data"]["VolumesList"] == 2


def test_remote_command_takes_a_cluster_name_listed_by_clusters_list(emu: EmulatorHandle, tmp_path: Path) -> None:
    """As in StorPool's API (`RemoteCommand/<clusterName>/`): the name ClustersList shows, never the
    cluster id (`<location>.<cluster>`, the global-id prefix that SP_CLUSTER_ID holds)."""
    with run_emulator(tmp_path / "east-data", tmp_path / "east-dev", token=emu.token, use_loop=False,
                      cluster_name="east", cluster_id="e") as east:
        emu.emulator.join(east.emulator)
        listed = emu.strict_api().clustersList()["clusters"]
        assert [(c.name, c.id, c.location) for c in listed] == [("east", "e", east.model.location_name)]
        assert emu.strict_api().locationsList()["locations"] == []  # same location: no remote location
        status, body = raw(emu, "POST", "/ctrl/1.0/RemoteCommand/east/MultiCluster/VolumeCreate",
                           {"name": "v", "size": GiB, "template": "ssd"})
        assert status == 200 and "v" in east.model.by_name and "v" not in emu.model.by_name
        status, body = raw(emu, "POST", "/ctrl/1.0/RemoteCommand/lab.e/MultiCluster/VolumeCreate",
                           {"name": "w", "size": GiB, "template": "ssd"})
        assert status == 400 and body["error"]["name"] == "invalidParam" and "lab.e" in body["error"]["descr"]
        assert "w" not in east.model.by_name and "w" not in emu.model.by_name
