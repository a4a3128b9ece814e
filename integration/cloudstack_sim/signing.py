"""Request signature verification, the way the CloudStack management server does it.

This is written from the server's rule, independently of the `cs` client and of the project's
facade: if both sides shared one encoder, an encoding bug would verify against itself and a
real server would still refuse the request. The rule (ApiServer.verifyRequest, signature
version 3):

- every request parameter except `signature`, sorted by name (case-sensitive, as Java's
  `Collections.sort` on strings);
- each value encoded with `java.net.URLEncoder.encode(value, "UTF-8")` and then `+` replaced
  by `%20`: letters, digits and `.-*_` stay, a space becomes `+` (then `%20`), everything else
  is `%XX` of its UTF-8 bytes. In particular `~` becomes `%7E` (Python's `quote` leaves it
  bare) and `*` stays bare;
- `name=value` pairs joined with `&`, the whole string lower-cased, HMAC-SHA1 with the user's
  secret key, base64;
- with `signatureVersion=3`, `expires` is required and the request is refused once it has
  passed; it is read in the DateUtil formats (`yyyy-MM-dd'T'HH:mm:ssZ`, with or without
  milliseconds);
- the control parameters `apiKey`, `signature`, `signatureVersion` and `expires` are found
  whatever their case (ApiServer compares them with equalsIgnoreCase).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import string
from collections.abc import Callable, Mapping
from datetime import UTC, datetime

_JAVA_UNRESERVED = frozenset(string.ascii_letters + string.digits + ".-*_")

EXPIRES_FORMAT = "%Y-%m-%dT%H:%M:%S%z"
EXPIRES_FORMATS = (EXPIRES_FORMAT, "%Y-%m-%dT%H:%M:%S.%f%z")


class SignatureError(Exception):
    """Why a request was refused. The reason is for the simulator's log, never the client's."""


def java_url_encode(value: str) -> str:
    """`java.net.URLEncoder.encode(value, "UTF-8")`, character by character."""
    out: list[str] = []
    for ch in value:
        if ch in _JAVA_UNRESERVED:
            out.append(ch)
        elif ch == " ":
            out.append("+")
        else:
            out.extend(f"%{byte:02X}" for byte in ch.encode("utf-8", errors="surrogatepass"))
    return "".join(out)


def canonical_request(params: Mapping[str, str]) -> str:
    """The string the server signs: sorted, Java-encoded, `+` as `%20`, lower-cased."""
    names = sorted(name for name in params if name.lower() != "signature")
    joined = "&".join(f"{name}={java_url_encode(params[name]).replace('+', '%20')}" for name in names)
    return joined.lower()


def compute_signature(params: Mapping[str, str], secret: str) -> str:
    digest = hmac.new(secret.encode("utf-8"), canonical_request(params).encode("utf-8"), hashlib.sha1)
    return base64.b64encode(digest.digest()).decode("ascii")


def parse_expires(value: str) -> datetime:
    """DateUtil's `yyyy-MM-dd'T'HH:mm:ssZ` (e.g. `2024-05-01T10:00:00+0000`), also with
    milliseconds (`2024-05-01T10:00:00.123+0000`)."""
    for fmt in EXPIRES_FORMATS:
        try:
            return datetime.strptime(value, fmt)
        except ValueError:
            continue
    raise SignatureError(f"malformed expires {value!r}")


def _control(params: Mapping[str, str], name: str) -> str | None:
    """A control parameter whatever its case (the last one given, if several)."""
    wanted = name.lower()
    found = [value for key, value in params.items() if key.lower() == wanted]
    return found[-1] if found else None


def verify_request(
    params: Mapping[str, str],
    secret_for_key: Callable[[str], str | None],
    *,
    now: datetime | None = None,
) -> str:
    """Check the signature of `params`; return the API key of the caller.

    Raises SignatureError for every way the real server would answer 401.
    """
    api_key = _control(params, "apiKey")
    signature = _control(params, "signature")
    if not api_key or not signature:
        raise SignatureError("apiKey or signature missing")
    secret = secret_for_key(api_key)
    if secret is None:
        raise SignatureError("unknown apiKey")
    version = _control(params, "signatureVersion")
    if version == "3":
        expires = _control(params, "expires")
        if not expires:
            raise SignatureError("signatureVersion 3 without expires")
        moment = now or datetime.now(UTC)
        if moment > parse_expires(expires):
            raise SignatureError("request expired")
    expected = compute_signature(params, secret)
    if not hmac.compare_digest(expected.encode("ascii"), signature.encode("utf-8", errors="replace")):
        raise SignatureError("signature mismatch")
    return api_key
