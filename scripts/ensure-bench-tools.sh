#!/bin/sh
# Install what `make bench` needs besides the database servers (scripts/ensure-servers.sh),
# when it is missing: sysbench (the MySQL benchmark's workload) and, for a root run, the venv
# module of Debian's /usr/bin/python3 (pg_chameleon refuses root, so it runs as `nobody` from
# a venv that account can read; bench/mysql/chameleon_venv.py). Debian packages only.
set -eu

packages=""
command -v sysbench >/dev/null 2>&1 || packages="sysbench"
if [ "$(id -u)" -eq 0 ] && [ -x /usr/bin/python3 ] &&
    ! /usr/bin/python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
    packages="${packages:+$packages }python3-venv"
fi

if [ -z "$packages" ]; then
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "Error: the benchmark tools are missing and installing them needs root." >&2
    echo "  Fix: sudo apt-get install -y $packages" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update -q
# shellcheck disable=SC2086  # $packages is a list of words
apt-get install -y -q $packages
