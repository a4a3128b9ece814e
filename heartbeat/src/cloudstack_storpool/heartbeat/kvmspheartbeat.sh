#!/bin/sh
# Drop-in replacement for CloudStack's scripts/vm/hypervisor/kvm/kvmspheartbeat.sh (same name,
# same argument: -c). CloudStack's KVM agent runs it to reboot a host whose StorPool client it
# believes down; this one reboots only when cloudstack-storpool's host heartbeat has a fresh
# verdict that the client is down and idle, and otherwise logs and refuses.
# See docs/operations.md ("The kvmspheartbeat.sh drop-in") for installation.
#
# CSSP_PYTHON: the Python that has cloudstack_storpool installed (default: python3 on PATH,
# then /opt/cloudstack-storpool/bin/python).
PY="${CSSP_PYTHON:-}"
if [ -z "$PY" ]; then
    if [ -x /opt/cloudstack-storpool/bin/python ]; then
        PY=/opt/cloudstack-storpool/bin/python
    else
        PY=python3
    fi
fi
exec "$PY" -m cloudstack_storpool.heartbeat.dropin "$@"
