"""Heartbeat at scale: what one management-side round costs, and how fast a host notices.

Two figures matter for host HA:
* cost of a round: the Java plugin ran one `storpool service list` per pool per host, so 1,000
  hosts on 2 pools cost 2,000 calls; here one ServicesList per cluster answers for all hosts;
* detection: how long after a client goes down the host loop records a failure and acts,
  compared with the configured interval x max_failures.
"""

from __future__ import annotations

import json
import tempfile
import threading
import time
from pathlib import Path

from cloudstack_storpool.heartbeat.check import CheckConfig, HeartbeatChecker, HostTarget, timed_check
from cloudstack_storpool.heartbeat.hostloop import Action, HostLoop, LoopConfig, Result
from cloudstack_storpool.spconn import StorPoolConn
from integration.storpool_sim.testing import run_emulator

HOSTS = 1000
INTERVAL = 0.2
MAX_FAILURES = 3


def _check_round(tmp: Path) -> dict[str, object]:
    clients = range(1, HOSTS + 1)
    with run_emulator(tmp / "a", tmp / "adev", clients=clients, use_loop=False) as a, \
            run_emulator(tmp / "b", tmp / "bdev", clients=clients, use_loop=False) as b:
        hosts = [HostTarget(f"kvm{i}", i) for i in clients]
        checker = HeartbeatChecker([a.pool_spec("a"), b.pool_spec("b")],
                                   CheckConfig(fence_on_any=True, io_window=0.2, io_samples=3))
        _results, healthy = timed_check(checker, hosts)
        a.faults.client_down(500)
        _results, one_down = timed_check(checker, hosts)
    return {
        "hosts": HOSTS,
        "pools": 2,
        "all_alive": {"storpool_calls": healthy.calls, "seconds": round(healthy.seconds, 4),
                      "verdicts": healthy.verdicts},
        "one_down": {"storpool_calls": one_down.calls, "seconds": round(one_down.seconds, 4),
                     "verdicts": one_down.verdicts, "io_window_s": 0.2, "fence_on_any": True},
        "java_plugin_calls": HOSTS * 2,
        "calls_ratio_java_over_ours": round(HOSTS * 2 / max(healthy.calls, 1), 1),
    }


def _detection(tmp: Path) -> dict[str, object]:
    with run_emulator(tmp / "d", tmp / "ddev", clients=(1, 2, 3), use_loop=False) as sp:
        conn = StorPoolConn(sp.host, sp.port, sp.token, timeout=2.0, retries=0)
        acted = threading.Event()
        cfg = LoopConfig(client_id=2, interval=INTERVAL, max_failures=MAX_FAILURES, action=Action.REBOOT,
                         status_file=tmp / "hb.json")
        loop = HostLoop(conn, cfg, reboot=lambda _reason: acted.set(), alert=lambda _s: None)
        runner = threading.Thread(target=loop.run, daemon=True)
        runner.start()
        time.sleep(INTERVAL * 2.5)
        down_at = time.monotonic()
        sp.faults.client_down(2)
        first_fail = None
        while not acted.is_set() and time.monotonic() - down_at < INTERVAL * (MAX_FAILURES + 5):
            if first_fail is None and loop.state.result is Result.FAIL:
                first_fail = time.monotonic() - down_at
            time.sleep(INTERVAL / 50)
        action_after = time.monotonic() - down_at if acted.is_set() else None
        loop.stop.set()
        runner.join(timeout=5)
    return {
        "interval_s": INTERVAL,
        "max_failures": MAX_FAILURES,
        "first_failure_s": round(first_fail, 3) if first_fail is not None else None,
        "first_failure_in_intervals": round(first_fail / INTERVAL, 2) if first_fail is not None else None,
        "action_s": round(action_after, 3) if action_after is not None else None,
        "action_in_intervals": round(action_after / INTERVAL, 2) if action_after is not None else None,
        "bound_in_intervals": MAX_FAILURES,
    }


def main() -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="bench-heartbeat-") as d:
        tmp = Path(d)
        return {"check_round": _check_round(tmp), "host_loop_detection": _detection(tmp)}


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
