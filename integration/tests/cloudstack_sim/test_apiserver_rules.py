"""The simulator follows CloudStack's ApiServer / ParamProcessWorker / BaseListCmd /
ConfigurationManagerImpl rules (as CloudStack's source has them), checked with the stock `cs` client and
with raw requests signed here, independently of the simulator's own signing code."""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import cs
import pytest
import requests

from integration.cloudstack_sim.testing import SimHandle

Pairs = list[tuple[str, str]]


def _sign(pairs: Pairs, secret: str) -> str:
    """Signature version 3 as the server checks it: the first value of each name (ApiServer reads
    element 0 of the servlet's values), sorted by name, Java-encoded (`~` as %7E, space as %20),
    lower-cased, HMAC-SHA1, base64."""
    params: dict[str, str] = {}
    for k, v in pairs:
        params.setdefault(k, v)
    text = "&".join(f"{k}={quote(params[k], safe='*').replace('~', '%7E')}" for k in sorted(params)).lower()
    return base64.b64encode(hmac.new(secret.encode(), text.encode(), hashlib.sha1).digest()).decode()


def _expires(fmt: str = "%Y-%m-%dT%H:%M:%S%z", minutes: int = 5) -> str:
    return (datetime.now(UTC) + timedelta(minutes=minutes)).strftime(fmt)


def raw(sim: SimHandle, command: str, *extra: tuple[str, str], control: dict[str, str] | None = None,
        expires: str | None = None) -> requests.Response:
    """A signed GET with the parameters in the order given (repeats kept); `control` renames the
    control parameters (e.g. {"apiKey": "APIKEY"})."""
    names = {"apiKey": "apiKey", "signatureVersion": "signatureVersion", "expires": "expires",
             "signature": "signature", **(control or {})}
    pairs: Pairs = [("command", command), ("response", "json"), *extra, (names["apiKey"], sim.key),
                    (names["signatureVersion"], "3"), (names["expires"], expires or _expires())]
    pairs.append((names["signature"], _sign(pairs, sim.secret)))
    query = "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in pairs)
    return requests.get(f"{sim.endpoint}?{query}", timeout=5)


def body(response: requests.Response, command: str) -> dict[str, Any]:
    data = response.json()
    return data[f"{command.lower()}response"]  # type: ignore[no-any-return]


def stock(sim: SimHandle) -> cs.CloudStack:
    return cs.CloudStack(sim.endpoint, sim.key, sim.secret)


def api_error(call: Any, *args: Any, **kwargs: Any) -> tuple[int, dict[str, Any]]:
    with pytest.raises(cs.CloudStackApiException) as info:
        call(*args, **kwargs)
    return info.value.response.status_code, info.value.error


# ---------------------------------------------------------------- control parameters


@pytest.mark.parametrize("renamed", [
    {"apiKey": "apikey"}, {"apiKey": "APIKEY"}, {"signature": "Signature"},
    {"signatureVersion": "signatureversion", "expires": "EXPIRES"},
])
def test_control_parameters_in_any_case(cs_sim: SimHandle, renamed: dict[str, str]) -> None:
    r = raw(cs_sim, "listZones", control=renamed)
    assert r.status_code == 200, r.text
    assert body(r, "listZones")["count"] == 1
    assert cs_sim.model.calls[-1].params == {}  # control parameters are not the command's


@pytest.mark.parametrize("fmt", ["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S.000%z"])
def test_expires_in_dateutil_formats(cs_sim: SimHandle, fmt: str) -> None:
    assert raw(cs_sim, "listZones", expires=_expires(fmt)).status_code == 200
    assert raw(cs_sim, "listZones", expires=_expires(fmt, minutes=-1)).status_code == 401  # passed
    assert raw(cs_sim, "listZones", expires="tomorrow").status_code == 401


