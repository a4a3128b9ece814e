"""Stand-ins for StorPool and CloudStack, the local stack launcher and the end-to-end tests.

None of this is shipped: it runs from a checkout. Child processes that import it get the
checkout on their path through `dev_env()`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parent.parent


def dev_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a child process that imports `integration` from this checkout."""
    env = dict(os.environ if base is None else base)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(CHECKOUT), env.get("PYTHONPATH", "")]))
    return env


def dev_command(*args: str) -> list[str]:
    """argv of the developer CLI (`python -m integration ...`)."""
    return [sys.executable, "-m", "integration", *args]
