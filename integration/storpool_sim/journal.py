"""The emulator's persistence: a snapshot (`state.json`) plus an append-only journal
(`journal.jsonl`) of what each change touched, compacted into a new snapshot once the journal
holds more records than the cluster has objects.

Rewriting the whole state on every change made a create cost O(number of objects) (659 ms at
10k volumes); appending the touched objects costs the same at any size, and compaction, at most
once per n changes, keeps the amortised cost constant and restarts fast. A record torn by a
crash mid-write is the last line and is ignored: the change it described had not been answered.

State shape (snapshot and `load_state`): {"generation", "nextVid", "objects": [...],
"templates": [...], "placementGroups": {...}, "attachments": {gid: {client: {...}}}}.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

SNAPSHOT = "state.json"
JOURNAL = "journal.jsonl"
MIN_COMPACT = 1000


def load_state(data_dir: Path) -> dict[str, Any] | None:
    """The persisted state: the snapshot with every complete journal record applied."""
    snap, journal = data_dir / SNAPSHOT, data_dir / JOURNAL
    if not snap.exists() and not journal.exists():
        return None
    state: dict[str, Any] = json.loads(snap.read_text()) if snap.exists() else {
        "generation": 1, "nextVid": 1, "objects": [], "templates": [], "placementGroups": {}, "attachments": {}}
    objects = {o["gid"]: o for o in state["objects"]}
    attachments: dict[str, Any] = dict(state["attachments"])
    if journal.exists():
        with open(journal, encoding="utf-8") as f:
            for line in f:
                try:
                    rec = json.loads(line)
                except ValueError:
                    break  # torn last record
                state["generation"], state["nextVid"] = rec["generation"], rec["nextVid"]
                state["templates"], state["placementGroups"] = rec["templates"], rec["placementGroups"]
                for gid in rec["del"]:
                    objects.pop(gid, None)
                    attachments.pop(gid, None)
                for o in rec["put"]:
                    objects[o["gid"]] = o
                for gid, per in rec["attachments"].items():
                    if per:
                        attachments[gid] = per
                    else:
                        attachments.pop(gid, None)
    state["objects"] = sorted(objects.values(), key=lambda o: o["vid"])
    state["attachments"] = attachments
    return state


class StateStore:
    """Appends change records; compacts into a snapshot when the journal grows past the state."""

    def __init__(self, data_dir: Path) -> None:
        self.snapshot = data_dir / SNAPSHOT
        self.journal = data_dir / JOURNAL
        self.records = 0
        if self.journal.exists():
            with open(self.journal, "rb") as f:
                self.records = sum(1 for _ in f)
        self._out = open(self.journal, "a", encoding="utf-8")

    def append(self, record: dict[str, Any]) -> None:
        self._out.write(json.dumps(record, separators=(",", ":")) + "\n")
        self._out.flush()
        self.records += 1

    def due(self, objects: int) -> bool:
        return self.records > max(MIN_COMPACT, objects)

    def compact(self, state: dict[str, Any]) -> None:
        """Write the whole state as the new snapshot, then start an empty journal."""
        tmp = self.snapshot.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=1, sort_keys=True))
        os.replace(tmp, self.snapshot)
        self._out.close()
        self._out = open(self.journal, "w", encoding="utf-8")
        self.records = 0

    def close(self) -> None:
        self._out.close()