def test_repeated_key_first_value_wins(cs_sim: SimHandle) -> None:
    r = raw(cs_sim, "listHosts", ("name", "kvm1"), ("name", "kvm2"))
    assert r.status_code == 200, r.text
    assert [h["name"] for h in body(r, "listHosts")["host"]] == ["kvm1"]


def test_repeated_key_in_a_post_body_first_value_wins(cs_sim: SimHandle) -> None:
    """ApiServlet hands ApiServer the servlet's values of a name, and ApiServer reads the first:
    a POST form repeating `name` is read (and signed) with its first value."""
    pairs: Pairs = [("command", "listHosts"), ("response", "json"), ("name", "kvm2"), ("name", "kvm1"),
                    ("apiKey", cs_sim.key), ("signatureVersion", "3"), ("expires", _expires())]
    pairs.append(("signature", _sign(pairs, cs_sim.secret)))
    r = requests.post(cs_sim.endpoint, data=pairs, timeout=5)
    assert r.status_code == 200, r.text
    assert [h["name"] for h in body(r, "listHosts")["host"]] == ["kvm2"]


def test_parameter_names_in_any_case(cs_sim: SimHandle) -> None:
    """ApiServer lower-cases the names before the command reads them: `Name` is `name`."""
    r = raw(cs_sim, "listHosts", ("Name", "kvm2"))
    assert r.status_code == 200, r.text
    assert [h["name"] for h in body(r, "listHosts")["host"]] == ["kvm2"]
    assert cs_sim.model.calls[-1].params == {"name": "kvm2"}


# ---------------------------------------------------------------- errors


def test_unknown_command_is_401_errorresponse(cs_sim: SimHandle) -> None:
    r = raw(cs_sim, "deployVirtualMachineNow")
    assert r.status_code == 401
    assert r.json() == {"errorresponse": {"uuidList": [], "errorcode": 401, "errortext":
                                          "unable to verify user credentials and/or request signature"}}
    status, error = api_error(stock(cs_sim).noSuchCommand)
    assert status == 401 and error["errorcode"] == 401
    assert cs_sim.model.calls == []


def test_unknown_uuid_is_431_with_cloudstacks_text(cs_sim: SimHandle) -> None:
    missing = "1f0e0d9c-0000-4000-8000-000000000000"
    status, error = api_error(stock(cs_sim).listVolumes, virtualmachineid=missing)
    assert status == 431 and error["errorcode"] == 431 and error["cserrorcode"] == 9999
    assert error["errortext"] == (
        f"Unable to execute API command listvolumes due to invalid value. Invalid parameter virtualmachineid "
        f"value={missing} due to incorrect long value format, or entity does not exist or due to incorrect "
        "parameter annotation for the field in api cmd class.")


def test_failed_async_job_on_a_bad_parameter_is_431_without_cserrorcode(cs_sim: SimHandle) -> None:
    tiny = next(t for t in cs_sim.model.templates.values() if t.name == "tiny-linux")
    c = stock(cs_sim)
    jobid = c.deleteTemplate(id=tiny.id)["jobid"]  # VMs use it: InvalidParameterValueException in the job
    result = c.queryAsyncJobResult(jobid=jobid)
    assert result["jobstatus"] == 2 and result["jobresultcode"] == 431
    assert set(result["jobresult"]) == {"errorcode", "errortext"}
    assert result["jobresult"]["errorcode"] == 431 and "are using it" in result["jobresult"]["errortext"]


# ---------------------------------------------------------------- paging (ParamProcessWorker, BaseListCmd)


@pytest.fixture
def many(cs_sim: SimHandle) -> int:
    for i in range(620):
        cs_sim.model.add_template(f"bulk-{i:04d}", 1024)
    return len(cs_sim.model.templates)


def test_no_paging_lists_at_most_500(cs_sim: SimHandle, many: int) -> None:
    answer = stock(cs_sim).listTemplates(templatefilter="all")
    assert answer["count"] == many and len(answer["template"]) == 500


