#!/bin/sh
# Install the database server binaries the test suite runs, when they are missing.
# Debian packages only; the suite starts its own throw-away servers from them
# (tests/pgcluster.py, tests/mariadb.py) and never uses the system-wide ones.
set -eu

packages=""
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || packages="postgresql postgresql-contrib"
# mariadbd lives in /usr/sbin, which a normal user's PATH often lacks.
if ! { command -v mariadbd || [ -x /usr/sbin/mariadbd ]; } >/dev/null 2>&1 ||
    ! command -v mariadb-install-db >/dev/null 2>&1; then
    packages="${packages:+$packages }mariadb-server"
fi

if [ -z "$packages" ]; then
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "Error: database server binaries are missing and installing them needs root." >&2
    echo "  Fix: sudo apt-get install -y $packages" >&2
    exit 1
fi

# Debian's package would otherwise create and start a cluster on port 5432 we never use.
mkdir -p /etc/postgresql-common
grep -qs '^create_main_cluster' /etc/postgresql-common/createcluster.conf ||
    echo 'create_main_cluster = false' >> /etc/postgresql-common/createcluster.conf

# Debian's mariadb-server starts a system server on port 3306 from its postinst, through
# invoke-rc.d / deb-systemd-invoke, which both ask /usr/sbin/policy-rc.d first: exit code 101
# means "not allowed", and the package installs without starting anything. It matters more than
# the port: the maintainer scripts also run `invoke-rc.d mariadb stop` whenever any mariadbd runs
# as the mysql user (our test servers do, when run as root), and the init script's fallback for
# a stop is `killall mariadbd`, every server on the machine. A policy-rc.d already in place
# (Docker images ship one that denies everything) is left alone; ours lasts for this run only.
policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\n# Written by scripts/ensure-servers.sh for one apt-get run.\nexit 101\n' \
        > "$policy"
    chmod 755 "$policy"
    trap 'rm -f "$policy"' EXIT
    trap 'exit 1' HUP INT TERM
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update -q
# shellcheck disable=SC2086  # $packages is a list of words
apt-get install -y -q $packages

# Should an existing policy have let the system MariaDB start anyway, stop just that one: with
# systemd through its unit, otherwise by the pid in its Debian pid file (not the init script,
# for its killall).
case " $packages " in
*" mariadb-server "*)
    if [ -d /run/systemd/system ]; then
        systemctl stop mariadb.service >/dev/null 2>&1 || true
        systemctl disable mariadb.service >/dev/null 2>&1 || true
    elif [ -s /run/mysqld/mysqld.pid ]; then
        kill -TERM "$(cat /run/mysqld/mysqld.pid)" 2>/dev/null || true
    fi
    ;;
esac
