"""Request signatures that a real management server accepts.

`cs` 5.2.0 encodes values for the signature with Python's `quote(value, safe="*")`, which
leaves `~` bare; the management server re-encodes with Java's `URLEncoder` (`~` -> `%7E`) and
refuses the request (401) whenever a value holds a `~`. `SigningClient` signs with the server's
encoding (see `server_encode`). The parameters themselves are sent exactly as `cs` sends them
(the server decodes them first and encodes only for the signature), for GET and POST alike.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from urllib.parse import quote

import cs


def server_encode(value: str) -> str:
    """Encode one value the way the management server does before checking a signature.

    The server uses `java.net.URLEncoder.encode(value, "UTF-8")` then turns `+` into `%20`:
    letters, digits and `.-*_` stay, everything else is `%XX` of the UTF-8 bytes. Python's
    `quote(value, safe="*")` agrees on every character except `~`, which `quote` leaves alone.
    """
    return quote(value, safe="*").replace("~", "%7E")


def sign(params: Mapping[str, str], secret: str) -> str:
    """Signature (version 3 rules) over `params`, excluding any `signature` already present."""
    canonical = "&".join(
        f"{name}={server_encode(value)}" for name, value in sorted(params.items()) if name != "signature"
    ).lower()
    digest = hmac.new(secret.encode("utf-8"), canonical.encode("utf-8"), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


class SigningClient(cs.CloudStack):
    """`cs.CloudStack` with the server's encoding for the signature."""

    def _sign(self, data: dict[str, str]) -> None:
        if self.secret:
            data["signature"] = sign(data, self.secret)

    def __repr__(self) -> str:
        return f"<CloudStack {self.endpoint}>"
