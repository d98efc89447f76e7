"""Throw-away Apache Kafka brokers for tests and benchmarks.

A `KafkaBroker` is a real single-node Kafka in KRaft mode (broker and controller in one JVM),
run on the machine's Java 17 from Kafka's jars on Maven Central (`tests/kafka/pom.xml`,
fetched into a cache folder by `scripts/ensure-kafka.sh`), in its own folder under /tmp,
listening on 127.0.0.1 on free ports::

    broker = KafkaBroker.create("events")
    broker.create_topic("shop.public.orders", partitions=3)
    producer = confluent_kafka.Producer({"bootstrap.servers": broker.bootstrap_servers})
    ...
    broker.destroy()

Brokers still alive when the process exits are destroyed by an atexit hook; folders left
behind by a process that died without running it (SIGKILL) are reaped by the next
`KafkaBroker.create`.
"""

from __future__ import annotations

import base64
import contextlib
import os
import pwd
import re
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Mapping
from pathlib import Path

from tests.localserver import (
    ChildProcessServer,
    OsAccount,
    destroy_at_exit,
    free_port,
    kill_processes_with_arg,
    log_tail,
    log_text,
    reap_orphans,
    server_env,
    wait_until,
)

__all__ = [
    "KafkaBroker",
    "KafkaError",
    "PropertyValue",
    "cache_root",
    "find_java",
    "kafka_libs",
    "kafka_version",
    "pom_property",
    "properties_text",
]

PropertyValue = str | int | bool

REPO_ROOT = Path(__file__).resolve().parent.parent
_POM = REPO_ROOT / "tests" / "kafka" / "pom.xml"
_FOLDER_PREFIX = "replicator-kafka-"
_START_ATTEMPTS = 3
_START_TIMEOUT = 90.0
_STARTED = "Kafka Server started"
_HEAP = "512m"  # Kafka's own default of 1 GB is more than a test broker needs

# A single node: every internal topic has one replica, and a new consumer group is served at
# once instead of after Kafka's 3-second wait for more members.
_DEFAULT_PROPERTIES: dict[str, PropertyValue] = {
    "process.roles": "broker,controller",
    "node.id": 1,
    "controller.listener.names": "CONTROLLER",
    "inter.broker.listener.name": "PLAINTEXT",
    "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
    "offsets.topic.replication.factor": 1,
    "offsets.topic.num.partitions": 4,
    "transaction.state.log.replication.factor": 1,
    "transaction.state.log.min.isr": 1,
    "transaction.state.log.num.partitions": 4,
    "share.coordinator.state.topic.replication.factor": 1,
    "share.coordinator.state.topic.min.isr": 1,
    "group.initial.rebalance.delay.ms": 0,
    "num.partitions": 1,
    "auto.create.topics.enable": False,
}

_LOG4J_CONFIG = """\
Configuration:
  status: warn
  Appenders:
    Console:
      name: STDOUT
      PatternLayout:
        pattern: "[%d] %p %m (%c)%n"
  Loggers:
    Root:
      level: INFO
      AppenderRef:
        - ref: STDOUT
"""


class KafkaError(RuntimeError):
    """A test broker could not be created, started or stopped; the message says why."""


_ACCOUNT = OsAccount(pwd.getpwuid(os.geteuid()).pw_name, "", "kafka", KafkaError)


def pom_property(pom: Path, name: str) -> str:
    """A ``<properties>`` value of a pom.xml (the versions its dependencies name)."""
    match = re.search(rf"<{re.escape(name)}>([^<]+)</{re.escape(name)}>", pom.read_text())
    if match is None:
        raise KafkaError(f"{pom} names no <{name}>.")
    return match.group(1)


def kafka_version() -> str:
    """The Kafka version `tests/kafka/pom.xml` names."""
    return pom_property(_POM, "kafka.version")


def cache_root() -> Path:
    """Where fetched jars are kept (as `scripts/ensure-kafka.sh` puts them)."""
    return Path(
        os.environ.get("REPLICATOR_KAFKA_CACHE")
        or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "replicator"
    )


def kafka_libs() -> Path:
    """The folder of Kafka's jars (as `scripts/ensure-kafka.sh` fills it)."""
    libs = cache_root() / f"kafka-{kafka_version()}"
    if not (libs / ".complete").exists():
        raise KafkaError(
            f"Kafka's jars are not in {libs}.\n"
            "  Fix: run `make servers` (or scripts/ensure-kafka.sh), which fetches them from "
            "Maven Central."
        )
    return libs


