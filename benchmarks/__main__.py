"""Run every benchmark in this folder and write one report (markdown + JSON).

Each `bench_*.py` exposes `main() -> dict`: the figures it measured in this one run, ratios
included. Benchmarks print ratios, never pass/fail: speed targets are judged by people reading
the report, not by timed assertions that flake on a busy machine.
"""

from __future__ import annotations

import importlib
import json
import os
import platform
import sys
import time
import traceback
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def machine() -> dict[str, Any]:
    mem = 0
    try:
        with open("/proc/meminfo") as f:
            mem = int(f.readline().split()[1]) * 1024
    except OSError:
        pass
    return {
        "python": platform.python_version(),
        "kernel": platform.release(),
        "cpus": os.cpu_count(),
        "memory_bytes": mem,
        "machine": platform.machine(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def _render(value: Any, depth: int = 0) -> list[str]:
    pad = "  " * depth
    if isinstance(value, dict):
        lines = []
        for k, v in value.items():
            if isinstance(v, dict | list):
                lines.append(f"{pad}- **{k}**:")
                lines.extend(_render(v, depth + 1))
            else:
                lines.append(f"{pad}- **{k}**: {v}")
        return lines
    if isinstance(value, list):
        if value and all(isinstance(r, dict) for r in value):
            cols = list(dict.fromkeys(k for r in value for k in r))
            out = [pad + "| " + " | ".join(cols) + " |", pad + "|" + "---|" * len(cols)]
            out += [pad + "| " + " | ".join(str(r.get(c, "")) for c in cols) + " |" for r in value]
            return out
        return [f"{pad}- {v}" for v in value]
    return [f"{pad}{value}"]


def main(argv: list[str]) -> int:
    only = set(argv)
    names = sorted(p.stem for p in HERE.glob("bench_*.py") if not only or p.stem in only)
    report: dict[str, Any] = {"machine": machine(), "benchmarks": {}}
    failed = 0
    for name in names:
        print(f"== {name}", flush=True)
        start = time.perf_counter()
        try:
            result = importlib.import_module(f"benchmarks.{name}").main()
        except Exception:
            failed += 1
            result = {"error": traceback.format_exc(limit=5)}
        result["_wall_seconds"] = round(time.perf_counter() - start, 2)
        report["benchmarks"][name] = result
        print(json.dumps(result, indent=2, default=str), flush=True)
    (HERE / "report.json").write_text(json.dumps(report, indent=2, default=str))
    md = ["# Benchmark report", "", "Measured in one run on:", "", *_render(report["machine"]), ""]
    for name, result in report["benchmarks"].items():
        md += [f"## {name}", "", *_render(result), ""]
    (HERE / "report.md").write_text("\n".join(md))
    print(f"report: {HERE / 'report.md'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
