"""TLS for the agent link: the agent's server context, the rule for when plain HTTP is allowed,
and the driver's verification settings.

The agent runs as root on every KVM host and takes a bearer token: over plain HTTP anyone who
can read the management network could replay it. So the agent serves TLS with a certificate
and key from files (on a CloudStack KVM host, the ones CloudStack already issued to its own
agent: /etc/cloudstack/agent/cloud.crt and cloud.key, signed by CloudStack's CA), and the
driver verifies that certificate against a CA file (CloudStack's CA: cloud.ca.crt) and the
address it dials. Plain HTTP is served only on loopback, or behind `--insecure-http`, which
warns at every start.
"""

from __future__ import annotations

import logging
import ssl
from pathlib import Path

from cloudstack_storpool.errors import ValidationError
from cloudstack_storpool.httpjson import is_loopback

log = logging.getLogger(__name__)

CLOUDSTACK_AGENT_CERT = "/etc/cloudstack/agent/cloud.crt"
CLOUDSTACK_AGENT_KEY = "/etc/cloudstack/agent/cloud.key"
CLOUDSTACK_CA = "/etc/cloudstack/agent/cloud.ca.crt"

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
