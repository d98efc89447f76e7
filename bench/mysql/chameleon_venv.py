"""pg_chameleon's own virtualenv (``bench/.chameleon-venv``), made on first use from PyPI.

pg_chameleon pins nothing and its code predates today's releases of its dependencies, so the
benchmark installs exact versions (see ``PINS`` and bench/README.md for why each one).

pg_chameleon refuses to run as root. When the benchmark is root it runs pg_chameleon as
``CHAMELEON_USER``, so the venv must be built from an interpreter that user can read: a
pyenv or uv Python under /root is not, Debian's /usr/bin/python3 is.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.db import BenchError

PG_CHAMELEON_VERSION = "2.0.21"

PINS: tuple[str, ...] = (
    f"pg_chameleon=={PG_CHAMELEON_VERSION}",
    # 0.46 is the last release that names a row event's columns from information_schema, as
    # pg_chameleon 2.0.21 expects. From 1.0 the names come only from the binlog (they need
    # binlog_row_metadata = FULL, else every column is UNKNOWN_COLn and the replay crashes,
    # pg_chameleon issue #196); with FULL, 1.0.17 works too but took ~20 % longer here.
    "mysql-replication==0.46",
    "PyMySQL==1.2.4",
    "psycopg2-binary==2.9.13",
    # pg_chameleon imports pkg_resources, which setuptools 81 removes.
    "setuptools<81",
)

CHAMELEON_USER = "nobody"
"""The account pg_chameleon runs as when the benchmark is root (it exits 10 as root)."""

DEFAULT_VENV = Path(__file__).resolve().parent.parent / ".chameleon-venv"
_MARKER = ".bench-pins"
_INSTALL_TIMEOUT = 1200


@dataclass(frozen=True)
class RunAs:
    """Who runs pg_chameleon: the current user, or ``CHAMELEON_USER`` when we are root."""

    uid: int | None = None
    gid: int | None = None
    name: str = ""

    @classmethod
    def for_chameleon(cls) -> RunAs:
        """``CHAMELEON_USER`` when this process is root, else the current user (no switch)."""
        if os.geteuid() != 0:
            return cls(name=pwd.getpwuid(os.geteuid()).pw_name)
        try:
            account = pwd.getpwnam(CHAMELEON_USER)
        except KeyError:
            raise BenchError(
                f"running as root, but there is no {CHAMELEON_USER!r} account to run "
                "pg_chameleon as (it refuses to run as root)"
            ) from None
        return cls(uid=account.pw_uid, gid=account.pw_gid, name=account.pw_name)

    def popen_options(self) -> dict[str, Any]:
        """Keyword arguments for ``subprocess.Popen``/``run`` that switch to this user."""
        if self.uid is None:
            return {}
        return {"user": self.uid, "group": self.gid, "extra_groups": []}

    def chown(self, path: Path) -> None:
        """Give ``path`` to this user (when switching users; no-op otherwise)."""
        if self.uid is not None and self.gid is not None:
            os.chown(path, self.uid, self.gid)


def _base_python(run_as: RunAs) -> str:
    """The interpreter to build the venv from: one that ``run_as`` can execute."""
    if run_as.uid is not None and Path("/usr/bin/python3").exists():
        return "/usr/bin/python3"
    return sys.executable


def _run(command: list[str], what: str, **options: Any) -> None:
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=_INSTALL_TIMEOUT,
        stdin=subprocess.DEVNULL,
        check=False,
        **options,
    )
    if result.returncode != 0:
        raise BenchError(f"{what} failed ({result.returncode}):\n{result.stdout}{result.stderr}")


def ensure_chameleon_venv(venv: Path, run_as: RunAs, say: Callable[[str], None] = print) -> Path:
    """Make sure ``venv`` holds exactly ``PINS``; return its ``chameleon`` script.

    The venv is rebuilt when its pins differ from ``PINS`` (or it is missing or broken), then
    checked by importing pg_chameleon as the user that will run it.
    """
    marker = venv / _MARKER
    wanted = "\n".join(PINS) + "\n"
    chameleon = venv / "bin" / "chameleon"
    if not (marker.exists() and marker.read_text() == wanted and chameleon.exists()):
        say(f"installing pg_chameleon {PG_CHAMELEON_VERSION} into {venv} (first run only)")
        shutil.rmtree(venv, ignore_errors=True)
        _run([_base_python(run_as), "-m", "venv", str(venv)], f"creating the venv {venv}")
        pip = [str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check"]
        _run([*pip, "install", "--quiet", *PINS], "pip install " + " ".join(PINS))
        marker.write_text(wanted)
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "LC_ALL": "C.UTF-8", "HOME": "/tmp"}
    try:
        _run(
            [str(venv / "bin" / "python"), "-c", "import pg_chameleon, pymysqlreplication"],
            f"importing pg_chameleon from {venv} as {run_as.name!r}",
            env=env,
            cwd="/",
            **run_as.popen_options(),
        )
    except BenchError as exc:
        raise BenchError(
            f"{exc}\n    Fix: {run_as.name!r} must be able to read {venv} and the Python it was"
            " built from; pass --chameleon-venv with a path outside /root, or remove the"
            " folder to rebuild it"
        ) from None
    return chameleon
