"""Encrypted volumes in the simulator's records and answers: which volumes CloudStack encrypts
(DiskOffering.getEncrypt(): `encrypt` of a disk offering, `encryptroot` of a ROOT volume's
service offering), the passphrase it generates for them (PassphraseVO) and keeps out of every
answer, and `encryptformat` in VolumeResponse. The calls to the plugin are checked in
test_orchestration_order.py, the outcome on StorPool in the workflow tests."""

from __future__ import annotations

import base64
import stat
from pathlib import Path

import cs

from integration.cloudstack_sim import orchestrator
from integration.cloudstack_sim.model import CloudStackModel
from integration.cloudstack_sim.testing import SimHandle, run_simulator


def client(sim: SimHandle) -> cs.CloudStack:
    return cs.CloudStack(sim.endpoint, sim.key, sim.secret, fetch_result=True, poll_interval=0.02, job_timeout=10)


def test_which_volumes_an_offering_encrypts() -> None:
    model = CloudStackModel()
    model.seed()
    with model.lock:
        enc_root = model.add_service_offering("enc-root", encrypt_root=True)
        enc_disk = model.add_disk_offering("enc-disk", disk_size_gb=1, encrypt=True)
        plain_disk = next(o for o in model.disk_offerings.values() if o.name == "sp-small")
        tpl = next(t for t in model.templates.values() if t.name == "tiny-linux")
        vm = model.add_vm("enc-vm", template_id=tpl.id, service_offering_id=enc_root.id, state="Stopped")
        plain_vm = next(v for v in model.vms.values() if v.name == "vm1")
    root = next(v for v in model.volumes.values() if v.vm_id == vm.id and v.type == "ROOT")
    plain_root = next(v for v in model.volumes.values() if v.vm_id == plain_vm.id and v.type == "ROOT")
    data = model.add_volume("enc-data", 1 << 30, disk_offering_id=enc_disk.id)
    plain = model.add_volume("plain-data", 1 << 30, disk_offering_id=plain_disk.id)

    assert orchestrator._encrypts(model, root, vm)  # the service offering's encryptroot
    assert not orchestrator._encrypts(model, plain_root, plain_vm)
    assert orchestrator._encrypts(model, data, None)  # the disk offering's encrypt
    assert not orchestrator._encrypts(model, plain, None)
    # encryptroot is about the ROOT disk only: a data disk of that VM follows its own offering.
    data_of_vm = model.add_volume("vm-data", 1 << 30, vm_id=vm.id, disk_offering_id=plain_disk.id)
    assert not orchestrator._encrypts(model, data_of_vm, vm)


def test_passphrase_is_generated_once_per_volume() -> None:
    """setPassphraseForVolumeEncryption: 48 random bytes in base64 (64 characters), kept by the
    volume from then on; every volume has its own."""
    model = CloudStackModel()
    model.seed()
    one = model.add_volume("a", 1 << 30)
    other = model.add_volume("b", 1 << 30)
    first = orchestrator._passphrase(model, one)
    assert len(first) == 64 and len(base64.b64decode(first, validate=True)) == 48
    assert orchestrator._passphrase(model, one) == first == one.passphrase
    assert orchestrator._passphrase(model, other) != first
    # The volume's record and the value handed to the plugin show no passphrase when printed.
    assert first not in repr(one) and first not in repr(first)
    # A volume that has a passphrase counts as encrypted whatever its offering says.
    assert orchestrator._encrypts(model, one, None)


def test_encryptformat_in_answers_and_the_passphrase_in_none(cs_sim: SimHandle) -> None:
    model = cs_sim.model
    enc = model.add_volume("encrypted", 1 << 30)
    enc.passphrase, enc.encrypt_format = "p" * 64, "luks"
    plain = model.add_volume("plain", 1 << 30)
    cloud = client(cs_sim)
    answers = {v["id"]: v for v in cloud.listVolumes(listall=True)["volume"]}
    assert answers[enc.id]["encryptformat"] == "luks"
    assert "encryptformat" not in answers[plain.id]
    assert "p" * 64 not in repr(cloud.listVolumes(listall=True, id=enc.id))


def test_state_file_is_private_and_keeps_the_passphrases(tmp_path: Path) -> None:
    state = tmp_path / "cloudstack.json"
    with run_simulator(state=state) as sim:
        vol = sim.model.add_volume("encrypted", 1 << 30)
        secret = orchestrator._passphrase(sim.model, vol)
        vol.encrypt_format = "luks"
        sim.model.save()
    assert stat.S_IMODE(state.stat().st_mode) == 0o600
    again = CloudStackModel(state_path=state)
    assert again.load()
    assert again.volumes[vol.id].passphrase == secret and again.volumes[vol.id].encrypt_format == "luks"
