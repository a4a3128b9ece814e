"""`serve --log-format json` as a real process: every line is a JSON object, every line an
operation writes carries its job id and the CloudStack uuid it concerns, and no secret appears
(not even in a failure's traceback)."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from io import StringIO
from pathlib import Path

import pytest
import requests

from cloudstack_storpool import logs
from integration.stack import LocalStack, free_port
from integration.tests.service.test_service_cli import SERVE, _secret_file


@pytest.mark.root
def test_json_lines_carry_job_and_uuid_and_never_a_secret(stack: LocalStack, tmp_path: Path) -> None:
    token = uuid.uuid4().hex
    port = free_port()
    env = {**os.environ, "CLOUDSTACK_ENDPOINT": stack.cs.endpoint, "CLOUDSTACK_KEY": stack.cs.key,
           "CLOUDSTACK_SECRET": stack.cs.secret, "CLOUDSTACK_REGION": "cloudstack"}
    argv = [sys.executable, "-c", SERVE, "--listen", f"127.0.0.1:{port}", "--log-format", "json",
            "--token-file", _secret_file(tmp_path / "service.token", token),
            "--agent-token-file", _secret_file(tmp_path / "agent.token", stack.agent_token),
            "--pools", str(stack.pools_file)]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url, auth = f"http://127.0.0.1:{port}", {"Authorization": f"Bearer {token}"}
    vid = str(uuid.uuid4())
    pool = stack.pools().pools[0].name
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                requests.get(url + "/v1/health", headers=auth, timeout=2)
                break
            except requests.ConnectionError:
                assert proc.poll() is None, proc.communicate()
                assert time.monotonic() < deadline, "service did not start"
                time.sleep(0.1)
        made = requests.post(url + "/v1/volumes", headers=auth, timeout=30,
                             json={"pool": pool, "volume_uuid": vid, "size": 1 << 30})
        assert made.status_code == 200, made.text
        # A token sent as a bad field value must not come back in a log line either.
        requests.post(url + "/v1/volumes", headers=auth, timeout=30,
                      json={"pool": stack.sp.token, "volume_uuid": vid, "size": 1 << 30})
        assert requests.delete(f"{url}/v1/volumes/{vid}", params={"pool": pool}, headers=auth, timeout=30).ok
    finally:
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    banner = [line for line in err.splitlines() if not line.startswith("{")]
    assert all("listening on" in b or not b.strip() for b in banner), banner
    assert lines and all({"ts", "level", "logger", "message", "job", "uuid"} <= set(x) for x in lines)
    ops = [x for x in lines if x["logger"].startswith(("cloudstack_storpool.spconn", "cloudstack_storpool.driver"))]
    assert any("created volume" in x["message"] for x in ops) and any("deleted volume" in x["message"] for x in ops)
    for x in ops:
        assert x["job"] and x["job"].startswith("req-") and x["uuid"] == vid, x
    jobs = {x["job"] for x in ops}
    assert len(jobs) == 2, "the create and the delete are two requests"
    for secret in (token, stack.agent_token, stack.sp.token, stack.cs.secret):
        assert secret not in err


def test_secrets_masked_in_messages_and_tracebacks() -> None:
    buf = StringIO()
    handler = logs.handler("json", buf)
    log = logging.getLogger("test.logs.masking")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    secret = "s3cr3t-" + uuid.uuid4().hex
    logs.register_secret(secret)
    try:
        with logs.context("job-1", "11111111-2222-3333-4444-555555555555"):
            log.info("token is %s", secret)
            try:
                raise RuntimeError(f"failed with {secret}")
            except RuntimeError:
                log.exception("boom")
        log.info("outside")
    finally:
        log.removeHandler(handler)
    out = [json.loads(x) for x in buf.getvalue().splitlines()]
    assert secret not in buf.getvalue() and "***" in out[0]["message"] and "***" in out[1]["exc"]
    assert out[0]["job"] == "job-1" and out[0]["uuid"] == "11111111-2222-3333-4444-555555555555"
    assert out[2]["job"] is None and out[2]["uuid"] is None


@pytest.mark.root
def test_agent_lines_carry_the_callers_uuid_and_name_its_job(stack: LocalStack) -> None:
    from cloudstack_storpool.driver import volumes
    from integration.stack import new_uuid

    tmpl = next(t for t in stack.cs.model.templates.values() if t.name == "tiny-linux")
    image = stack.template_image(tmpl.id, tmpl.size, {0: b"x"})
    buf = StringIO()
    handler = logs.handler("json", buf)
    root = logging.getLogger()
    root.addHandler(handler)
    old_level = root.level
    root.setLevel(logging.INFO)
    vid = new_uuid()
    try:
        with logs.context("req-caller1", vid):
            volumes.create_from_template(stack.ctx, "storpool-primary", vid, tmpl.id, source=stack.source_of(image))
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
    (job,) = stack.agent_jobs("copy_template")
    assert job.subject == vid
    lines = [json.loads(x) for x in buf.getvalue().splitlines()]
    agent_lines = [x for x in lines if x["logger"].startswith("cloudstack_storpool.agent")]
    started = [x for x in agent_lines if x["message"] == "copy_template started for req-caller1"]
    assert started and started[0]["job"] == job.id and started[0]["uuid"] == vid
    assert all(x["uuid"] == vid for x in agent_lines if x["job"] == job.id)
