"""Watch every process's command line for a secret while a test runs (secrets must never be in
argv: every user of the host can read it)."""

from __future__ import annotations

import os
import threading


class ArgvWatch:
    """Polls every process's command line while a test runs, for a secret. `seen` holds the
    command lines that showed it; `seen_qemu` tells that a qemu-img ran while the watch looked
    (so an empty `seen` means something)."""

    def __init__(self, secret: str) -> None:
        self.secret = secret.encode()
        self.seen: list[str] = []
        self.seen_qemu = False
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            for pid in os.listdir("/proc"):
                if not pid.isdigit():
                    continue
                try:
                    with open(f"/proc/{pid}/cmdline", "rb") as f:
                        cmd = f.read()
                except OSError:
                    continue
                if self.secret in cmd:
                    self.seen.append(cmd.decode(errors="replace"))
                if b"qemu-img" in cmd:
                    self.seen_qemu = True
            self.stop.wait(0.005)

    def __enter__(self) -> ArgvWatch:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()
