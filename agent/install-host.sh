#!/bin/sh
# Install cloudstack-storpool on a KVM host (or a management server): a virtualenv made with a
# Python 3.11 or newer from the distribution's own packages, the package into it, and the
# agent's and heartbeat's systemd units pointing at it.
#
# The package needs Python >= 3.11, and most KVM hosts CloudStack supports have an older
# `python3` (Ubuntu 22.04: 3.10, EL 8: 3.6, EL 9: 3.9), so `python3 -m venv` is not enough.
# This script looks for a 3.11+ interpreter (python3.13, python3.12, python3.11, python3, in
# that order; $CSSP_PYTHON first when set) and, when there is none, stops and names the
# packages to install for this distribution (read from /etc/os-release). See
# docs/operations.md ("Installing").
#
# Usage: install-host.sh [--prefix DIR] [--source PIP-SPEC] [--pip-args ARGS]
#                        [--systemd-dir DIR | --no-units] [--no-build-check] [--check-only]
#   --prefix DIR       the virtualenv (default /opt/cloudstack-storpool; the units and the
#                      kvmspheartbeat.sh drop-in use /opt/cloudstack-storpool/bin)
#   --source SPEC      what pip installs (default: the checkout this script is in)
#   --pip-args ARGS    extra pip arguments, word-split (e.g. "--no-index --find-links /srv/wheels")
#   --systemd-dir DIR  where the units go (default /etc/systemd/system); --no-units: none
#   --no-build-check   do not check what building libvirt-python needs (a wheelhouse has it)
#   --check-only       find the interpreter, say which, and stop
# Environment: CSSP_PYTHON (an interpreter to try first), CSSP_OS_RELEASE (default
# /etc/os-release).
set -eu

PREFIX=/opt/cloudstack-storpool
DEFAULT_PREFIX=/opt/cloudstack-storpool
HERE=$(cd "$(dirname "$0")" && pwd)
# What pip installs by default: the checkout this script is in (the nearest directory above it
# with a pyproject.toml); none when it runs from an installed package (then --source is needed).
SOURCE=$HERE
while [ "$SOURCE" != / ] && [ ! -f "$SOURCE/pyproject.toml" ]; do SOURCE=$(dirname "$SOURCE"); done
[ -f "$SOURCE/pyproject.toml" ] || SOURCE=""
AGENT_UNIT=$HERE/cloudstack-storpool-agent.service
HEARTBEAT_UNIT=$(dirname "$HERE")/heartbeat/cloudstack-storpool-heartbeat.service
PIP_ARGS=""
SYSTEMD_DIR=/etc/systemd/system
UNITS=yes
BUILD_CHECK=yes
CHECK_ONLY=no
OS_RELEASE=${CSSP_OS_RELEASE:-/etc/os-release}
# Exit codes: 2 bad usage, 3 no suitable interpreter (packages named), 4 build prerequisites missing.
NO_PYTHON=3
NO_BUILD_TOOLS=4

die() { code=$1; shift; printf 'install-host.sh: %s\n' "$*" >&2; exit "$code"; }

while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) PREFIX=${2:?--prefix needs a directory}; shift 2 ;;
        --source) SOURCE=${2:?--source needs a pip requirement or path}; shift 2 ;;
        --pip-args) PIP_ARGS=${2?--pip-args needs a value}; shift 2 ;;
        --systemd-dir) SYSTEMD_DIR=${2:?--systemd-dir needs a directory}; shift 2 ;;
        --no-units) UNITS=no; shift ;;
        --no-build-check) BUILD_CHECK=no; shift ;;
        --check-only) CHECK_ONLY=yes; shift ;;
        -h|--help) sed -n '2,/^set -eu$/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; exit 0 ;;
        *) die 2 "unknown argument: $1 (see --help)" ;;
    esac
done

# --- the distribution, and what it calls the packages ---------------------------------------

