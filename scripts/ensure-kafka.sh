#!/bin/sh
# Fetch the Apache Kafka broker the test suite runs (tests/kafka/pom.xml: Kafka's jars and
# their dependencies from Maven Central) into a cache folder, when it is not there yet.
# tests/kafkabroker.py runs the broker from that folder on the machine's Java 17.
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
pom="$root/tests/kafka/pom.xml"
version=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$pom")
cache="${REPLICATOR_KAFKA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/replicator}"
libs="$cache/kafka-$version"

# The marker is written last: a folder without it is an interrupted fetch.
if [ -f "$libs/.complete" ]; then
    exit 0
fi

missing=""
command -v java >/dev/null 2>&1 || missing="openjdk-17-jre-headless"
command -v mvn >/dev/null 2>&1 || missing="${missing:+$missing }maven"
if [ -n "$missing" ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "Error: the Kafka tests need Java 17 and Maven, and installing them needs root." >&2
        echo "  Fix: sudo apt-get install -y $missing" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    # shellcheck disable=SC2086  # $missing is a list of words
    apt-get install -y -q $missing
fi

echo "Fetching Apache Kafka $version from Maven Central into $libs"
mkdir -p "$cache"
partial="$libs.partial.$$"
trap 'rm -rf "$partial"' EXIT
mvn -q -B -Dstyle.color=never -f "$pom" dependency:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$partial"
touch "$partial/.complete"
rm -rf "$libs"
mv "$partial" "$libs"
