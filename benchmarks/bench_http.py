"""The HTTP plumbing (issue 13, item 10): keep-alive request latency before and after replying in
one write with Nagle off, and throughput of 16 clients through 2 driver-service processes
against the same creates/deletes sent straight to the StorPool emulator.

"Before" is the stdlib handler the servers used: head and body in two writes, Nagle on, so the
second write waits for the client's delayed ACK (~40 ms on Linux) on every keep-alive request.

    .venv/bin/python -m benchmarks.bench_http
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import requests

from cloudstack_storpool.agent.commands import Context
from cloudstack_storpool.agent.hostconfig import HostConfig
from cloudstack_storpool.agent.server import AgentServer
from cloudstack_storpool.httpjson import serve_in_thread
from cloudstack_storpool.spconn import StorPoolConn
from integration.stack import LocalStack
from integration.storpool_sim.testing import run_emulator

REQUESTS = 200
CLIENTS = 16
VOLUMES = 160  # created then deleted: 320 operations per path
SIZE = 64 << 20
TOKEN = "bench-token-0123456789"


class _BeforeHandler(BaseHTTPRequestHandler):
    """The reply path the servers had: `end_headers()` then `wfile.write(body)`, Nagle on."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        body = json.dumps({"jobs": []}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def _latencies(url: str, headers: dict[str, str]) -> list[float]:
    out = []
    with requests.Session() as s:
        s.get(url, headers=headers, timeout=10)  # connect once: keep-alive from here on
        for _ in range(REQUESTS):
            t0 = time.perf_counter()
            r = s.get(url, headers=headers, timeout=10)
            out.append(time.perf_counter() - t0)
            r.raise_for_status()
    return out


def _summary(lat: list[float]) -> dict[str, float]:
    lat = sorted(lat)
    return {"median_ms": round(statistics.median(lat) * 1000, 3), "p90_ms": round(lat[int(len(lat) * 0.9)] * 1000, 3)}


def keepalive(work: Path) -> dict[str, Any]:
    before = ThreadingHTTPServer(("127.0.0.1", 0), _BeforeHandler)
    threading.Thread(target=before.serve_forever, daemon=True).start()
    host = HostConfig(client_id=1, dev_root=str(work / "dev"), mount_root=str(work / "mnt"),
                      secondary_roots=(str(work),))
    agent = AgentServer(("127.0.0.1", 0), TOKEN, lambda: Context(
        host=host, conn=StorPoolConn("127.0.0.1", 1, "t", retries=0, timeout=1)))
    serve_in_thread(agent)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    try:
        b = _summary(_latencies(f"http://127.0.0.1:{before.server_address[1]}/v1/jobs", {}))
        a = _summary(_latencies(agent.url + "/v1/jobs", auth))
        with run_emulator(work / "sp", work / "spdev", token=TOKEN, use_loop=False) as sp:
            e = _summary(_latencies(f"http://{sp.host}:{sp.port}/ctrl/1.0/ServicesList",
                                    {"Authorization": f"Storpool v1:{TOKEN}"}))
    finally:
        before.shutdown()
        before.server_close()
        agent.shutdown_all()
    return {
        "requests": REQUESTS,
        "before (two writes, Nagle on)": b,
        "agent/service plumbing now": a,
        "StorPool emulator now": e,
        "ratio_before_over_now_median": round(b["median_ms"] / a["median_ms"], 1),
        "goal": "no ~40 ms delayed-ACK stall: median well under 1 ms on loopback",
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_http(url: str, headers: dict[str, str]) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            requests.get(url, headers=headers, timeout=2)
            return
        except requests.RequestException:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} did not start") from None
            time.sleep(0.2)


