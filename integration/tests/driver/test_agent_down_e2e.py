"""A KVM host's agent down or dying mid-operation, through the driver service: every such failure
answers 502 naming the host (its CloudStack id and the agent's address), and a live-migration
prepare cut short by a dying destination leaves no disk attached read-write on two hosts."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from integration import processes
from integration.stack import LocalStack, free_port
from integration.tests.driver.test_hostside_e2e import MiB, _auth, _host, _vm_with_disks


def _attached(sp: Any, gid: str) -> list[tuple[int, str]]:
    """The clients holding one volume and with which rights, as StorPool's AttachmentsList says."""
    return sorted((int(a.client), str(a.rights)) for a in sp.attachmentsList() if a.globalId == gid)


def _agent_process(stack: LocalStack, tmp_path: Path, client_id: int) -> processes.ServerProcess:
    """A real `agent serve` process for the host of `client_id`, with the stack's token and certificate."""
    token_file = tmp_path / "sp.token"
    token_file.write_text(stack.sp.token)
    token_file.chmod(0o600)
    return processes.agent(client_id=client_id, sp_host=stack.sp.host, sp_port=stack.sp.port,
                           sp_token_file=str(token_file), dev_root=str(stack.sp.dev_root / str(client_id)),
                           mount_root=str(tmp_path / "mnt"), secondary_root=str(stack.secondary),
                           status_file=str(tmp_path / "hb.json"), token=stack.agent_token, tls=stack.agent_cert)


def _prepare_killing_the_destination(stack: LocalStack, tmp_path: Path, vm_id: str, dest: str,
                                     trigger: str) -> tuple[requests.Response, str]:
    """POST migration/prepare to the service while a real destination agent runs, killed (kill
    -9) as soon as StorPool shows volume `trigger` attached to the destination (client 2).
    Returns the answer and the agent's port."""
    url = stack.start_service()
    assert stack.service_token
    sp = stack.sp.api()
    agent = _agent_process(stack, tmp_path, 2)
    killed = threading.Event()
    with agent:
        port = agent.url.rsplit(":", 1)[1]
        stack.cs.model.set_host_details(dest, **{"agent.port": port})

        def kill_once_attached() -> None:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                if (2, "rw") in _attached(sp, trigger):
                    agent.kill()
                    killed.set()
                    return
                time.sleep(0.005)

        watcher = threading.Thread(target=kill_once_attached)
        watcher.start()
        resp = requests.post(f"{url}/v1/vms/{vm_id}/migration/prepare", headers=_auth(stack.service_token),
                             json={"dest_host_id": dest}, timeout=120)
        watcher.join(60)
    assert killed.is_set(), f"the destination never attached {trigger}"
    return resp, port


@pytest.mark.parametrize("client_id_from", ["detail", "agent"])
def test_a_prepare_whose_destination_agent_dies_undoes_its_attachments_and_answers_502(
        stack: LocalStack, tmp_path: Path, client_id_from: str) -> None:
    """The destination's agent is killed (kill -9) once it has attached the VM's first disk:
    the answer is 502 naming the destination, and by then StorPool holds each disk on the
    source only, read-write, as before the prepare. The destination's StorPool client id comes
    from its `SP_OURID` detail, or, for a host without one, from its agent before any connect."""
    vm, gids = _vm_with_disks(stack)
    source, dest = _host(stack, 1), _host(stack, 2)
    stack.start_vm(vm.id, source)
    if client_id_from == "agent":
        stack.cs.model.set_host_details(dest, SP_OURID="")
    assert [_attached(stack.sp.api(), g) for g in gids] == [[(1, "rw")], [(1, "rw")]]
    resp, port = _prepare_killing_the_destination(stack, tmp_path, vm.id, dest, gids[0])
    assert resp.status_code == 502, resp.text
    assert resp.json()["error"]["code"] in ("lost", "unreachable"), resp.text
    message = resp.json()["error"]["message"]
    assert dest in message and f"127.0.0.1:{port}" in message, message
    assert "detached on StorPool" in message, message
    assert [_attached(stack.sp.api(), g) for g in gids] == [[(1, "rw")], [(1, "rw")]]


def test_the_undo_keeps_what_the_destination_held_before_the_prepare(stack: LocalStack, tmp_path: Path) -> None:
    """A disk the destination already held before the call (an earlier prepare's) is not this
    call's to undo: only the disks it attached during the call are detached."""
    vm, gids = _vm_with_disks(stack, (32 * MiB, 16 * MiB, 16 * MiB))
    source, dest = _host(stack, 1), _host(stack, 2)
    stack.start_vm(vm.id, source)
    stack.sp.api().volumesReassign(json=[{"volume": f"~{gids[0]}", "rw": [2]}])
    resp, _ = _prepare_killing_the_destination(stack, tmp_path, vm.id, dest, gids[1])
    assert resp.status_code == 502, resp.text
    assert [_attached(stack.sp.api(), g) for g in gids] == [[(1, "rw"), (2, "rw")], [(1, "rw")], [(1, "rw")]]


def test_connect_hand_over_and_prepare_with_the_agent_down_answer_502_naming_the_host(stack: LocalStack) -> None:
    """Nothing listens at the host's agent port: each host-side operation answers 502 with the
    host's id and the address dialled, and nothing changes on StorPool."""
    vm, gids = _vm_with_disks(stack)
    source, dest = _host(stack, 1), _host(stack, 2)
    stack.start_vm(vm.id, source)
    url = stack.start_service()
    assert stack.service_token
    port = free_port()
    stack.cs.model.set_host_details(dest, **{"agent.port": str(port)})
    stack.ctx.agents.for_address("127.0.0.1", port).post_retries = 0  # no back-off: it is down
    h = _auth(stack.service_token)
    calls = {
        "connect": (f"/v1/hosts/{dest}/disks/connect", {"path": f"/dev/storpool-byid/{gids[0]}"}),
        "hand-over": (f"/v1/vms/{vm.id}/hand-over", {"host_id": dest}),
        "prepare": (f"/v1/vms/{vm.id}/migration/prepare", {"dest_host_id": dest}),
        "host connected": (f"/v1/hosts/{dest}/connected", {}),
    }
    for what, (path, body) in calls.items():
        resp = requests.post(url + path, headers=h, json=body, timeout=60)
        assert resp.status_code == 502, (what, resp.text)
        err = resp.json()["error"]
        assert err["code"] == "unreachable", (what, err)
        assert dest in err["message"] and f"127.0.0.1:{port}" in err["message"], (what, err)
    assert [_attached(stack.sp.api(), g) for g in gids] == [[(1, "rw")], [(1, "rw")]]
