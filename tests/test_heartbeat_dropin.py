"""The drop-in's rule, row by row: only a fresh, confirmed, idle fail reboots."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from cloudstack_storpool.agent.hostconfig import HostConfig
from cloudstack_storpool.agent.server import heartbeat_status
from cloudstack_storpool.heartbeat.cli import last_cmd
from cloudstack_storpool.heartbeat.dropin import REFUSED, decide, main
from cloudstack_storpool.heartbeat.hostloop import LoopConfig, loads_strict, parse_status, read_status, write_status

NOW = 1_000_000.0
DEAD = {"time": NOW - 5, "interval": 10.0, "result": "fail", "consecutive_down": 3, "max_failures": 3,
        "idle": True, "client_id": 4, "reason": "client 4 is down"}
DEAD_JSON = json.dumps(DEAD)


def read_status_text(text: str) -> Any:
    return parse_status(loads_strict(text))


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


# A status file the loop did not write: each of these, read as Python's json module reads it,
# passed every check before, and all but the last rebooted on a verdict that was not fresh.
CORRUPT = {
    "time NaN": ({"time": math.nan}, "time: must be a finite number"),
    "time Infinity": ({"time": math.inf}, "time: must be a finite number"),
    "interval Infinity on a day-old verdict": ({"interval": math.inf, "time": NOW - 86400}, "interval: must be a finite"),
    "interval NaN on a day-old verdict": ({"interval": math.nan, "time": NOW - 86400}, "interval: must be a finite"),
    "time a string": ({"time": str(NOW - 5)}, "time: must be a finite number"),
    "time an integer beyond a float": ({"time": 10**400}, "time: must be a finite number"),
    "counts as booleans": ({"consecutive_down": True, "max_failures": True}, "consecutive_down: must be an integer"),
    "count a string": ({"consecutive_down": "3"}, "consecutive_down: must be an integer"),
    "idle a string": ({"idle": "true"}, "idle"),
    "time missing": ({"time": None}, "time"),
}


@pytest.mark.parametrize("case", sorted(CORRUPT))
def test_a_field_that_is_not_a_finite_number_is_unknown_never_a_reboot(case: str) -> None:
    change, why = CORRUPT[case]
    status = {k: v for k, v in {**DEAD, **change}.items() if v is not None}
    d = decide(status, now=NOW)
    assert not d.reboot and "cannot be read" in d.reason and why in d.reason, d.reason


@pytest.mark.parametrize("max_age", [math.nan, math.inf, 0.0, -5.0])
def test_a_freshness_limit_that_is_not_a_finite_positive_number_refuses(max_age: float) -> None:
    stale = {**DEAD, "time": NOW - 86400}
    d = decide(stale, now=NOW, max_age=max_age)
    assert not d.reboot and "finite" in d.reason


RAW_FILES = {
    "NaN": DEAD_JSON.replace('"time": 999995.0', '"time": NaN'),
    "Infinity": DEAD_JSON.replace('"interval": 10.0', '"interval": Infinity'),
    "-Infinity": DEAD_JSON.replace('"time": 999995.0', '"time": -Infinity'),
    "a float beyond range": DEAD_JSON.replace('"interval": 10.0', '"interval": 1e400'),
    "NaN in a field no rule reads": DEAD_JSON.replace('"reason"', '"extra": NaN, "reason"'),
    "a list": "[1, 2]",
    "a string time": DEAD_JSON.replace('"time": 999995.0', '"time": "999995.0"'),
    "nested too deeply": "[" * 100_000 + "]" * 100_000,
}


def test_the_fixture_file_is_a_reboot_as_written() -> None:
    assert decide(read_status_text(DEAD_JSON), now=NOW).reboot


@pytest.mark.parametrize("case", sorted(RAW_FILES))
def test_every_reader_of_the_status_file_refuses_what_the_loop_never_writes(
        case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status_file = tmp_path / "heartbeat.json"
    status_file.write_text(RAW_FILES[case])
    with pytest.raises(ValueError):
        read_status(status_file)
    # The drop-in, as CloudStack's agent runs it: refused, the sysrq target untouched.
    sysrq = tmp_path / "sysrq-trigger"
    sysrq.write_text("")
    code = main(["-c"], {"CSSP_HEARTBEAT_STATUS": str(status_file), "CSSP_SYSRQ_TRIGGER": str(sysrq),
                         "CSSP_SYNC_WAIT": "0"}, clock=lambda: NOW)
    assert code == REFUSED and sysrq.read_text() == ""
    assert f"cannot read {status_file}" in capsys.readouterr().err
    # The agent serves an Unknown with the reason, never the raw values.
    host = HostConfig(client_id=4, dev_root=str(tmp_path / "dev"), heartbeat_status_file=str(status_file))
    served = heartbeat_status(host)
    assert served is not None and served["result"] == "unknown" and f"cannot read {status_file}" in served["reason"]
    # `heartbeat last` says what is wrong instead of a traceback or a NaN.
    out = CliRunner().invoke(last_cmd, ["--status-file", str(status_file)])
    assert out.exit_code == 1 and "is not a heartbeat status" in out.output, out.output


@pytest.mark.parametrize("env", [{"CSSP_HEARTBEAT_MAX_AGE": "nan"}, {"CSSP_HEARTBEAT_MAX_AGE": "inf"},
                                 {"CSSP_SYNC_WAIT": "nan"}, {"CSSP_SYNC_WAIT": "-1"}])
def test_the_drop_in_refuses_a_limit_that_is_not_a_finite_number(env: dict[str, str], tmp_path: Path) -> None:
    status_file = tmp_path / "heartbeat.json"
    status_file.write_text(DEAD_JSON)  # fresh, confirmed and idle: only the limits are wrong
    sysrq = tmp_path / "sysrq-trigger"
    sysrq.write_text("")
    code = main(["-c"], {"CSSP_HEARTBEAT_STATUS": str(status_file), "CSSP_SYSRQ_TRIGGER": str(sysrq), **env},
                clock=lambda: NOW)
    assert code == REFUSED and sysrq.read_text() == ""


def test_the_loop_never_takes_or_writes_a_number_json_cannot_carry(tmp_path: Path) -> None:
    for interval in (math.nan, math.inf):
        with pytest.raises(ValueError, match="interval must be a finite number"):
            LoopConfig(client_id=4, interval=interval, status_file=tmp_path / "hb.json")
    with pytest.raises(ValueError):
        write_status(tmp_path / "hb.json", {**DEAD, "time": math.nan})
    assert not (tmp_path / "hb.json").exists()
    write_status(tmp_path / "hb.json", DEAD)
    assert read_status(tmp_path / "hb.json") == DEAD
