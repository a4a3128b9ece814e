"""The agent link's settings, read by both ends: the shared bearer token, and where the driver
finds the CA that signs the agents' certificates (or that it may dial plain HTTP)."""

from __future__ import annotations

from cloudstack_storpool.tokens import read_token

AGENT_TOKEN_ENV = "CLOUDSTACK_STORPOOL_AGENT_TOKEN"
AGENT_CA_ENV = "CLOUDSTACK_STORPOOL_AGENT_CA"
"""Where the driver reads the CA file that signs the agents' certificates, when not given."""
AGENT_INSECURE_ENV = "CLOUDSTACK_STORPOOL_AGENT_INSECURE_HTTP"
"""Set to 1, the driver dials agents off loopback in plain HTTP (a trusted, isolated network only)."""


def read_agent_token(token_file: str | None, env: dict[str, str] | None = None) -> str:
    """The shared agent token: from `--token-file`, else `$CLOUDSTACK_STORPOOL_AGENT_TOKEN`."""
    return read_token(token_file, AGENT_TOKEN_ENV, "agent token", env)