@contextmanager
def _processes(commands: list[list[str]], env: dict[str, str]) -> Iterator[None]:
    procs = [subprocess.Popen(c, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for c in commands]
    try:
        yield
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()


@contextmanager
def _emulator_process(work: Path) -> Iterator[tuple[str, int, str]]:
    """The StorPool emulator in a process of its own (host, port, token), as a real cluster
    would be: neither path shares its interpreter with the clients."""
    token = secrets.token_urlsafe(16)
    port = _free_port()
    cmd = [sys.executable, "-m", "integration", "sim", "storpool", "--listen", f"127.0.0.1:{port}",
           "--data-dir", str(work / "sp-data"), "--dev-root", str(work / "sp-dev"), "--no-loop",
           "--capacity", str(1 << 50)]
    with _processes([cmd], {**os.environ, "SP_AUTH_TOKEN": token}):
        _wait_http(f"http://127.0.0.1:{port}/ctrl/1.0/ServicesList", {"Authorization": f"Storpool v1:{token}"})
        yield "127.0.0.1", port, token


@contextmanager
def _service_processes(stack: LocalStack, pools_file: Path, n: int) -> Iterator[tuple[list[str], str]]:
    """`n` driver-service processes (`cloudstack-storpool serve`) over the stack's CloudStack."""
    token = secrets.token_urlsafe(24)
    token_file = stack.root / "bench-service-token"
    token_file.write_text(token)
    token_file.chmod(0o600)
    env = {**os.environ, **stack.driver_env(), "CSSP_POOLS_FILE": str(pools_file)}
    ports = [_free_port() for _ in range(n)]
    commands = [[sys.executable, "-m", "cloudstack_storpool", "serve", "--listen", f"127.0.0.1:{port}",
                 "--token-file", str(token_file), "--settings-ttl", "30"] for port in ports]
    with _processes(commands, env):
        urls = [f"http://127.0.0.1:{port}" for port in ports]
        for url in urls:
            _wait_http(url + "/v1/health", {"Authorization": f"Bearer {token}"})
        yield urls, token


def _timed(jobs: list[Any], fn: Callable[[Any], bool]) -> tuple[float, int]:
    t0 = time.perf_counter()
    with ThreadPoolExecutor(CLIENTS) as pool:
        results = list(pool.map(fn, jobs))
    return time.perf_counter() - t0, sum(1 for ok in results if not ok)


def throughput(stack: LocalStack) -> dict[str, Any]:
    local = threading.local()
    with _emulator_process(stack.root / "bench-emulator") as (host, port, sp_token):
        pool = stack.pools().get(stack.pool_id("storpool-primary"))
        pools_file = stack.root / "bench-pools.toml"
        pools_file.write_text(f'[[pool]]\nuuid = "{pool.uuid}"\nname = "{pool.name}"\nzone = "{pool.zone}"\n'
                              f'url = "SP_API_HTTP={host}:{port};SP_AUTH_TOKEN={sp_token};SP_TEMPLATE=ssd"\n')
        pools_file.chmod(0o600)

        def conn() -> StorPoolConn:
            c: StorPoolConn | None = getattr(local, "conn", None)
            if c is None:
                c = local.conn = StorPoolConn(host, port, sp_token)
            return c

        names = [f"bench-direct-{i}" for i in range(VOLUMES)]
        t_create, e1 = _timed(names, lambda n: bool(conn().volume_create(name=n, size=SIZE, template="ssd")))
        t_delete, e2 = _timed(names, lambda n: conn().volume_delete(n))
        direct_ops = 2 * VOLUMES / (t_create + t_delete)

        with _service_processes(stack, pools_file, 2) as (urls, token):
            def session() -> requests.Session:
                s: requests.Session | None = getattr(local, "session", None)
                if s is None:
                    s = local.session = requests.Session()
                    s.headers["Authorization"] = f"Bearer {token}"
                return s

            uuids = [(str(uuid.uuid4()), i % 2) for i in range(VOLUMES)]

            def create(job: tuple[str, int]) -> bool:
                r = session().post(f"{urls[job[1]]}/v1/volumes", timeout=60,
                                   json={"pool": pool.uuid, "volume_uuid": job[0], "size": SIZE})
                return r.status_code == 200

            def delete(job: tuple[str, int]) -> bool:
                r = session().delete(f"{urls[job[1]]}/v1/volumes/{job[0]}", params={"pool": pool.uuid}, timeout=60)
                return r.status_code == 200 and bool(r.json().get("deleted"))

            s_create, e3 = _timed(uuids, create)
            s_delete, e4 = _timed(uuids, delete)
    service_ops = 2 * VOLUMES / (s_create + s_delete)
    return {
        "clients": CLIENTS,
        "operations": 2 * VOLUMES,
        "direct_to_emulator_ops_per_s": round(direct_ops, 1),
        "two_service_processes_ops_per_s": round(service_ops, 1),
        "ratio_service_over_direct": round(service_ops / direct_ops, 2),
        "errors_direct": e1 + e2,
        "errors_service": e3 + e4,
        "goal": "ratio >= 0.8 with 0 errors",
        "note": "emulator, services and clients in separate processes on one machine (cores shared)",
    }


def main() -> dict[str, object]:
    root = Path(tempfile.mkdtemp(prefix="bench-http-"))
    try:
        out: dict[str, object] = {"keepalive": keepalive(root / "ka")}
        with LocalStack(root / "stack", make_xfs=False) as stack:
            out["sixteen_clients"] = throughput(stack)
        return out
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
