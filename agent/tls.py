"""TLS for the agent link: the agent's server context, the rule for when plain HTTP is allowed,
and the driver's verification settings.

The agent runs as root on every KVM host and takes a bearer token: over plain HTTP anyone who
can read the management network could replay it. So the agent serves TLS with a certificate
and key from files (on a CloudStack KVM host, the ones CloudStack already issued to its own
agent: /etc/cloudstack/agent/cloud.crt and cloud.key, signed by CloudStack's CA), and the
driver verifies that certificate against a CA file (CloudStack's CA: cloud.ca.crt) and the
address it dials. Plain HTTP is served only on loopback, or behind `--insecure-http`, which
warns at every start.

Python's TLS loads a certificate outside its validity period without a word, and every client
that verifies it (the driver first) then refuses the agent. So the period is read at start,
warned about when the certificate is expired or not yet valid, and shown in the facts and the
metrics, where an operator sees it before the driver's "TLS verification failed".
"""

from __future__ import annotations

import datetime as dt
import logging
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cloudstack_storpool.errors import ValidationError
from cloudstack_storpool.httpjson import is_loopback

log = logging.getLogger(__name__)

CLOUDSTACK_AGENT_CERT = "/etc/cloudstack/agent/cloud.crt"
CLOUDSTACK_AGENT_KEY = "/etc/cloudstack/agent/cloud.key"
CLOUDSTACK_CA = "/etc/cloudstack/agent/cloud.ca.crt"

AGENT_CA_ENV = "CLOUDSTACK_STORPOOL_AGENT_CA"
"""Where the driver reads the CA file that signs the agents' certificates, when not given."""
AGENT_INSECURE_ENV = "CLOUDSTACK_STORPOOL_AGENT_INSECURE_HTTP"
"""Set to 1, the driver dials agents off loopback in plain HTTP (a trusted, isolated network only)."""

INSECURE_WARNING = ("agent serving plain HTTP on a non-loopback address (--insecure-http): the agent token and "
                    "every command can be read and replayed by anyone on this network; serve TLS instead "
                    "(--tls-cert/--tls-key)")


def server_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    """The agent's TLS context (TLS 1.2 or newer) from PEM files; errors name the option."""
    for fld, path in (("tls_cert", cert_file), ("tls_key", key_file)):
        if not Path(path).is_file():
            raise ValidationError(fld, f"{path} is not a readable file")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cert_file, key_file)
    except (ssl.SSLError, OSError) as exc:
        raise ValidationError("tls_cert", f"cannot load {cert_file} with its key {key_file}: {exc}") from None
    return ctx


def serving_context(listen_host: str, cert_file: str | None, key_file: str | None, *,
                    insecure_http: bool) -> ssl.SSLContext | None:
    """The TLS context to serve with, or None for plain HTTP when that is allowed: on loopback
    (nothing on the network can see it), or when the operator said `--insecure-http` (warned)."""
    if (cert_file is None) != (key_file is None):
        raise ValidationError("tls_key" if key_file is None else "tls_cert", "--tls-cert and --tls-key go together")
    if cert_file is not None and key_file is not None:
        if insecure_http:
            raise ValidationError("insecure_http", "cannot be combined with --tls-cert/--tls-key")
        return server_context(cert_file, key_file)
    if is_loopback(listen_host):
        return None
    if not insecure_http:
        raise ValidationError("listen", f"{listen_host} is not a loopback address: serve TLS (--tls-cert and "
                                        f"--tls-key, e.g. {CLOUDSTACK_AGENT_CERT} and {CLOUDSTACK_AGENT_KEY}) "
                                        "or pass --insecure-http")
    log.warning(INSECURE_WARNING)
    return None


@dataclass(frozen=True)
class ServedCertificate:
    """The certificate the agent serves (the first one in its file) and its validity period."""

    file: str
    not_before: dt.datetime
    not_after: dt.datetime

    def problem(self, now: dt.datetime | None = None) -> str | None:
        """Why the certificate is not valid at `now` (default: this moment), None when it is."""
        now = now or dt.datetime.now(dt.UTC)
        if now < self.not_before:
            return f"not valid before {self.not_before.isoformat()}"
        if now > self.not_after:
            return f"expired at {self.not_after.isoformat()}"
        return None

    def to_json(self, now: dt.datetime | None = None) -> dict[str, Any]:
        """The facts' `certificate` entry, judged at `now` (a long-running agent may cross notAfter)."""
        problem = self.problem(now)
        out: dict[str, Any] = {"file": self.file, "not_before": self.not_before.isoformat(),
                               "not_after": self.not_after.isoformat(), "valid": problem is None}
        if problem is not None:
            out["problem"] = problem
        return out


def served_certificate(cert_file: str) -> ServedCertificate:
    """The validity period of the certificate in `cert_file`; warned about when it does not hold now."""
    from cryptography import x509  # here: the driver reads this module's constants and never needs it

    try:
        cert = x509.load_pem_x509_certificate(Path(cert_file).read_bytes())
    except (OSError, ValueError) as exc:
        raise ValidationError("tls_cert", f"cannot read the certificate in {cert_file}: {exc}") from None
    out = ServedCertificate(cert_file, cert.not_valid_before_utc, cert.not_valid_after_utc)
    problem = out.problem()
    if problem is not None:
        log.warning("TLS certificate %s is %s (notBefore %s, notAfter %s): clients that verify it, the driver "
                    "among them, refuse this agent until it is replaced or the clock is right", cert_file, problem,
                    out.not_before.isoformat(), out.not_after.isoformat())
    return out