def test_page_needs_pagesize_and_pagesize_needs_page(cs_sim: SimHandle, many: int) -> None:
    r = raw(cs_sim, "listTemplates", ("templatefilter", "all"), ("page", "2"))  # `cs` would add a pagesize
    error = body(r, "listTemplates")
    assert (r.status_code, error["cserrorcode"]) == (431, 9999)
    assert error["errortext"] == '"pagesize" parameter is required when "page" is specified'
    c = stock(cs_sim)
    status, error = api_error(c.listTemplates, templatefilter="all", pagesize=10)
    assert status == 431 and error["errortext"] == '"page" parameter is required when "pagesize" is specified'


def test_pagesize_minus_one_lists_all_and_refuses_page(cs_sim: SimHandle, many: int) -> None:
    c = stock(cs_sim)
    assert len(c.listTemplates(templatefilter="all", pagesize=-1)["template"]) == many
    status, error = api_error(c.listTemplates, templatefilter="all", pagesize=-1, page=1)
    assert status == 431 and "pagesize is -1" in error["errortext"]


@pytest.mark.parametrize("page", [0, -3])
def test_page_zero_or_less_is_the_first_page(cs_sim: SimHandle, many: int, page: int) -> None:
    c = stock(cs_sim)
    first = c.listTemplates(templatefilter="all", page=1, pagesize=7)["template"]
    assert c.listTemplates(templatefilter="all", page=page, pagesize=7)["template"] == first


def test_pagesize_above_the_maximum_is_431(cs_sim: SimHandle) -> None:
    status, error = api_error(stock(cs_sim).listZones, page=1, pagesize=501)
    assert status == 431 and "max allowed page size value: 500" in error["errortext"]


def test_a_project_template_is_listed_only_with_projectid_and_found_by_id(cs_sim: SimHandle) -> None:
    """AccountManagerImpl.buildACLSearchParameters: without an id or a projectid the listing
    skips project-owned resources; projectid=-1 lists only them; by id any template is found."""
    own = cs_sim.model.add_template("own", 1 << 20)
    project = cs_sim.model.add_template("in-project", 1 << 20, project_id="9f0c1e2a-1111-4c2d-8e3f-000000000001")
    c = stock(cs_sim)

    def ids(**params: str) -> set[str]:
        return {t["id"] for t in c.listTemplates(templatefilter="all", **params).get("template", [])}

    assert own.id in ids() and project.id not in ids()
    assert ids(projectid="-1") == {project.id}
    assert ids(id=project.id) == {project.id}
    assert c.listTemplates(templatefilter="all", id=project.id)["template"][0]["projectid"] == project.project_id


# ---------------------------------------------------------------- updateConfiguration


def update(sim: SimHandle, **params: str) -> requests.Response:
    return raw(sim, "updateConfiguration", *params.items())


def test_values_are_trimmed_and_booleans_lower_cased(cs_sim: SimHandle) -> None:
    r = update(cs_sim, name="storpool.volume.tags.checkup", value="  600 ")
    assert r.status_code == 200 and body(r, "updateConfiguration")["configuration"]["value"] == "600"
    r = update(cs_sim, name="sp.bypass.secondary.storage", value=" TRUE ")
    assert body(r, "updateConfiguration")["configuration"]["value"] == "true"
    assert cs_sim.model.configs["sp.bypass.secondary.storage"].value == "true"


@pytest.mark.parametrize(("name", "value", "java"), [
    ("sp.bypass.secondary.storage", "yes", "Boolean"),
    ("storpool.volume.tags.checkup", "2147483648", "Integer"),
    ("storpool.volume.tags.checkup", "1.5", "Integer"),
    ("kvm.ha.degraded.max.period", "9223372036854775808", "Long"),
    ("kvm.ha.activity.check.failure.ratio", "Infinity", "Double"),
])
def test_values_of_the_wrong_java_type_are_refused(cs_sim: SimHandle, name: str, value: str, java: str) -> None:
    before = cs_sim.model.configs[name].value
    r = update(cs_sim, name=name, value=value)
    assert r.status_code == 431
    assert body(r, "updateConfiguration")["errortext"] == f"Value [{value}] is not a valid [class java.lang.{java}]."
    assert cs_sim.model.configs[name].value == before


