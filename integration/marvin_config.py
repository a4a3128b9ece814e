"""Write Marvin's configuration for the local stack: `python integration/marvin_config.py RUN_DIR OUT LOG_DIR`.

The Marvin runner (`../shared/marvin/run.sh`) calls it through MARVIN_MAKE_CONFIG once the stack
is up: the management server is the stack's CloudStack simulator (its endpoint and the admin's
keys from RUN_DIR/secrets.env), zone `zone1` holds the stack's StorPool pools by the names of
RUN_DIR/stack/pools.toml, and StorPool's API is the stack's emulator. Standalone on purpose (the
runner runs it with the system's python3), so it imports nothing from the project.
"""

from __future__ import annotations

import json
import sys
import tomllib
import urllib.parse
from pathlib import Path
from typing import Any

ZONE = "zone1"
"""The simulator's seeded zone."""


def read_env(path: Path) -> dict[str, str]:
    env: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            env[key] = value.strip("'\"")
    return env


def config(run_dir: Path, log_dir: str) -> dict[str, Any]:
    env = read_env(run_dir / "secrets.env")
    pools = tomllib.loads((run_dir / "stack" / "pools.toml").read_text())["pool"]
    # The simulator at CloudStack's API port (8080): Marvin's user API clients take the config's
    # address and connect to port 8080 of it, whatever port the config names.
    endpoint = urllib.parse.urlsplit(env.get("CLOUDSTACK_API_PORT_ENDPOINT") or env["CLOUDSTACK_ENDPOINT"])
    return {
        "zones": [{
            "name": ZONE,
            "enabled": "True",
            "physical_networks": [],
            # What a StorPool pool registered by the plugin looks like (type StorPool, its path).
            "primaryStorages": [
                {"url": p["url"], "name": p["name"], "provider": "StorPool", "hypervisor": "KVM",
                 "path": "/dev/storpool-byid/", "protocol": "StorPool", "capacitybytes": 300000000000,
                 "tags": ""} for p in pools],
            "spEndpoint": env["SP_API_HTTP_HOST"],
            "spEndpointPort": int(env["SP_API_HTTP_PORT"]),
            "spAuthToken": env["SP_AUTH_TOKEN"],
        }],
        "dbSvr": {"dbSvr": "127.0.0.1", "passwd": "cloud", "db": "cloud", "port": 3306, "user": "cloud"},
        "logger": {"LogFolderPath": log_dir},
        "mgtSvr": [{
            "mgtSvrIp": endpoint.hostname, "port": endpoint.port, "user": "admin", "passwd": "password",
            "apiKey": env["CLOUDSTACK_KEY"], "securityKey": env["CLOUDSTACK_SECRET"],
            "useHttps": "False", "certCAPath": "NA", "certPath": "NA", "hypervisor": "kvm", "zone": ZONE,
        }],
    }


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: marvin_config.py RUN_DIR OUT LOG_DIR", file=sys.stderr)
        return 2
    run_dir, out, log_dir = Path(argv[0]), Path(argv[1]), argv[2]
    out.write_text(json.dumps(config(run_dir, log_dir), indent=2))
    out.chmod(0o600)  # it holds the admin's secret key and StorPool's token
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
