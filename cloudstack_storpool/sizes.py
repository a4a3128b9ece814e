"""Sizes as people type and read them: one parser and one formatter for every operator command.

Why a module of its own: StorPool's and qemu-img's command lines read `10G` as 10 GiB, an
operator pastes `10GiB` from a ticket, a script passes bytes; all of them must mean the same thing
in every command, and a table must print sizes one way. The rules:

* plain digits (optionally followed by `B`) are bytes;
* `K`, `M`, `G`, `T`, `P` and `KiB` ... `PiB` are binary (powers of 1024), as in StorPool's CLI;
* `KB`, `MB`, `GB`, `TB`, `PB` are decimal (powers of 1000), as disk vendors write them;
* a fraction is allowed (`1.5G`) as long as the result is a whole number of bytes;
* case does not matter and a space between number and unit is allowed.

`--json` output keeps bytes; only tables use `format_size`.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Any

from cloudstack_storpool.errors import ValidationError

_BINARY = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}
_DECIMAL = {"k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12, "p": 10**15}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)(i?b?)\s*$", re.IGNORECASE)
_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def parse_size(value: str | int, field: str = "size") -> int:
    """Bytes from `10G`, `512M`, `10GiB`, `1.5T`, `4096`; ValidationError naming `field` otherwise."""
    if isinstance(value, bool):
        raise ValidationError(field, f"{value!r} is not a size")
    if isinstance(value, int):
        if value < 0:
            raise ValidationError(field, f"must not be negative, got {value}")
        return value
    m = _SIZE.match(str(value))
    if m is None:
        raise ValidationError(field, f"{value!r} is not a size (bytes, or a number with K/M/G/T/P, KiB..PiB, KB..PB)")
    number, prefix, suffix = m.group(1), m.group(2).lower(), m.group(3).lower()
    if not prefix and suffix == "i":
        raise ValidationError(field, f"{value!r} is not a size")
    if not prefix:
        factor = 1
    elif suffix == "b":
        factor = _DECIMAL[prefix]
    elif suffix in ("", "ib"):
        factor = _BINARY[prefix]
    else:
        raise ValidationError(field, f"{value!r} is not a size (write {m.group(1)}{prefix.upper()}iB)")
    try:
        exact = Decimal(number) * factor
    except InvalidOperation:
        raise ValidationError(field, f"{value!r} is not a size") from None
    if exact != exact.to_integral_value():
        raise ValidationError(field, f"{value!r} is not a whole number of bytes")
    return int(exact)


def format_size(value: Any) -> str:
    """`10.0 GiB`, `512.0 MiB`, `4.0 KiB`, `300 B`: binary units with one decimal. Anything that is
    not an int (None, a string) is shown as it is."""
    if isinstance(value, bool) or not isinstance(value, int):
        return "" if value is None else str(value)
    sign = "-" if value < 0 else ""
    n = abs(value)
    if n < 1024:
        return f"{sign}{n} B"
    unit = 0
    scaled = float(n)
    while scaled >= 1024 and unit < len(_UNITS) - 1:
        scaled /= 1024
        unit += 1
    return f"{sign}{scaled:.1f} {_UNITS[unit]}"
