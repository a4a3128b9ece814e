"""The agent's partial copies on secondary storage: which files are its own to remove."""

from __future__ import annotations

import os
from pathlib import Path

from cloudstack_storpool.agent import partials


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"half a qcow2")
    return path


def test_only_this_agents_idle_partials_of_the_target_are_removed(tmp_path: Path) -> None:
    mine = _touch(tmp_path / ".s1.qcow2.part-7-0123456789ab")
    other_host = _touch(tmp_path / ".s1.qcow2.part-8-0123456789ab")
    other_target = _touch(tmp_path / ".s2.qcow2.part-7-0123456789ab")
    not_ours = _touch(tmp_path / ".s1.qcow2.part-0123456789ab")  # no client id: not provably ours
    done = _touch(tmp_path / "s1.qcow2")
    with partials.partial(str(tmp_path / "s1.qcow2"), 7) as writing:
        _touch(Path(writing))
        removed = partials.remove_own(str(tmp_path), 7, "s1.qcow2")
        assert os.path.exists(writing)  # a copy of this process is writing it
    assert not os.path.exists(writing)  # left unrenamed: removed on the way out
    assert removed == [str(mine)]
    assert all(p.exists() for p in (other_host, other_target, not_ours, done))


def test_the_start_sweep_covers_the_roots_and_mounted_exports_only(tmp_path: Path) -> None:
    root = tmp_path / "secondary"
    deep = _touch(root / "snapshots" / "2" / "9" / ".s.qcow2.part-3-aaaaaaaaaaaa")
    shallow = _touch(root / ".t.qcow2.part-3-bbbbbbbbbbbb")
    foreign = _touch(root / "snapshots" / ".s.qcow2.part-4-aaaaaaaaaaaa")
    unmounted = _touch(tmp_path / "mnt" / "nfs-export-1" / ".u.qcow2.part-3-cccccccccccc")
    removed = partials.sweep((str(root),), str(tmp_path / "mnt"), 3)
    assert sorted(removed) == sorted([str(deep), str(shallow)])
    assert foreign.exists()
    assert unmounted.exists()  # a directory under the mount root that is not mounted is not a store
    assert partials.sweep((str(tmp_path / "missing"),), str(tmp_path / "missing-mnt"), 3) == []
