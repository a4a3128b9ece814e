"""Sizes typed by operators and shown in tables (cloudstack_storpool/sizes.py, ops_cli)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from cloudstack_storpool.errors import ValidationError
from cloudstack_storpool.ops_cli import table, volume_group
from cloudstack_storpool.sizes import format_size, parse_size


@pytest.mark.parametrize(("text", "want"), [
    ("4096", 4096), ("4096B", 4096), ("10G", 10 << 30), ("10g", 10 << 30), ("10GiB", 10 << 30),
    ("512M", 512 << 20), ("512 MiB", 512 << 20), ("1.5T", 3 << 39), ("1K", 1024), ("2P", 2 << 50),
    ("10GB", 10 * 10**9), ("1kb", 1000), (" 3G ", 3 << 30), (7, 7),
])
def test_parse(text: str | int, want: int) -> None:
    assert parse_size(text) == want


@pytest.mark.parametrize("text", ["", "G", "10X", "-1", "1.1B", "10Gi", "10 G B", "1e9", "ten", "10GIBB", "0.3K"])
def test_parse_refuses_naming_the_field(text: str) -> None:
    with pytest.raises(ValidationError) as err:
        parse_size(text, "new_size")
    assert err.value.field == "new_size"


def test_parse_refuses_bools_and_negatives() -> None:
    with pytest.raises(ValidationError):
        parse_size(True)
    with pytest.raises(ValidationError):
        parse_size(-5)


@pytest.mark.parametrize(("n", "want"), [
    (0, "0 B"), (1023, "1023 B"), (1024, "1.0 KiB"), (10 << 30, "10.0 GiB"), (366503875925, "341.3 GiB"),
    (3 << 39, "1.5 TiB"), (None, ""), ("-", "-"),
])
def test_format(n: object, want: str) -> None:
    assert format_size(n) == want


def test_table_shows_size_columns_in_binary_units_only() -> None:
    out = table([{"name": "p", "capacity": 366503875925, "volumes": 2048}], ["name", "capacity", "volumes"])
    assert "341.3 GiB" in out and "2048" in out and "366503875925" not in out


def test_volume_create_refuses_a_bad_size_before_anything_runs() -> None:
    res = CliRunner().invoke(volume_group, ["create", "pool", "00000000-0000-0000-0000-000000000001", "--size", "10X",
                                            "--pools", "/nonexistent"])
    assert res.exit_code == 2 and "size" in res.output and "10X" in res.output