def test_java_int_range_edges_are_accepted(cs_sim: SimHandle) -> None:
    assert update(cs_sim, name="storpool.volume.tags.checkup", value="2147483647").status_code == 200
    assert update(cs_sim, name="storpool.volume.tags.checkup", value="-2147483648").status_code == 200


def test_without_value_nothing_changes(cs_sim: SimHandle) -> None:
    update(cs_sim, name="storpool.volume.tags.checkup", value="600")
    r = update(cs_sim, name="storpool.volume.tags.checkup")
    assert r.status_code == 200 and body(r, "updateConfiguration")["configuration"]["value"] == "600"
    assert cs_sim.model.configs["storpool.volume.tags.checkup"].value == "600"


def test_empty_value_clears(cs_sim: SimHandle) -> None:
    cluster = next(iter(cs_sim.model.clusters))
    r = update(cs_sim, name="sp.cluster.id", value="  ")
    assert r.status_code == 200 and "value" not in body(r, "updateConfiguration")["configuration"]  # NULL
    r = update(cs_sim, name="sp.cluster.id", value="null", clusterid=cluster)
    assert r.status_code == 200 and cs_sim.model.scoped_values[("cluster", cluster, "sp.cluster.id")] == ""


@pytest.mark.parametrize("param", ["accountid", "domainid", "zoneid", "clusterid", "storageid"])
def test_unknown_scope_ids_are_entity_does_not_exist(cs_sim: SimHandle, param: str) -> None:
    missing = "0d5e2f3a-0000-4000-8000-000000000000"
    r = update(cs_sim, name="sp.bypass.secondary.storage", value="true", **{param: missing})
    assert r.status_code == 431
    error = body(r, "updateConfiguration")
    assert error["cserrorcode"] == 9999 and "entity does not exist" in error["errortext"]
    assert f"Invalid parameter {param} value={missing}" in error["errortext"]


def test_known_account_but_wrong_scope(cs_sim: SimHandle) -> None:
    admin = next(i for i, n in cs_sim.model.account_ids().items() if n == "admin")
    r = update(cs_sim, name="sp.bypass.secondary.storage", value="true", accountid=admin)
    assert r.status_code == 431
    assert body(r, "updateConfiguration")["errortext"] == (
        "Invalid scope id provided for the parameter sp.bypass.secondary.storage")


def test_unknown_name_does_not_exist(cs_sim: SimHandle) -> None:
    r = update(cs_sim, name="storpool.heartbeat.interval", value="10")  # the project's own: not CloudStack's
    assert r.status_code == 431
    assert body(r, "updateConfiguration")["errortext"] == (
        "Config parameter with name storpool.heartbeat.interval doesn't exist")
    assert "storpool.heartbeat.interval" not in cs_sim.model.configs


# ---------------------------------------------------------------- listVirtualMachines


def test_vms_have_hostid_only_while_running_and_no_lasthostid(cs_sim: SimHandle) -> None:
    vms = {v["name"]: v for v in stock(cs_sim).listVirtualMachines(listall=True)["virtualmachine"]}
    assert all("lasthostid" not in v for v in vms.values())
    assert vms["vm1"]["state"] == "Running" and vms["vm1"]["hostid"]
    assert vms["vm2"]["state"] == "Stopped" and "hostid" not in vms["vm2"]


def test_the_simulator_does_not_take_its_keys_from_the_project() -> None:
    """The configuration table comes from configuration.json (CloudStack's keys), never from the
    project's registry: otherwise a key the project invented would exist here and nowhere else."""
    sim_dir = Path(__file__).resolve().parents[2] / "cloudstack_sim"
    for source in sim_dir.glob("*.py"):
        assert "cloudstack_storpool.settings" not in source.read_text(), source.name
