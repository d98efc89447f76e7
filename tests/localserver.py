"""What the throw-away test servers (`PgCluster`, `MariaDbServer`) share.

The OS account their programs run as when we are root, a free port, probes of /proc, the
tail of a log, and leak protection: servers still alive at exit are destroyed by an atexit
hook, and folders left by a process that died without running it (SIGKILL) carry an owner
file by which the next process finds and reaps them.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

_OWNER_FILE = "owner"


class OsAccount:
    """The OS account a server's programs run as: ``name`` when we are root, else ourselves."""

    def __init__(self, name: str, package: str, program: str, error: type[Exception]) -> None:
        """``package`` creates the account; ``program`` is what refuses to run as root."""
        self.name = name
        self._package = package
        self._program = program
        self._error = error

    def user(self) -> pwd.struct_passwd:
        """The account's passwd entry."""
        if os.geteuid() != 0:
            return pwd.getpwuid(os.geteuid())
        try:
            return pwd.getpwnam(self.name)
        except KeyError:
            raise self._error(
                f"Running as root, but there is no `{self.name}` OS user to run "
                f"{self._program} as.\n"
                f"  Fix: install the Debian {self._package} package (it creates the user), "
                "or run the tests as a normal user."
            ) from None

    def command_prefix(self) -> list[str]:
        """What runs a command as the account (nothing when we are not root)."""
        if os.geteuid() != 0:
            return []
        runuser = shutil.which("runuser") or "/usr/sbin/runuser"
        return [runuser, "-u", self.name, "--"]

    def write_file(self, path: Path, text: str, mode: int = 0o600) -> None:
        """Write a file the server may read (and nobody else)."""
        path.write_text(text)
        path.chmod(mode)
        owner = self.user()
        os.chown(path, owner.pw_uid, owner.pw_gid)

    def new_folder(self, prefix: str) -> Path:
        """A new private folder under /tmp for one server, with this process as its owner."""
        folder = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
        try:
            owner = self.user()
            os.chown(folder, owner.pw_uid, owner.pw_gid)
            folder.chmod(0o700)
            self.write_file(folder / _OWNER_FILE, f"{os.getpid()} {start_time(os.getpid())}\n")
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return folder


