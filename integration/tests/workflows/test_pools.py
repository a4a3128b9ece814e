"""Primary storage pools through CloudStack's API: createStoragePool with both URL forms, a
volume on the new pool, deleteStoragePool refused while the pool holds data, then allowed."""

from __future__ import annotations

from typing import Any

import cs
import pytest

from integration.stack import LocalStack
from integration.tests.workflows.support import offering, one, sp_volume

pytestmark = pytest.mark.root


def test_create_use_and_delete_a_pool(stack: LocalStack, cloud: cs.CloudStack, sp: Any) -> None:
    zone = one(cloud, "listZones", "zone")["id"]
    url = f"SP_API_HTTP={stack.sp.host}:{stack.sp.port};SP_AUTH_TOKEN={stack.sp.token};SP_TEMPLATE=nvme"
    pool = cloud.createStoragePool(zoneid=zone, name="sp-nvme", url=url, provider="StorPool", scope="zone",
                                   hypervisor="KVM")["storagepool"]
    assert pool["provider"] == "StorPool" and pool["state"] == "Up"
    assert stack.sp.token not in str(cloud.listStoragePools(id=pool["id"]))
    # The plugin knows it under CloudStack's uuid: a volume created there lands on its template.
    vol = cloud.createVolume(name="on-nvme", zoneid=zone, diskofferingid=offering(cloud, "sp-small"),
                             storageid=pool["id"])["volume"]
    assert vol["storageid"] == pool["id"] and sp_volume(sp, vol["path"]).templateName == "nvme"

    with pytest.raises(cs.CloudStackApiException) as refused:
        cloud.deleteStoragePool(id=pool["id"])
    assert "associated" in refused.value.error["errortext"]
    cloud.deleteVolume(id=vol["id"])
    assert cloud.deleteStoragePool(id=pool["id"])["success"] is True
    assert cloud.listStoragePools(id=None, name="sp-nvme") == {}


def test_a_second_pool_on_the_same_template_is_refused(stack: LocalStack, cloud: cs.CloudStack) -> None:
    zone = one(cloud, "listZones", "zone")["id"]
    url = f"storpool://{stack.sp.token}@{stack.sp.host}:{stack.sp.port}/ssd"  # storpool-primary's template
    with pytest.raises(cs.CloudStackApiException) as refused:
        cloud.createStoragePool(zoneid=zone, name="sp-again", url=url, provider="StorPool")
    err = refused.value.error
    assert err["errorcode"] == 530 and "register_pool failed" in err["errortext"]
    assert stack.sp.token not in err["errortext"]
    assert cloud.listStoragePools(name="sp-again") == {}


def test_bad_parameters_are_431_before_anything_changes(cloud: cs.CloudStack) -> None:
    with pytest.raises(cs.CloudStackApiException) as refused:
        cloud.deployVirtualMachine(zoneid=one(cloud, "listZones", "zone")["id"], templateid="nope",
                                   serviceofferingid=offering(cloud, "small", disk=False))
    assert refused.value.error["errorcode"] == 431 and "templateid" in refused.value.error["errortext"]
    with pytest.raises(cs.CloudStackApiException) as refused:
        cloud.createVolume(name="x")
    assert refused.value.error["errorcode"] == 431