# A field of os-release, unquoted (read, not sourced: only these four are wanted).
os_field() { sed -n "s/^$1=//p" "$OS_RELEASE" 2>/dev/null | head -n 1 | tr -d "\"'"; }
ID=$(os_field ID) VERSION_ID=$(os_field VERSION_ID) ID_LIKE=$(os_field ID_LIKE) PRETTY_NAME=$(os_field PRETTY_NAME)
MAJOR=${VERSION_ID%%.*}

# One line per distribution: how to get a Python >= 3.11 with venv (and what building
# libvirt-python needs) from the distribution's own repositories.
packages_for_python() {
    case "$ID:$VERSION_ID" in
        ubuntu:22.04) echo "apt-get install python3.11 python3.11-venv python3.11-dev (Ubuntu 22.04's python3 is 3.10; these are in its universe component)" ;;
        ubuntu:2[4-9].*|ubuntu:[3-9]*) echo "apt-get install python3 python3-venv python3-dev" ;;
        ubuntu:*) echo "nothing: Ubuntu $VERSION_ID has no Python 3.11 package; upgrade the host to Ubuntu 22.04 or newer" ;;
        debian:1[2-9]*) echo "apt-get install python3 python3-venv python3-dev" ;;
        debian:*) echo "nothing: Debian $VERSION_ID has no Python 3.11 package; upgrade the host to Debian 12 or newer" ;;
        *)
            case " $ID $ID_LIKE " in
                *" rhel "*|*" centos "*|*" fedora "*|*" rocky "*|*" almalinux "*|*" ol "*)
                    case "$MAJOR" in
                        8) echo "dnf install python3.11 python3.11-devel (AppStream, EL 8.8 and later; python3 is 3.6)" ;;
                        9) echo "dnf install python3.11 python3.11-devel (AppStream, EL 9.2 and later; or python3.12 python3.12-devel from 9.4; python3 is 3.9)" ;;
                        7|6) echo "nothing: EL $MAJOR has no Python 3.11 package; use EL 8.8 or newer" ;;
                        *) echo "dnf install python3 python3-devel" ;;
                    esac ;;
                *" suse "*|*" sles "*|*" opensuse "*) echo "zypper install python311 python311-devel" ;;
                *) echo "a Python 3.11 or newer with its venv module from your distribution (${ID:-unknown} ${VERSION_ID})" ;;
            esac ;;
    esac
}

packages_for_build() {
    case " $ID $ID_LIKE " in
        *" debian "*|*" ubuntu "*) echo "apt-get install libvirt-dev pkg-config gcc" ;;
        *" rhel "*|*" centos "*|*" fedora "*|*" rocky "*|*" almalinux "*|*" ol "*)
            echo "dnf install libvirt-devel pkgconf-pkg-config gcc (if dnf does not find libvirt-devel, enable the PowerTools/CRB repository: dnf config-manager --set-enabled powertools on EL 8, crb on EL 9)" ;;
        *" suse "*|*" sles "*|*" opensuse "*) echo "zypper install libvirt-devel pkg-config gcc" ;;
        *) echo "libvirt's development headers, pkg-config and a C compiler" ;;
    esac
}

# --- the interpreter ----------------------------------------------------------------------

# "MAJOR MINOR" of an interpreter, or nothing when it does not run.
version_of() { "$1" -c 'import sys; print("%d %d" % sys.version_info[:2])' 2>/dev/null || true; }

