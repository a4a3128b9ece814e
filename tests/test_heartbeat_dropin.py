"""The drop-in's rule, row by row: only a fresh, confirmed, idle fail reboots."""

from __future__ import annotations

from typing import Any

import pytest

from cloudstack_storpool.heartbeat.dropin import decide

NOW = 1_000_000.0
DEAD = {"time": NOW - 5, "interval": 10.0, "result": "fail", "consecutive_down": 3, "max_failures": 3,
        "idle": True, "client_id": 4, "reason": "client 4 is down"}


def test_a_fresh_confirmed_idle_fail_reboots() -> None:
    assert decide(DEAD, now=NOW).reboot


@pytest.mark.parametrize(("change", "why"), [
    ({"result": "unknown"}, "'unknown'"),
    ({"result": "ok"}, "'ok'"),
    ({"consecutive_down": 2}, "3 are needed"),
    ({"idle": None}, "unknown I/O"),
    ({"idle": False}, "still doing I/O"),
    ({"time": NOW - 31}, "stale"),
    ({"time": 0}, "stale"),
    ({"time": NOW + 3600}, "stale"),
    ({"max_failures": "x"}, "cannot be read"),
])
def test_anything_else_refuses(change: dict[str, Any], why: str) -> None:
    d = decide({**DEAD, **change}, now=NOW)
    assert not d.reboot and why in d.reason


def test_no_status_refuses_and_max_age_is_configurable() -> None:
    assert not decide(None, now=NOW).reboot
    assert not decide(DEAD, now=NOW, max_age=2).reboot
    assert decide({**DEAD, "interval": 60.0, "time": NOW - 170}, now=NOW).reboot  # three intervals
