#!/bin/sh
# Do the fault tests catch a broken commit protocol? Copy the working tree (HEAD plus
# uncommitted changes) to a temporary folder, apply tests/faults/broken-ack-before-commit.patch
# there (the engine acknowledges the source before committing), and run
# tests/faults/test_failpoints.py against that build with the project's venv. Succeeds only if
# the tests FAIL, and says which ones caught it. Nothing is installed: the copy's src/ comes
# first on PYTHONPATH, for pytest and for the `replicator run` processes the tests spawn.
#
# First a control run of the same tests on the unpatched copy, which must pass (skip it with
# --no-control): a build broken for another reason would otherwise "catch" the patch.
#
# Usage: scripts/faults-selftest.sh [--no-control] [PYTEST ARGS...]   (make faults-selftest)
set -eu

control=yes
if [ "${1:-}" = "--no-control" ]; then
    control=no
    shift
fi

root=$(cd "$(dirname "$0")/.." && pwd)
python="$root/.venv/bin/python"
patch="tests/faults/broken-ack-before-commit.patch"
tests="tests/faults/test_failpoints.py"

[ -x "$python" ] || { echo "faults-selftest: no venv at $root/.venv (run make install)" >&2; exit 2; }

work=$(mktemp -d "${TMPDIR:-/tmp}/replicator-faults-selftest.XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM

# Tracked and untracked (not ignored) files as they are in the working tree; a tracked file
# deleted in the working tree is simply missing from the copy.
(cd "$root" && git ls-files -z --cached --others --exclude-standard) |
    (cd "$root" && tar --null --files-from=- --ignore-failed-read -cf - 2>/dev/null) |
    tar -xf - -C "$work"

if ! (cd "$work" && git apply --verbose "$patch"); then
    echo "faults-selftest: $patch no longer applies to src/replicator/engine/pipeline.py;" >&2
    echo "  re-make it against the current Pipeline._flush (see the patch's header)" >&2
    exit 2
fi
grep -q "BROKEN ON PURPOSE" "$work/src/replicator/engine/pipeline.py"

export PYTHONPATH="$work/src${PYTHONPATH:+:$PYTHONPATH}"
where=$("$python" -c 'import replicator; print(replicator.__file__)')
case "$where" in
    "$work"/*) ;;
    *) echo "faults-selftest: the broken build is not the one imported ($where)" >&2; exit 2 ;;
esac

run_tests() {  # $1: log file; the rest: pytest arguments
    log=$1
    shift
    (cd "$work" && "$python" -m pytest "$tests" -q -rfE --tb=line -p no:cacheprovider "$@") \
        >"$log" 2>&1
}

# The control: unpatched, the same tests must pass, or a failure below proves nothing.
if [ "$control" = yes ]; then
    echo "faults-selftest: control run of $tests on the unpatched copy"
    (cd "$work" && git apply --reverse "$patch")
    if ! run_tests "$work/control.log" "$@"; then
        tail -n 30 "$work/control.log"
        echo "faults-selftest: the tests fail without the patch too: fix that first" >&2
        exit 2
    fi
    tail -n 1 "$work/control.log"
    (cd "$work" && git apply "$patch")
fi

echo "faults-selftest: running $tests against the broken build in $work"
status=0
run_tests "$work/pytest.log" "$@" || status=$?
case "$status" in
    0)
        tail -n 5 "$work/pytest.log"
        echo "faults-selftest: FAILED: every fault test passed against an engine that" \
            "acknowledges before it commits" >&2
        exit 1
        ;;
    1)
        tail -n 1 "$work/pytest.log"
        echo "faults-selftest: OK: the broken build was caught by:"
        grep -E '^(FAILED|ERROR) ' "$work/pytest.log" | sed 's/^/  /' | cut -c1-300
        echo "with:"
        grep -E '^/.*: [A-Za-z]*Error' "$work/pytest.log" | sed "s|^$work/||; s/^/  /" | cut -c1-300
        exit 0
        ;;
    *)
        tail -n 30 "$work/pytest.log"
        echo "faults-selftest: pytest could not run the tests (exit $status)" >&2
        exit 2
        ;;
esac