new_enough() {  # "3 11" and later
    set -- $1
    [ $# -eq 2 ] && { [ "$1" -gt 3 ] || { [ "$1" -eq 3 ] && [ "$2" -ge 11 ]; }; }
}

PYTHON="" FOUND_OLD="" NO_VENV=""
for candidate in ${CSSP_PYTHON:-} python3.13 python3.12 python3.11 python3; do
    path=$(command -v "$candidate" 2>/dev/null) || continue
    version=$(version_of "$path")
    if ! new_enough "$version"; then
        [ -n "$version" ] && FOUND_OLD="$FOUND_OLD $path ($(echo "$version" | tr ' ' .))"
        continue
    fi
    # venv needs ensurepip, which Debian and Ubuntu ship apart (pythonX.Y-venv).
    if ! "$path" -c 'import ensurepip, venv' >/dev/null 2>&1; then
        NO_VENV="$NO_VENV $path"
        continue
    fi
    PYTHON=$path
    break
done

if [ -z "$PYTHON" ]; then
    if [ -n "$NO_VENV" ]; then
        set -- $NO_VENV
        name=$(basename "$1")
        case " $ID $ID_LIKE " in
            *" debian "*|*" ubuntu "*) hint="apt-get install $name-venv" ;;
            *) hint="the package that gives $name its venv and ensurepip modules" ;;
        esac
        die "$NO_PYTHON" "found$NO_VENV without the venv module; install it: $hint"
    fi
    die "$NO_PYTHON" "no Python 3.11 or newer found (found:${FOUND_OLD:- none}); cloudstack-storpool needs 3.11+." \
        "On ${PRETTY_NAME:-${ID:-this system} $VERSION_ID} install: $(packages_for_python), then run this script again."
fi
echo "install-host.sh: using $PYTHON ($(version_of "$PYTHON" | tr ' ' .))"
[ "$CHECK_ONLY" = yes ] && exit 0
[ -n "$SOURCE" ] || die 2 "not in a checkout: say what to install with --source (e.g. --source cloudstack-storpool)"

# --- what building libvirt-python needs (it publishes no wheels) ---------------------------

if [ "$BUILD_CHECK" = yes ]; then
    missing=""
    "$PYTHON" -c 'import os, sys, sysconfig; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
        || missing="$missing Python.h"
    { command -v pkg-config >/dev/null 2>&1 && pkg-config --exists libvirt; } || missing="$missing libvirt.pc"
    { command -v cc >/dev/null 2>&1 || command -v gcc >/dev/null 2>&1; } || missing="$missing a C compiler"
    if [ -n "$missing" ]; then
        die "$NO_BUILD_TOOLS" "building libvirt-python needs:$missing. Install: $(packages_for_build)" \
            "(and the interpreter's headers: $(packages_for_python)), or pass --no-build-check with a wheelhouse in --pip-args."
    fi
fi

# --- the virtualenv and the package -------------------------------------------------------

if [ -x "$PREFIX/bin/python" ]; then
    existing=$(version_of "$PREFIX/bin/python")
    new_enough "$existing" || die "$NO_PYTHON" "$PREFIX is a virtualenv of Python $(echo "$existing" | tr ' ' .)," \
        "older than 3.11: remove it (rm -r $PREFIX) and run this script again"
else
    "$PYTHON" -m venv "$PREFIX"
fi
# shellcheck disable=SC2086
"$PREFIX/bin/python" -m pip install $PIP_ARGS "$SOURCE"

# --- the units ----------------------------------------------------------------------------

if [ "$UNITS" = yes ]; then
    mkdir -p "$SYSTEMD_DIR"
    for unit in "$AGENT_UNIT" "$HEARTBEAT_UNIT"; do
        sed "s#$DEFAULT_PREFIX/bin/#$PREFIX/bin/#g" "$unit" > "$SYSTEMD_DIR/$(basename "$unit")"
        chmod 0644 "$SYSTEMD_DIR/$(basename "$unit")"
    done
    if [ "$SYSTEMD_DIR" = /etc/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
        systemctl daemon-reload
    fi
fi

cat <<EOF
install-host.sh: installed into $PREFIX.
Next: the agent token in /etc/cloudstack-storpool/agent.token (mode 0600), then
  systemctl enable --now cloudstack-storpool-agent cloudstack-storpool-heartbeat
and the kvmspheartbeat.sh drop-in as docs/operations.md says.
EOF