def find_java() -> str:
    """The `java` of JAVA_HOME, else the one on PATH."""
    home = os.environ.get("JAVA_HOME")
    found = str(Path(home) / "bin" / "java") if home else shutil.which("java")
    if not found or not Path(found).exists():
        raise KafkaError(
            "No `java` found (JAVA_HOME or PATH).\n"
            "  Fix: apt-get install -y openjdk-17-jre-headless"
        )
    return found


def properties_text(settings: Mapping[str, PropertyValue]) -> str:
    """A Java ``.properties`` file of ``settings`` (booleans as ``true``/``false``)."""
    lines = []
    for name, value in settings.items():
        text = ("true" if value else "false") if isinstance(value, bool) else str(value)
        if "\n" in text or "\n" in name:
            raise ValueError(f"a property cannot span lines: {name}={text!r}")
        # java.util.Properties reads a backslash as an escape.
        lines.append(f"{name}={text.replace(chr(92), chr(92) * 2)}\n")
    return "".join(lines)


class KafkaBroker(ChildProcessServer):
    """A throw-away single-node Kafka (KRaft) in its own folder under /tmp.

    Make one with `KafkaBroker.create`; it is running when returned. Its folder holds
    `data/` (the log directories), `server.properties`, and `kafka.log` (everything the
    broker printed).
    """

    host = "127.0.0.1"

    def __init__(self, name: str, folder: Path, properties: dict[str, PropertyValue]) -> None:
        """Describe a broker folder; use `KafkaBroker.create` to make one."""
        super().__init__(folder)
        self.name = name
        self._properties = properties
        self.port = free_port()
        self.controller_port = free_port()

    def __repr__(self) -> str:
        return f"KafkaBroker(name={self.name!r}, port={self.port}, folder={str(self.folder)!r})"

    @property
    def bootstrap_servers(self) -> str:
        """What a client's `bootstrap.servers` takes."""
        return f"{self.host}:{self.port}"

    @property
    def datadir(self) -> Path:
        """The broker's log directory (`log.dirs`)."""
        return self.folder / "data"

    @property
    def logfile(self) -> Path:
        """Everything the broker printed, appended to on every start."""
        return self.folder / "kafka.log"

    @property
    def _config(self) -> Path:
        return self.folder / "server.properties"

    # -- lifecycle -------------------------------------------------------------------------

    @classmethod
    def create(
        cls, name: str, /, properties: Mapping[str, PropertyValue] | None = None
    ) -> KafkaBroker:
        """Make, format and start a new broker; `properties` override the defaults."""
        reap_orphans(_FOLDER_PREFIX, _kill_orphan)
        libs = kafka_libs()
        java = find_java()
        safe_name = re.sub(r"[^A-Za-z0-9_]", "_", name)[:20]
        folder = _ACCOUNT.new_folder(f"{_FOLDER_PREFIX}{safe_name}-")
        broker = cls(name, folder, {**_DEFAULT_PROPERTIES, **(properties or {})})
        cls.live.add(broker)
        try:
            (folder / "log4j2.yaml").write_text(_LOG4J_CONFIG)
            broker.logfile.write_text("")
            broker._write_config()
            broker._format(java, libs)
            broker._start(_START_TIMEOUT, pick_new_ports=True)
        except BaseException:
            broker.destroy()
            raise
        return broker

    def start(self, timeout: float = _START_TIMEOUT) -> None:
        """Start the broker on its ports and wait until it serves clients."""
        self._start(timeout, pick_new_ports=False)

    def stop(self, timeout: float = 60) -> None:
        """Shut the broker down cleanly (SIGTERM) and wait; a stopped broker is left alone."""
        process = self._process
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise KafkaError(
                f"{self} did not shut down within {timeout:g}s.\n"
                f"  Fix: call kill() to crash it instead.\n"
                f"Last lines of {self.logfile}:\n{self.log_tail()}"
            ) from None

    def restart(self, timeout: float = 60) -> None:
        """Shut the broker down cleanly and start it again on the same ports."""
        self.stop(timeout)
        self.start(timeout)

    def kill(self, timeout: float = 30) -> None:
        """Crash the broker: SIGKILL its JVM. `start()` afterwards recovers its logs."""
        process = self._process
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise KafkaError(f"{self} did not die within {timeout:g}s of SIGKILL.") from None

    def log_tail(self, lines: int = 40) -> str:
        """The last `lines` lines the broker printed, for error messages."""
        return log_tail(self.logfile, lines)

    # -- topics ----------------------------------------------------------------------------

    def create_topic(self, topic: str, partitions: int = 1, timeout: float = 30) -> None:
        """Create a topic (one replica) and wait until every partition has a leader."""
        from confluent_kafka.admin import AdminClient
        from confluent_kafka.cimpl import NewTopic

        admin = AdminClient({"bootstrap.servers": self.bootstrap_servers})
        futures = admin.create_topics([NewTopic(topic, partitions, 1)], request_timeout=timeout)
        futures[topic].result(timeout)

        def ready() -> bool:
            described = admin.list_topics(topic, timeout=timeout).topics.get(topic)
            return (
                described is not None
                and described.error is None
                and len(described.partitions) == partitions
                and all(p.leader >= 0 for p in described.partitions.values())
            )

        wait_until(ready, timeout, f"the partitions of {topic} to have a leader", KafkaError)

    def topics(self, timeout: float = 10) -> list[str]:
        """The topics that exist, internal ones (`__…`) left out."""
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({"bootstrap.servers": self.bootstrap_servers})
        names = admin.list_topics(timeout=timeout).topics
        return sorted(name for name in names if not name.startswith("__"))

    # -- internals -------------------------------------------------------------------------

    def _write_config(self) -> None:
        listeners = (
            f"PLAINTEXT://{self.host}:{self.port},CONTROLLER://{self.host}:{self.controller_port}"
        )
        properties = {
            **self._properties,
            "listeners": listeners,
            "advertised.listeners": listeners,
            "controller.quorum.bootstrap.servers": f"{self.host}:{self.controller_port}",
            "log.dirs": str(self.datadir),
        }
        self._config.write_text(properties_text(properties))

    def _java_command(self, java: str, libs: Path, main: str, *args: str) -> list[str]:
        return [
            java,
            f"-Xmx{_HEAP}",
            f"-Dlog4j2.configurationFile={self.folder / 'log4j2.yaml'}",
            "-cp",
            f"{libs}/*",
            main,
            *args,
        ]

    def _format(self, java: str, libs: Path) -> None:
        # A KRaft node's storage is formatted once with its cluster id; --standalone makes
        # this node the whole controller quorum.
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        command = self._java_command(
            java, libs, "kafka.tools.StorageTool", "format", "--standalone",
            "-t", cluster_id, "-c", str(self._config),
        )  # fmt: skip
        result = subprocess.run(
            command,
            cwd=self.folder,
            env=server_env("KAFKA"),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if result.returncode != 0:
            raise KafkaError(
                f"formatting the storage of {self} failed (exit {result.returncode}):\n"
                f"{result.stdout[-3000:]}{result.stderr[-3000:]}"
            )

    def _start(self, timeout: float, pick_new_ports: bool) -> None:
        if self._destroyed:
            raise KafkaError(f"{self} was destroyed.")
        if self.is_running:
            return
        command = self._java_command(find_java(), kafka_libs(), "kafka.Kafka", str(self._config))
        for attempt in range(1, _START_ATTEMPTS + 1):
            offset = self.logfile.stat().st_size
            with self.logfile.open("ab") as log:
                self._process = subprocess.Popen(
                    command,
                    cwd=self.folder,
                    # KAFKA_OPTS, KAFKA_HEAP_OPTS, ... from the shell must not change it.
                    env=server_env("KAFKA"),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    # Out of the terminal's process group: Ctrl-C stops pytest, which then
                    # tears the brokers down, rather than the brokers under a running test.
                    start_new_session=True,
                )
            if self._wait_until_started(offset, timeout):
                return
            port_taken = "Address already in use" in log_text(self.logfile, offset)
            if port_taken and pick_new_ports and attempt < _START_ATTEMPTS:
                self.port = free_port()
                self.controller_port = free_port()
                self._write_config()
                continue
            raise KafkaError(
                f"{self} did not start (exit {self._process.returncode}).\n"
                f"Last lines of {self.logfile}:\n{self.log_tail()}"
            )

    def _wait_until_started(self, offset: int, timeout: float) -> bool:
        """Wait for the broker's "started" line; False if the JVM exited instead."""
        assert self._process is not None
        deadline = time.monotonic() + timeout
        while _STARTED not in log_text(self.logfile, offset):
            if self._process.poll() is not None:
                return False
            if time.monotonic() > deadline:
                self.kill()
                raise KafkaError(
                    f"{self} did not start within {timeout:g}s (killed it).\n"
                    f"Last lines of {self.logfile}:\n{self.log_tail()}"
                )
            time.sleep(0.1)
        return True


# -- leak protection -----------------------------------------------------------------------

KafkaBroker.live = set()
destroy_at_exit(KafkaBroker.live)


def _kill_orphan(folder: Path) -> None:
    kill_processes_with_arg(
        str(folder / "server.properties"), f"the processes of {folder} to die", KafkaError
    )
