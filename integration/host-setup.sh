#!/usr/bin/env bash
# Installs the system components the integration tests and the local stack use,
# and starts libvirt's daemons. Idempotent: every step checks before it acts.
set -euo pipefail

PKGS=(qemu-utils qemu-system-x86 libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients
      libvirt-dev pkg-config xfsprogs util-linux procps e2fsprogs openssl)

if [ "$(id -u)" -ne 0 ]; then
    echo "host-setup: not root; skipping system packages and services (loop, XFS and libvirt tests will skip)" >&2
    exit 0
fi

missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "host-setup: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Debian creates this user in libvirt-daemon-system's maintainer scripts, which we do not pull in;
# libvirt's QEMU driver runs guests as it.
getent group kvm >/dev/null || groupadd -r kvm
getent group libvirt-qemu >/dev/null || groupadd -r libvirt-qemu
getent passwd libvirt-qemu >/dev/null || useradd -r -g kvm -G libvirt-qemu -d /var/lib/libvirt -s /usr/sbin/nologin libvirt-qemu

# Guests run as libvirt-qemu (group kvm). Without access to /dev/kvm, libvirt re-probes QEMU's
# capabilities on every call (seconds each, ~36 s per domain start) and guests fall back to TCG.
if [ -e /dev/kvm ]; then
    chgrp kvm /dev/kvm && chmod 660 /dev/kvm
fi

mkdir -p /run/libvirt /var/log/libvirt/qemu /var/lib/libvirt/qemu /var/cache/libvirt
pgrep -x virtlogd >/dev/null || virtlogd -d
if ! pgrep -x libvirtd >/dev/null; then
    libvirtd -d
fi
# Wait for the libvirt socket so the first test does not race the daemon start.
for _ in $(seq 1 50); do
    virsh -c qemu:///system version >/dev/null 2>&1 && break
    sleep 0.2
done
virsh -c qemu:///system version >/dev/null 2>&1 || { echo "host-setup: libvirtd did not come up" >&2; exit 1; }
modprobe loop 2>/dev/null || true
echo "host-setup: system ready"