def server_env(*prefixes: str) -> dict[str, str]:
    """This process's environment without the variables starting with ``prefixes`` (a
    developer's PGPORT or MYSQL_HOME must not steer the server programs elsewhere)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(prefixes)}
    env["LC_ALL"] = "C"
    return env


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody is bound to right now.

    Another process may still take it before the server binds; the servers notice that in
    their log and start again on a new one.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(
    condition: Callable[[], bool], timeout: float, what: str, error: type[Exception]
) -> None:
    """Poll ``condition`` until it holds; raise ``error`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise error(f"Timed out after {timeout:g}s waiting for {what}.")
        time.sleep(0.02)


# -- /proc -----------------------------------------------------------------------------------


def proc_stat(pid: int | str) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name, or None if it is gone."""
    try:
        # The command name in parentheses may itself contain spaces and parentheses.
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _live(fields: list[str] | None) -> bool:
    return fields is not None and fields[0] not in ("Z", "X")


def process_alive(pid: int) -> bool:
    """Whether ``pid`` runs; a zombie counts as dead.

    The init process of some containers never reaps orphans, so a killed server can stay a
    zombie for good; it holds no memory, sockets or files.
    """
    return _live(proc_stat(pid))


def _processes() -> Iterator[tuple[int, list[str]]]:
    for stat_path in Path("/proc").glob("[0-9]*/stat"):
        fields = proc_stat(stat_path.parent.name)
        if _live(fields):
            assert fields is not None
            yield int(stat_path.parent.name), fields


def child_pids(pid: int) -> list[int]:
    """The live children of ``pid``."""
    return [child for child, fields in _processes() if int(fields[1]) == pid]


def group_alive(pgid: int) -> bool:
    """Whether any process of process group ``pgid`` still runs."""
    return any(int(fields[2]) == pgid for _, fields in _processes())


def start_time(pid: int) -> str:
    """Field 22 of /proc/<pid>/stat: with the pid it identifies a process across pid reuse."""
    fields = proc_stat(pid)
    return fields[19] if fields is not None and len(fields) > 19 else "?"


def cmdline_has(pid: int, arg: str) -> bool:
    """Whether ``arg`` is, exactly, one of the arguments of process ``pid``."""
    try:
        return arg in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return False


def pids_with_arg(arg: str) -> list[int]:
    """The live processes that have ``arg``, exactly, on their command line."""
    return [pid for pid, _ in _processes() if cmdline_has(pid, arg)]


# -- logs ------------------------------------------------------------------------------------


def log_text(path: Path, offset: int = 0) -> str:
    """A server log from ``offset`` on (empty before the server wrote one)."""
    try:
        with path.open("rb") as log:
            log.seek(offset)
            return log.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return ""


def log_tail(path: Path, lines: int = 40) -> str:
    """The last ``lines`` lines of a server log, for error messages."""
    size = path.stat().st_size if path.exists() else 0
    return "\n".join(log_text(path, max(0, size - 16384)).splitlines()[-lines:])


# -- servers run as one child process --------------------------------------------------------


class ChildProcessServer:
    """What a server run as one child process of ours (``_process``) in its own ``folder``
    shares: telling whether it runs, and being destroyed.

    Every instance is in its class's ``live`` set from creation until destroyed (see
    :func:`destroy_at_exit`); subclasses give ``kill``.
    """

    live: ClassVar[set[Any]]

    def __init__(self, folder: Path) -> None:
        """Describe a server in ``folder``; nothing runs yet."""
        self.folder = folder
        self._process: subprocess.Popen[bytes] | None = None
        self._destroyed = False

    def kill(self, timeout: float = 30) -> None:
        """Crash the server (SIGKILL) and wait until it is gone."""
        raise NotImplementedError

    @property
    def is_running(self) -> bool:
        """Whether the server's process is alive (it may still be starting up)."""
        return self._process is not None and self._process.poll() is None

    def destroy(self) -> None:
        """Kill the server and delete its folder; calling it again does nothing."""
        if self._destroyed:
            return
        try:
            self.kill()
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)
            self._destroyed = True
            type(self).live.discard(self)


# -- leak protection -------------------------------------------------------------------------


def destroy_at_exit(live: set[Any]) -> None:
    """Destroy the servers still in ``live`` when this process exits normally."""

    def destroy_all() -> None:
        for server in list(live):
            with contextlib.suppress(Exception):
                server.destroy()

    atexit.register(destroy_all)


def kill_processes_with_arg(arg: str, what: str, error: type[Exception]) -> None:
    """SIGKILL every live process with ``arg`` on its command line and wait (10 s at most)
    until they are gone; a wait that times out is let go (the caller removes their folder
    anyway)."""
    pids = pids_with_arg(arg)
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(error):
        wait_until(lambda: not any(process_alive(pid) for pid in pids), 10, what, error)


def reap_orphans(prefix: str, kill: Callable[[Path], None]) -> None:
    """Delete the folders under /tmp named ``prefix…`` whose owner process died, after
    ``kill(folder)`` stopped the server processes of each.

    Folders without an owner file (being made right now, or not ours) and folders of a live
    owner are left alone.
    """
    for folder in Path("/tmp").glob(f"{prefix}*"):
        try:
            owner_pid, owner_start = (folder / _OWNER_FILE).read_text().split()
        except (OSError, ValueError):
            continue
        if process_alive(int(owner_pid)) and start_time(int(owner_pid)) == owner_start:
            continue
        kill(folder)
        shutil.rmtree(folder, ignore_errors=True)
