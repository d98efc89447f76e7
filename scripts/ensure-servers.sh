#!/bin/sh
# Install the database server binaries the test suite runs, when they are missing.
# Debian packages only; the suite starts its own throw-away clusters from them.
set -eu

need_pg=0
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need_pg=1

if [ "$need_pg" -eq 0 ]; then
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "Error: PostgreSQL server binaries are missing and installing them needs root." >&2
    echo "  Fix: sudo apt-get install -y postgresql" >&2
    exit 1
fi

# Debian's package would otherwise create and start a cluster on port 5432 we never use.
mkdir -p /etc/postgresql-common
grep -qs '^create_main_cluster' /etc/postgresql-common/createcluster.conf ||
    echo 'create_main_cluster = false' >> /etc/postgresql-common/createcluster.conf

export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q postgresql postgresql-contrib
