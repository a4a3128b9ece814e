import pytest

from cloudstack_storpool import names
from cloudstack_storpool.errors import ValidationError


def test_path_to_name_and_back() -> None:
    assert names.path_to_name("/dev/storpool-byid/d.n.abc") == "~d.n.abc"
    assert names.path_to_name("/dev/storpool/legacy-vol") == "legacy-vol"
    assert names.path_to_name("~a.b.c") == "~a.b.c"
    assert names.name_to_path("~d.n.abc") == "/dev/storpool-byid/d.n.abc"
    assert names.name_to_path("legacy-vol") == "/dev/storpool/legacy-vol"


@pytest.mark.parametrize("path", ["/dev/sda", "/dev/storpool-byid/D.N.X", "/dev/storpool-byid/a.b", "/dev/storpool/bad name", ""])
def test_bad_paths(path: str) -> None:
    with pytest.raises(ValidationError) as info:
        names.path_to_name(path)
    assert info.value.field == "path"


@pytest.mark.parametrize("name", ["list", "status", "a/b", "x" * 200, "", "~bad", "has space"])
def test_bad_volume_names(name: str) -> None:
    with pytest.raises(ValidationError):
        names.volume_name(name)


def test_snapshot_names_allow_at() -> None:
    assert names.snapshot_name("vol@12") == "vol@12"
    with pytest.raises(ValidationError):
        names.volume_name("vol@12")


def test_tags() -> None:
    assert names.tags({"uuid": "a-b", "cvm": ""}) == {"uuid": "a-b", "cvm": ""}
    with pytest.raises(ValidationError) as info:
        names.tags({"uuid": "has space"})
    assert info.value.field == "tags.uuid"
    with pytest.raises(ValidationError):
        names.tags({"bad key": "x"})


@pytest.mark.parametrize(("value", "words"), [(-512, "positive"), (0, "positive"), (1000, "multiple of 512"), (True, "integer")])
def test_sizes(value: int, words: str) -> None:
    with pytest.raises(ValidationError, match=words):
        names.size(value)
