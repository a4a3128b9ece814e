"""The simulator's wire against the real `cs` client over real HTTP: signatures, envelopes, paging, jobs."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cs
import pytest
import requests

from cloudstack_storpool import cloudstack as facade
from integration.cloudstack_sim import signing
from integration.cloudstack_sim.model import CloudStackModel
from integration.cloudstack_sim.server import make_server
from integration.cloudstack_sim.testing import SimHandle, run_simulator

METHODS = ["get", "post"]


def stock(sim: SimHandle, method: str = "get", secret: str | None = None) -> cs.CloudStack:
    """The unmodified `cs` client, as any CloudStack user would run it."""
    return cs.CloudStack(sim.endpoint, sim.key, secret or sim.secret, method=method)


# ---------------------------------------------------------------- signatures


@pytest.mark.parametrize("method", METHODS)
def test_signed_request_is_accepted(cs_sim: SimHandle, method: str) -> None:
    answer = stock(cs_sim, method).listZones()
    assert answer["count"] == 1
    assert answer["zone"][0]["name"] == "zone1"
    assert cs_sim.model.calls[-1].method == method.upper()


@pytest.mark.parametrize("method", METHODS)
def test_wrong_secret_is_401(cs_sim: SimHandle, method: str) -> None:
    with pytest.raises(cs.CloudStackApiException) as info:
        stock(cs_sim, method, secret="not-the-secret").listZones()
    assert info.value.response.status_code == 401
    assert info.value.error["errorcode"] == 401
    assert "unable to verify user credentials" in info.value.error["errortext"]
    assert cs_sim.model.calls == []


class _Tamper(cs.CloudStack):
    """Signs correctly, then changes a parameter: what a man in the middle would do."""

    def _sign(self, data):  # type: ignore[no-untyped-def]
        super()._sign(data)
        data["name"] = "kvm2"


@pytest.mark.parametrize("method", METHODS)
def test_tampered_request_is_401(cs_sim: SimHandle, method: str) -> None:
    client = _Tamper(cs_sim.endpoint, cs_sim.key, cs_sim.secret, method=method)
    with pytest.raises(cs.CloudStackApiException) as info:
        client.listHosts(name="kvm1")
    assert info.value.response.status_code == 401


@pytest.mark.parametrize("method", METHODS)
def test_expired_request_is_401(cs_sim: SimHandle, method: str) -> None:
    past = (datetime.now(UTC) - timedelta(seconds=5)).strftime("%Y-%m-%dT%H:%M:%S%z")
    with pytest.raises(cs.CloudStackApiException) as info:
        stock(cs_sim, method).listZones(signatureVersion="3", expires=past)
    assert info.value.response.status_code == 401
    # The same request with a future expiry goes through: it is the expiry that was refused.
    future = (datetime.now(UTC) + timedelta(seconds=60)).strftime("%Y-%m-%dT%H:%M:%S%z")
    assert stock(cs_sim, method).listZones(signatureVersion="3", expires=future)["count"] == 1


def test_unsigned_and_unknown_key_are_401(cs_sim: SimHandle) -> None:
    r = requests.get(cs_sim.endpoint, params={"command": "listZones", "response": "json"}, timeout=5)
    assert r.status_code == 401
    assert r.json()["listzonesresponse"]["errorcode"] == 401
    with pytest.raises(cs.CloudStackApiException) as info:
        cs.CloudStack(cs_sim.endpoint, "nobody", cs_sim.secret).listZones()
    assert info.value.response.status_code == 401


def test_signature_version3_needs_expires(cs_sim: SimHandle) -> None:
    params = {"command": "listZones", "response": "json", "apiKey": cs_sim.key, "signatureVersion": "3"}
    params["signature"] = signing.compute_signature(params, cs_sim.secret)
    assert requests.get(cs_sim.endpoint, params=params, timeout=5).status_code == 401


@pytest.mark.parametrize("method", METHODS)
def test_stock_cs_client_fails_on_tilde_like_a_real_server(cs_sim: SimHandle, method: str) -> None:
    """`cs` signs `~` bare; the server encodes it as %7E: the real server answers 401, so do we."""
    with pytest.raises(cs.CloudStackApiException) as info:
        stock(cs_sim, method).updateConfiguration(name="sp.cluster.id", value="a~b")
    assert info.value.response.status_code == 401
    # Without a tilde the same stock client is fine (spaces, + and * included).
    answer = stock(cs_sim, method).updateConfiguration(name="sp.cluster.id", value="a b+c*d")
    assert answer["configuration"]["value"] == "a b+c*d"


@pytest.mark.parametrize("method", METHODS)
def test_tilde_space_plus_round_trip_through_the_facade(cs_sim: SimHandle, method: str) -> None:
    client = cs_sim.client(method=method)
    value = "~ops team+storage ~ 1+1=2 * 50% é/&?"
    cluster = client.clusters()[0].id
    written = client.update_configuration("sp.cluster.id", value, cluster_id=cluster)
    assert written.value == value
    assert cs_sim.model.scoped_values[("cluster", cluster, "sp.cluster.id")] == value
    read = client.configuration("sp.cluster.id", cluster_id=cluster)
    assert read is not None and read.value == value and read.scope == "cluster"
    # And a ~ in a global value, read back through a GET listing.
    client.update_configuration("sp.alternative.endpoint", "SP_API_HTTP=h:81;SP_AUTH_TOKEN=~t+k n")
    conf = client.configuration("sp.alternative.endpoint")
    assert conf is not None and conf.value == "SP_API_HTTP=h:81;SP_AUTH_TOKEN=~t+k n"


def test_server_encoder_matches_java_rules() -> None:
    assert signing.java_url_encode("a b+c~d*e.f-g_h/é") == "a+b%2Bc%7Ed*e.f-g_h%2F%C3%A9"
    # The facade's encoder must agree with the simulator's on every printable ASCII character.
    for code in range(32, 127):
        ch = chr(code) + "x"
        assert facade.server_encode(ch) == signing.java_url_encode(ch).replace("+", "%20"), ch


# ---------------------------------------------------------------- envelopes and errors


def test_envelopes(cs_sim: SimHandle) -> None:
    raw = requests.get(cs_sim.endpoint, params=_signed(cs_sim, command="listVMSnapshot"), timeout=5)
    assert raw.status_code == 200
    assert raw.headers["Content-Type"].startswith("application/json")
    assert raw.json() == {"listvmsnapshotresponse": {}}  # an empty list is {}
    vm = next(iter(cs_sim.model.vms.values()))
    cs_sim.model.add_vm_snapshot(vm.id, "snap1")
    answer = stock(cs_sim).listVMSnapshot()
    assert answer["count"] == 1 and answer["vmSnapshot"][0]["name"] == "snap1"


def _signed(sim: SimHandle, **params: str) -> dict[str, str]:
    params = {**params, "response": "json", "apiKey": sim.key, "signatureVersion": "3",
              "expires": (datetime.now(UTC) + timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%S%z")}
    params["signature"] = signing.compute_signature(params, sim.secret)
    return params


def test_errors_carry_codes_and_text(cs_sim: SimHandle) -> None:
    c = stock(cs_sim)
    with pytest.raises(cs.CloudStackApiException) as info:
        c.listTemplates()
    assert info.value.response.status_code == 431
    assert info.value.error["errortext"] == (
        "Unable to execute API command listtemplates due to missing parameter templatefilter")
    assert info.value.error["cserrorcode"] == 9999
    with pytest.raises(cs.CloudStackApiException) as info:
        c.noSuchCommand()
    assert info.value.response.status_code == 432
    with pytest.raises(cs.CloudStackApiException) as info:
        c.listHosts(id="1f0e0d9c-0000-4000-8000-000000000000")
    assert info.value.response.status_code == 431
    assert "entity does not exist" in info.value.error["errortext"]
    assert info.value.error["cserrorcode"] == 4350
    with pytest.raises(cs.CloudStackApiException) as info:
        c.updateConfiguration(name="no.such.setting", value="1")
    assert info.value.response.status_code == 431
    assert "no.such.setting" in info.value.error["errortext"]


def test_wrong_path_is_404(cs_sim: SimHandle) -> None:
    r = requests.get(cs_sim.endpoint.replace("/client/api", "/client/other"), timeout=5)
    assert r.status_code == 404


def test_configuration_rules(cs_sim: SimHandle) -> None:
    c = stock(cs_sim)
    with pytest.raises(cs.CloudStackApiException) as info:
        c.updateConfiguration(name="sp.bypass.secondary.storage", value="maybe")
    assert info.value.response.status_code == 431
    zone = next(iter(cs_sim.model.zones))
    with pytest.raises(cs.CloudStackApiException) as info:
        c.updateConfiguration(name="sp.bypass.secondary.storage", value="true", zoneid=zone)
    assert "Invalid scope id" in info.value.error["errortext"]
    # name is a substring filter, as on the real server
    names = [i["name"] for i in c.listConfigurations(name="heartbeat")["configuration"]]
    assert "storpool.heartbeat.interval" in names and "storpool.heartbeat.action" in names
    # a scoped listing lists that scope's settings only, with the global value as fallback
    zoned = c.listConfigurations(zoneid=zone)["configuration"]
    assert {i["name"] for i in zoned} == {"kvm.ha.fence.on.storage.heartbeat.failure"}
    assert zoned[0]["scope"] == "zone" and zoned[0]["value"] == "false"
    glob = c.listConfigurations(name="kvm.ha.fence.on.storage.heartbeat.failure")["configuration"][0]
    assert "scope" not in glob and glob["defaultvalue"] == "false" and glob["isdynamic"] is True


# ---------------------------------------------------------------- paging


def test_paging_beyond_500(cs_sim: SimHandle) -> None:
    model = cs_sim.model
    before = len(model.templates)
    for i in range(1203):
        model.add_template(f"bulk-{i:04d}", 1024 * 1024)
    total = before + 1203
    c = stock(cs_sim)
    page2 = c.listTemplates(templatefilter="all", page=2, pagesize=500)
    assert page2["count"] == total and len(page2["template"]) == 500
    page3 = c.listTemplates(templatefilter="all", page=3, pagesize=500)
    assert len(page3["template"]) == total - 1000
    beyond = c.listTemplates(templatefilter="all", page=4, pagesize=500)
    assert beyond == {"count": total}
    everything = c.listTemplates(templatefilter="all", fetch_list=True)
    assert len(everything) == total and len({t["id"] for t in everything}) == total
    pages = [call.params.get("page") for call in model.calls if call.command == "listTemplates"][-3:]
    assert pages == ["1", "2", "3"]
    # the facade pages too
    assert len(cs_sim.client().templates()) == total
    with pytest.raises(cs.CloudStackApiException) as info:
        c.listTemplates(templatefilter="all", page=1, pagesize=501)
    assert info.value.response.status_code == 431
    with pytest.raises(cs.CloudStackApiException) as info:
        c.listTemplates(templatefilter="all", pagesize=10)
    assert "page" in info.value.error["errortext"]
    assert len(c.listTemplates(templatefilter="all", page=1, pagesize=-1)["template"]) == total


# ---------------------------------------------------------------- async jobs


def test_async_job_pending_then_done(cs_sim: SimHandle) -> None:
    model = cs_sim.model
    model.job_delay = 0.3
    tpl = model.add_template("unused", 1024)
    other = model.add_template("unused-too", 1024)
    c = stock(cs_sim)
    jobid = c.deleteTemplate(id=tpl.id)["jobid"]
    first = c.queryAsyncJobResult(jobid=jobid)
    assert first["jobstatus"] == 0 and "jobresult" not in first
    client = cs_sim.client()
    client.delete_template(other.id)  # the facade waits for its own job (pending first)
    assert client.template(other.id) is None
    done = c.queryAsyncJobResult(jobid=jobid)
    assert done["jobstatus"] == 1 and done["jobresult"] == {"success": True}
    assert done["jobinstanceid"] == tpl.id
    assert client.template(tpl.id) is None
    assert [e.resource_id for e in client.events("TEMPLATE.DELETE")][:2] == [other.id, tpl.id]


@pytest.mark.parametrize("method", METHODS)
def test_failed_async_job_surfaces_its_error_text(cs_sim: SimHandle, method: str) -> None:
    client = cs_sim.client(method=method)
    tiny = next(t for t in client.templates() if t.name == "tiny-linux")
    with pytest.raises(facade.CloudStackJobError) as info:
        client.delete_template(tiny.id)  # VMs use it
    assert "are using it" in info.value.errortext
    assert info.value.errorcode == 431  # InvalidParameterValueException inside the job
    assert info.value.jobid
    assert "are using it" in str(info.value)
    assert client.template(tiny.id) is not None
    cs_sim.model.inject_job_failure("generateAlert", "mail relay down")
    with pytest.raises(facade.CloudStackJobError, match="mail relay down"):
        client.generate_alert("storpool heartbeat", "host kvm1 failed")


def test_async_job_timeout(cs_sim: SimHandle) -> None:
    cs_sim.model.job_delay = 30
    client = cs_sim.client(job_timeout=1, poll_interval=0.1)
    with pytest.raises(facade.CloudStackTimeout) as info:
        client.generate_alert("x", "y")
    assert info.value.jobid in cs_sim.model.jobs


def test_generate_alert(cs_sim: SimHandle) -> None:
    client = cs_sim.client()
    client.generate_alert("STORPOOL.HEARTBEAT", "host kvm1: storage heartbeat failed 3 times")
    [alert] = cs_sim.model.alerts.values()
    assert alert.type == facade.STORPOOL_ALERT_TYPE and "kvm1" in alert.description
    with pytest.raises(facade.CloudStackJobError, match="default alert having type 2"):
        client.generate_alert("other", "x", alert_type=2)
    with pytest.raises(facade.CloudStackParamError, match="missing parameter description"):
        client.generate_alert("x", "")


def test_unknown_job_is_431(cs_sim: SimHandle) -> None:
    with pytest.raises(cs.CloudStackApiException) as info:
        stock(cs_sim).queryAsyncJobResult(jobid="nope")
    assert info.value.response.status_code == 431


# ---------------------------------------------------------------- process concerns


def test_state_file_persists_the_world(tmp_path: Path) -> None:
    state = tmp_path / "cs.json"
    with run_simulator(state=state) as sim:
        client = sim.client()
        client.update_configuration("storpool.heartbeat.action", "alert")
        tpl = sim.model.add_template("kept", 1024)
        sim.model.save()
    assert sim.secret not in state.read_text()
    with run_simulator(state=state) as again:
        client = again.client()
        assert client.configuration("storpool.heartbeat.action").value == "alert"  # type: ignore[union-attr]
        assert client.template(tpl.id) is not None
        assert json.loads(state.read_text())["templates"]


def test_loopback_only() -> None:
    with pytest.raises(ValueError, match="loopback"):
        make_server(CloudStackModel(), {"k": "s"}, host="0.0.0.0")


def test_secret_not_in_logs(cs_sim: SimHandle, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG")
    stock(cs_sim).listZones()
    with pytest.raises(cs.CloudStackApiException):
        stock(cs_sim, secret="wrong").listZones()
    assert cs_sim.secret not in caplog.text
    ours = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("integration.cloudstack_sim"))
    assert "refused listZones" in ours
    assert "signature=" not in ours and "apiKey" not in ours
