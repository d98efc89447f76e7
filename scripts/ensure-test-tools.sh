#!/bin/sh
# Install what the operations tests need besides the servers (scripts/ensure-servers.sh), when
# it is missing: Debian's headless Chromium and its chromedriver (the status page is tested in
# a real browser; a browser download such as `playwright install` cannot work here) and
# promtool from the prometheus package (the alert rules in deploy/ are checked and unit-tested
# with it). Debian packages only.
set -eu

packages=""
command -v chromium >/dev/null 2>&1 || packages="chromium"
command -v chromedriver >/dev/null 2>&1 || packages="${packages:+$packages }chromium-driver"
command -v promtool >/dev/null 2>&1 || packages="${packages:+$packages }prometheus"

if [ -z "$packages" ]; then
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "Error: the test tools are missing and installing them needs root." >&2
    echo "  Fix: sudo apt-get install -y $packages" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update -q
# shellcheck disable=SC2086  # $packages is a list of words
apt-get install -y -q --no-install-recommends $packages
