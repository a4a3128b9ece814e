"""Reading shared secrets (service token, agent token, StorPool token) from files or the
environment, never from command-line values: those are visible to every user in `ps`."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from cloudstack_storpool.errors import ValidationError


def read_secret_file(path: str, what: str) -> str:
    """The first line of a secret file; errors name the file, never its content."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ValidationError(what, f"cannot read {path}: {exc.strerror}") from exc
    value = text.strip().splitlines()[0].strip() if text.strip() else ""
    if not value:
        raise ValidationError(what, f"{path} is empty")
    return value


def read_token(token_file: str | None, env_var: str, what: str, env: Mapping[str, str] | None = None) -> str:
    """`token_file` when given, else `$env_var`; a clear error naming both when neither is set."""
    if token_file:
        return read_secret_file(token_file, "token_file")
    value = (env if env is not None else os.environ).get(env_var, "").strip()
    if not value:
        raise ValidationError("token_file", f"no {what}: pass --token-file or set ${env_var}")
    return value
