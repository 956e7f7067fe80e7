#!/usr/bin/env bash
# One entry point for a fresh Debian machine (run as root):
#   ./dev.sh demo        set up, then run `vswitch demo`
#   ./dev.sh test [ARGS]  set up, then run the whole test suite (ARGS go to pytest)
# Set-up is idempotent: missing Debian packages are installed, and .venv at the repository root
# gets the project with its test extras.
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")"

DEB_PACKAGES=(python3 python3-venv python3-dev gcc iproute2 iputils-ping procps tcpdump tshark
              ucarp iperf3 vde2 netsniff-ng zsh qemu-system-x86)

setup_debian() {
    command -v dpkg-query >/dev/null || return 0
    local missing=()
    for p in "${DEB_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" -ne 0 ]; then
        echo "dev.sh: missing Debian packages (${missing[*]}); run as root to install them" >&2
        return 0
    fi
    echo "dev.sh: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

pick_python() {
    for py in python3.13 python3.12 python3.11 python3; do
        if command -v "$py" >/dev/null && "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
            echo "$py"; return 0
        fi
    done
    echo "dev.sh: Python 3.11 or newer is required" >&2; exit 1
}

setup_venv() {
    if [ ! -x .venv/bin/python ]; then
        "$(pick_python)" -m venv .venv
    fi
    local stamp=.venv/.installed
    if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
        .venv/bin/python -m pip install -q --upgrade pip
        .venv/bin/python -m pip install -q -e '.[test]'
        touch "$stamp"
    fi
}

cmd=${1:-}
[ $# -gt 0 ] && shift
case "$cmd" in
    demo)
        setup_debian; setup_venv
        exec .venv/bin/vswitch demo "$@" ;;
    test)
        setup_debian; setup_venv
        .venv/bin/ruff check carp vswitch tests bench
        .venv/bin/ruff format --check carp vswitch tests bench
        .venv/bin/mypy
        exec .venv/bin/python -m pytest --cov=carp --cov-branch --cov-report=term --cov-fail-under=95 "$@" ;;
    setup)
        setup_debian; setup_venv ;;
    *)
        echo "usage: ./dev.sh demo | ./dev.sh test [pytest args] | ./dev.sh setup" >&2; exit 2 ;;
esac
