"""Configuration: YAML with ``${ENV}`` interpolation, validated by pydantic.

Every problem is reported at once, each with its place in the file (``pipelines[0].sink.dsn``,
line 12) and what was expected. Values are never echoed back, because they may be secrets.
"""

from __future__ import annotations

import os
import re
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import parse_qsl, unquote, urlsplit

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import core_schema

from replicator.errors import ConfigError
from replicator.observability.redaction import redact, register_secret

_ENV_REF = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_PIPELINE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_TABLE_PATTERN = re.compile(r"^[^.\s]+\.[^.\s]+$")
# PostgreSQL identifiers hold 63 bytes; "replicator_" takes 11 of them.
MAX_PIPELINE_NAME = 52
# Derived MySQL server ids fall in [1e9, 2e9): clear of the small ids servers usually get.
_DERIVED_SERVER_IDS = 1_000_000_000


class _Secret:
    """A connection string whose password never appears in ``str``, ``repr`` or errors."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value
        for secret in self._passwords(value):
            register_secret(secret)

    def secret(self) -> str:
        """The full connection string, password included: only for connecting."""
        return self._value

    def __str__(self) -> str:
        return redact(self._value)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and self._value == other._value

    def __hash__(self) -> int:
        return hash(self._value)

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: type[Any], handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(
            cls._validate,
            core_schema.str_schema(strict=True, min_length=1),
            serialization=core_schema.plain_serializer_function_ser_schema(lambda v: str(v)),
        )

    @classmethod
    def _validate(cls, value: str) -> _Secret:
        raise NotImplementedError

    @staticmethod
    def _passwords(value: str) -> Iterator[str]:
        raise NotImplementedError


class Dsn(_Secret):
    """A libpq connection string (URI or ``key=value`` pairs)."""

    __slots__ = ()

    @classmethod
    def _validate(cls, value: str) -> Dsn:
        from psycopg.conninfo import conninfo_to_dict

        dsn = cls(value)
        try:
            conninfo_to_dict(value)
        except Exception:
            raise ValueError(
                "not a valid connection string; use a URI like postgresql://USER@HOST:5432/DBNAME "
                "or key=value pairs like 'host=HOST dbname=DBNAME user=USER'"
            ) from None
        return dsn

    @staticmethod
    def _passwords(value: str) -> Iterator[str]:
        try:
            from psycopg.conninfo import conninfo_to_dict

            password = conninfo_to_dict(value).get("password")
        except Exception:
            return
        if password:
            yield str(password)


_MYSQL_SCHEMES = ("mysql", "mariadb")
# URI query parameters passed on to PyMySQL, with their types.
_MYSQL_PARAMS: dict[str, type] = {
    "ssl_ca": str,
    "ssl_cert": str,
    "ssl_key": str,
    "ssl_verify_cert": bool,
    "ssl_verify_identity": bool,
    "ssl_disabled": bool,
    "unix_socket": str,
    "connect_timeout": float,
}


class MysqlDsn(_Secret):
    """A MySQL or MariaDB URI: ``mysql://USER:PASSWORD@HOST:3306/`` (``?ssl_ca=…`` etc.)."""

    __slots__ = ()

    @classmethod
    def _validate(cls, value: str) -> MysqlDsn:
        dsn = cls(value)
        try:
            dsn.connect_args()
        except ValueError as exc:
            raise ValueError(
                f"not a valid MySQL connection URI ({exc}); use a URI like "
                "mysql://USER@HOST:3306/ (a password goes after USER and a colon)"
            ) from None
        return dsn

    @staticmethod
    def _passwords(value: str) -> Iterator[str]:
        try:
            password = urlsplit(value).password
        except ValueError:
            return
        if password:
            yield unquote(password)

    def connect_args(self) -> dict[str, Any]:
        """Keyword arguments for ``pymysql.connect`` (password included)."""
        parts = urlsplit(self._value)
        if parts.scheme not in _MYSQL_SCHEMES:
            raise ValueError(f"the scheme must be mysql:// or mariadb://, not {parts.scheme!r}")
        args: dict[str, Any] = {
            "host": unquote(parts.hostname or "127.0.0.1"),
            "port": parts.port or 3306,  # raises ValueError for a bad port
            "user": unquote(parts.username or ""),
            "password": unquote(parts.password or ""),
        }
        if not args["user"]:
            raise ValueError("the URI names no user")
        database = unquote(parts.path.lstrip("/"))
        if database:
            args["database"] = database
        for name, raw in parse_qsl(parts.query, keep_blank_values=True, strict_parsing=False):
            kind = _MYSQL_PARAMS.get(name)
            if kind is None:
                known = ", ".join(sorted(_MYSQL_PARAMS))
                raise ValueError(f"unknown parameter {name!r} (known: {known})")
            if kind is bool:
                if raw.lower() not in ("true", "false", "1", "0"):
                    raise ValueError(f"{name} takes true or false")
                args[name] = raw.lower() in ("true", "1")
            elif kind is float:
                args[name] = float(raw)
            else:
                args[name] = raw
        return args


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, hide_input_in_errors=True, frozen=True)


class _SourceConfig(_Model):
    """What every source shares: the tables it captures and how existing rows are copied."""

    tables: Annotated[list[str], Field(min_length=1)]
    snapshot: Literal["initial", "never"] = "initial"
    # None: half this machine's cores, at most 4 (measured on 2 cores with both servers on
    # the same machine, one worker copied pgbench scale 10 fastest: the servers need the CPU).
    snapshot_workers: Annotated[int, Field(ge=1, le=64)] | None = None
    snapshot_chunk_rows: Annotated[int, Field(ge=1000)] = 250_000
    discover_interval_s: Annotated[float, Field(ge=0, le=86400)] = 10.0

    @field_validator("tables")
    @classmethod
    def _check_patterns(cls, patterns: list[str]) -> list[str]:
        for pattern in patterns:
            if not _TABLE_PATTERN.match(pattern):
                raise ValueError(f"table pattern {pattern!r} must be {cls._qualified}")
        return patterns

    _qualified: ClassVar[str] = "qualified, like 'db.*' or 'db.table'"

    @property
    def copy_workers(self) -> int:
        """How many tables or chunks are copied at once."""
        if self.snapshot_workers is not None:
            return self.snapshot_workers
        return min(4, max(1, (os.cpu_count() or 2) // 2))


class PostgresSourceConfig(_SourceConfig):
    """A PostgreSQL database read through logical replication (pgoutput)."""

    type: Literal["postgres"]
    dsn: Dsn
    slot: str | None = None
    publication: str | None = None
    status_interval_s: Annotated[float, Field(gt=0, le=3600)] = 10.0
    # A replication connection silent this long, even to a keepalive request sent halfway,
    # is stalled (a dead network path sends no reset): it is dropped and reconnected.
    stall_timeout_s: Annotated[float, Field(ge=2, le=86400)] = 60.0

    _qualified: ClassVar[str] = "schema-qualified, like 'public.*' or 'sales.orders'"

    @field_validator("slot", "publication")
    @classmethod
    def _check_identifier(cls, name: str | None) -> str | None:
        if name is not None and not re.fullmatch(r"[a-z0-9_]{1,63}", name):
            raise ValueError("must be 1-63 characters of a-z, 0-9 and _")
        return name


class MysqlSourceConfig(_SourceConfig):
    """A MySQL or MariaDB server read through its binary log (ROW format)."""

    type: Literal["mysql"]
    dsn: MysqlDsn
    # The replica id the binlog reader announces; it must differ from the server's and from
    # every other replica's. None: derived from the pipeline name (see PipelineConfig).
    server_id: Annotated[int, Field(ge=1, le=4_294_967_295)] | None = None
    # Resume by GTID set (survives a failover to another server of the same topology) or by
    # binlog file and offset; auto uses GTIDs where the server has them.
    position: Literal["auto", "gtid", "file"] = "auto"
    # MySQL's zero dates ('0000-00-00', or a zero month or day) have no PostgreSQL value.
    zero_dates: Literal["null", "error"] = "null"
    tinyint1_as_boolean: bool = True
    reconnect_timeout_s: Annotated[float, Field(ge=0, le=86400)] = 60.0

    _qualified: ClassVar[str] = "database-qualified, like 'shop.*' or 'crm.customers'"

    @field_validator("zero_dates", mode="before")
    @classmethod
    def _yaml_null(cls, value: Any) -> Any:
        # `zero_dates: null` reads naturally in YAML, where null is not a string.
        return "null" if value is None else value


KafkaSettings = dict[str, str | int | float | bool]
"""librdkafka settings passed through as they are (``kafka: {linger.ms: 5, ...}``)."""

# Settings Replicator owns: letting a user override them would break its guarantees.
_OWNED_CONSUMER_SETTINGS = frozenset(
    {"bootstrap.servers", "group.id", "enable.auto.commit", "enable.auto.offset.store"}
)
_OWNED_PRODUCER_SETTINGS = frozenset(
    {"bootstrap.servers", "enable.idempotence", "acks", "transactional.id"}
)
_SECRET_SETTING = re.compile(r"(password|secret|token|jaas|\.key\.pem|^ssl\.key)", re.I)
_TOPIC_NAME = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
_QUALIFIED_TABLE = re.compile(r"^[^.\s]+\.[^.\s]+$")


def _check_kafka_settings(settings: KafkaSettings, owned: frozenset[str]) -> KafkaSettings:
    for name, value in settings.items():
        if name in owned:
            raise ValueError(
                f"{name!r} is set by Replicator itself and cannot be overridden here"
                + (" (use bootstrap_servers)" if name == "bootstrap.servers" else "")
                + (" (use group)" if name == "group.id" else "")
            )
        if _SECRET_SETTING.search(name) and isinstance(value, str) and value:
            register_secret(value)
    return settings


class KafkaSourceConfig(_Model):
    """Debezium change events consumed from Kafka topics by a consumer group (a syncer)."""

    type: Literal["kafka"]
    bootstrap_servers: Annotated[str, Field(min_length=1)]
    # A regular expression when it starts with ^ (librdkafka's rule), else topic names.
    topics: Annotated[str, Field(min_length=1)] | Annotated[list[str], Field(min_length=1)]
    group: Annotated[str, Field(min_length=1, max_length=255)]
    # Topic → "schema.table" where the default (the topic name's last two dot-separated
    # parts) does not fit.
    topic_tables: dict[str, str] = {}
    # A Debezium truncate carries no key: it is applied only when it can be ordered against
    # every partition of its table; otherwise the pipeline fails, unless told to skip it.
    unordered_truncate: Literal["fail", "skip"] = "fail"
    # How the producer wrote decimals, for events without their schema (Debezium's
    # decimal.handling.mode; with schemas each event says so itself).
    decimal_handling: Literal["precise", "string", "double"] = "precise"
    kafka: KafkaSettings = {}
    # Kafka topics hold no "existing rows" to copy: a syncer never snapshots by itself.
    snapshot: Literal["never"] = "never"
    discover_interval_s: Literal[0] = 0

    @field_validator("topics")
    @classmethod
    def _check_topics(cls, topics: str | list[str]) -> str | list[str]:
        if isinstance(topics, str):
            if topics.startswith("^"):
                try:
                    re.compile(topics)
                except re.error as exc:
                    raise ValueError(f"not a valid regular expression: {exc}") from None
                return topics
            topics = [topics]
        for name in topics:
            if not _TOPIC_NAME.match(name):
                raise ValueError(
                    f"{name!r} is not a Kafka topic name (letters, digits, '.', '_', '-'); "
                    "start a regular expression with ^"
                )
        return topics

    @field_validator("topic_tables")
    @classmethod
    def _check_tables(cls, tables: dict[str, str]) -> dict[str, str]:
        for topic, table in tables.items():
            if not _QUALIFIED_TABLE.match(table):
                raise ValueError(
                    f"topic {topic!r} maps to {table!r}; name a schema-qualified table like "
                    "'public.orders'"
                )
        return tables

    @field_validator("kafka")
    @classmethod
    def _check_kafka(cls, settings: KafkaSettings) -> KafkaSettings:
        return _check_kafka_settings(settings, _OWNED_CONSUMER_SETTINGS)

    @property
    def subscription(self) -> list[str]:
        """What ``Consumer.subscribe`` takes: names, or one ``^regex``."""
        return [self.topics] if isinstance(self.topics, str) else list(self.topics)


SourceConfig = Annotated[
    PostgresSourceConfig | MysqlSourceConfig | KafkaSourceConfig, Field(discriminator="type")
]


class PostgresSinkConfig(_Model):
    """A PostgreSQL database kept as an exact copy of the source tables."""

    type: Literal["postgres"]
    dsn: Dsn
    # The staleness guard: per key, the source position the target row reflects, so an older
    # change never overwrites a newer one (deletes included). auto: with a Kafka source,
    # whose events can arrive late or twice; always: with any source (costs a write per key
    # per batch). A pipeline with backfill: true has it off.
    staleness_guard: Literal["auto", "always"] = "auto"


class KafkaSinkConfig(_Model):
    """Kafka topics that receive each change as a Debezium JSON envelope (a watcher)."""

    type: Literal["kafka"]
    bootstrap_servers: Annotated[str, Field(min_length=1)]
    topic_prefix: Annotated[str, Field(min_length=1, max_length=200)]
    # The topic of each table; {prefix}, {schema} and {table} are replaced.
    topic: str = "{prefix}.{schema}.{table}"
    # Topics the sink creates when missing get these; existing topics are left as they are.
    partitions: Annotated[int, Field(ge=1, le=10_000)] = 1
    replication_factor: Annotated[int, Field(ge=-1, le=32)] = -1  # -1: the broker's default
    schemas: bool = True  # write the JsonConverter "schema" part with each key and value
    tombstones: bool = True  # a null-valued message after each delete, for log compaction
    decimal_handling: Literal["precise", "string", "double"] = "precise"
    # How long to wait for Kafka to acknowledge a batch before failing (and retrying).
    ack_timeout_s: Annotated[float, Field(gt=0, le=3600)] = 60.0
    kafka: KafkaSettings = {}

    @field_validator("topic_prefix")
    @classmethod
    def _check_prefix(cls, prefix: str) -> str:
        if not _TOPIC_NAME.match(prefix):
            raise ValueError("a topic prefix is letters, digits, '.', '_' and '-'")
        return prefix

    @field_validator("topic")
    @classmethod
    def _check_template(cls, template: str) -> str:
        try:
            example = template.format(prefix="p", schema="s", table="t")
        except (KeyError, IndexError, ValueError):
            raise ValueError(
                "the topic template may use {prefix}, {schema} and {table} only"
            ) from None
        if not _TOPIC_NAME.match(example.replace("{", "").replace("}", "")):
            raise ValueError("the topic template must give letters, digits, '.', '_' and '-'")
        return template

    @field_validator("kafka")
    @classmethod
    def _check_kafka(cls, settings: KafkaSettings) -> KafkaSettings:
        return _check_kafka_settings(settings, _OWNED_PRODUCER_SETTINGS)

    def topic_for(self, schema: str, table: str) -> str:
        """The topic a table's changes go to."""
        return self.topic.format(prefix=self.topic_prefix, schema=schema, table=table)


SinkConfig = Annotated[PostgresSinkConfig | KafkaSinkConfig, Field(discriminator="type")]


class FileCheckpointConfig(_Model):
    """Checkpoints kept in a local folder (atomic rename + fsync): sinks without a database."""

    type: Literal["file"] = "file"
    # Relative paths are taken from the config file's folder.
    dir: Annotated[str, Field(min_length=1, validate_default=True)] = "replicator-state"

    @field_validator("dir")
    @classmethod
    def _resolve(cls, folder: str, info: ValidationInfo) -> str:
        base = (info.context or {}).get("config_dir")
        path = Path(os.path.expanduser(folder))
        if base is not None and not path.is_absolute():
            path = Path(base) / path
        return str(path)


class BatchConfig(_Model):
    """When the engine flushes: whichever limit is reached first."""

    max_events: Annotated[int, Field(ge=1, le=1_000_000)] = 10_000
    max_bytes: Annotated[int, Field(ge=1024)] = 32 * 1024 * 1024
    max_age_ms: Annotated[int, Field(ge=0, le=600_000)] = 500


class RetryConfig(_Model):
    """How a pipeline rides out transient faults (a server restarting, a connection cut): it
    restarts from its checkpoint after a delay growing exponentially, with jitter."""

    initial_delay_s: Annotated[float, Field(gt=0, le=600)] = 0.5
    max_delay_s: Annotated[float, Field(gt=0, le=3600)] = 30.0
    # 0: keep retrying for as long as it takes (the pipeline shows "retrying" meanwhile).
    give_up_after_s: Annotated[float, Field(ge=0, le=30 * 86400)] = 0.0
    # Consecutive target failures after which the target's circuit opens: pipelines then
    # wait while one probe at a time checks whether the target is back.
    breaker_failures: Annotated[int, Field(ge=1, le=1000)] = 3

    @model_validator(mode="after")
    def _delays_in_order(self) -> RetryConfig:
        if self.max_delay_s < self.initial_delay_s:
            raise ValueError("max_delay_s must not be below initial_delay_s")
        return self


class RangeRule(_Model):
    """Allowed values of a numeric column: at least ``min``, at most ``max``."""

    min: float | int | None = None
    max: float | int | None = None

    @model_validator(mode="after")
    def _bounded(self) -> RangeRule:
        if self.min is None and self.max is None:
            raise ValueError("give min, max or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError("min must not exceed max")
        return self


class ValidationRule(_Model):
    """Checks the new row of every insert and update of the matching tables; a change that
    fails goes to the dead-letter queue with the rule it broke."""

    tables: Annotated[list[str], Field(min_length=1)]
    required: list[str] = []  # columns that must not be NULL
    max_length: dict[str, Annotated[int, Field(ge=0)]] = {}  # characters (bytes for bytea)
    ranges: dict[str, RangeRule] = {}
    patterns: dict[str, str] = {}  # the whole text value must match (Python re syntax)

    @field_validator("patterns")
    @classmethod
    def _compiles(cls, patterns: dict[str, str]) -> dict[str, str]:
        for column, pattern in patterns.items():
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"patterns.{column}: not a regular expression: {exc}") from None
        return patterns

    @model_validator(mode="after")
    def _checks_something(self) -> ValidationRule:
        if not (self.required or self.max_length or self.ranges or self.patterns):
            raise ValueError("a rule needs required, max_length, ranges or patterns")
        return self


class DeadLetterConfig(_Model):
    """Where events the target will not take go, and what happens to their key meanwhile."""

    # table: _replicator.dlq in a PostgreSQL target (the default there), written in the same
    # transaction as the data; jsonl: a file (the default with other sinks); kafka: a topic.
    store: Literal["table", "jsonl", "kafka"] | None = None
    path: str | None = None  # jsonl: default <checkpoint dir>/<pipeline>.dlq.jsonl
    topic: Annotated[str, Field(min_length=1, max_length=249)] | None = None  # kafka
    # kafka: default the pipeline's own brokers (its Kafka sink's or source's)
    bootstrap_servers: Annotated[str, Field(min_length=1)] | None = None
    kafka: KafkaSettings = {}
    # hold_key: later changes to a dead-lettered key wait in the DLQ behind it, so the target
    # never shows a newer version over a missing older one; skip: they are applied.
    policy: Literal["hold_key", "skip"] = "hold_key"
    # Readiness reports a warning (the pipeline still works) at this many open entries.
    warn_at: Annotated[int, Field(ge=1)] = 1


class PipelineConfig(_Model):
    """One source, its transforms and one sink, with one checkpoint."""

    name: str
    source: SourceConfig
    transforms: list[Any] = []
    sink: SinkConfig
    # Where the checkpoint lives when the sink is not PostgreSQL (which keeps it in the
    # target, in the same transaction as the data).
    checkpoint: FileCheckpointConfig | None = None
    batch: BatchConfig = BatchConfig()
    retry: RetryConfig = RetryConfig()
    dead_letter: DeadLetterConfig = DeadLetterConfig()
    validation: list[ValidationRule] = []
    # A deliberate reload of history (e.g. a topic replayed from its start): the staleness
    # guard is off, so older changes are applied over what the target holds.
    backfill: bool = False
    # Dead-lettered changes and faults per minute at which the pipeline reports itself
    # degraded (in readiness, the API and replicator_pipeline_degraded); 0: never.
    degraded_errors_per_minute: Annotated[float, Field(ge=0)] = 0.0
    sync_sequences_interval_s: Annotated[float, Field(ge=0, le=86400)] = 0.0

    @field_validator("name")
    @classmethod
    def _check_name(cls, name: str) -> str:
        if not _PIPELINE_NAME.match(name) or len(name) > MAX_PIPELINE_NAME:
            raise ValueError(
                f"pipeline names are 1-{MAX_PIPELINE_NAME} characters of letters, digits, "
                "'_', '-' and '.', starting with a letter or digit"
            )
        return name

    @field_validator("transforms")
    @classmethod
    def _no_transforms_yet(cls, transforms: list[Any]) -> list[Any]:
        if transforms:
            raise ValueError("transforms are not supported yet; leave the list empty")
        return transforms

    @model_validator(mode="before")
    @classmethod
    def _default_checkpoint(cls, data: Any) -> Any:
        if isinstance(data, dict) and "checkpoint" not in data:
            sink = data.get("sink")
            if isinstance(sink, dict) and sink.get("type") not in (None, "postgres"):
                data = {**data, "checkpoint": {"type": "file"}}
        return data

    @model_validator(mode="after")
    def _check_combination(self) -> PipelineConfig:
        if self.sink.type == "postgres" and self.checkpoint is not None:
            raise ValueError(
                "a postgres sink keeps the checkpoint in the target database, in the same "
                "transaction as the data; remove the checkpoint section"
            )
        if self.source.type == "kafka" and self.sink.type == "kafka":
            raise ValueError(
                "a kafka source needs a database sink (type: postgres); Kafka to Kafka is "
                "not supported"
            )
        return self

    @model_validator(mode="after")
    def _dead_letter_store(self) -> PipelineConfig:
        if self.dead_letter.store == "table" and self.sink.type != "postgres":
            raise ValueError(
                "dead_letter.store: table keeps the queue in a PostgreSQL target; with a "
                f"{self.sink.type} sink use store: jsonl"
            )
        dlq = self.dead_letter
        store = self.dead_letter_store
        if dlq.path is not None and store != "jsonl":
            raise ValueError("dead_letter.path is for store: jsonl")
        if store != "kafka" and (dlq.topic or dlq.bootstrap_servers or dlq.kafka):
            raise ValueError("dead_letter.topic, bootstrap_servers and kafka are for store: kafka")
        if store == "kafka" and self.dead_letter_brokers is None:
            raise ValueError(
                "dead_letter.store: kafka needs dead_letter.bootstrap_servers (the pipeline "
                "has no Kafka of its own to default to)"
            )
        return self

    @property
    def dead_letter_brokers(self) -> str | None:
        """The brokers of a Kafka DLQ: configured, else the pipeline's sink's or source's."""
        if self.dead_letter.bootstrap_servers:
            return self.dead_letter.bootstrap_servers
        for side in (self.sink, self.source):
            if isinstance(side, KafkaSinkConfig | KafkaSourceConfig):
                return side.bootstrap_servers
        return None

    @property
    def dead_letter_store(self) -> str:
        """The DLQ store in effect: the configured one, else table with a PostgreSQL sink."""
        chosen = self.dead_letter.store
        return chosen or ("table" if self.sink.type == "postgres" else "jsonl")

    @model_validator(mode="after")
    def _sequences_need_postgres(self) -> PipelineConfig:
        if self.sync_sequences_interval_s and self.source.type != "postgres":
            raise ValueError(
                "sync_sequences_interval_s needs a postgres source (MySQL keeps AUTO_INCREMENT "
                "counters, not sequences); remove it"
            )
        return self

    @property
    def target_dsn(self) -> Dsn:
        """The PostgreSQL sink's connection string (only for pipelines with one)."""
        if not isinstance(self.sink, PostgresSinkConfig):
            raise AssertionError(f"pipeline {self.name} has no postgres sink")
        return self.sink.dsn

    @property
    def table_source(self) -> PostgresSourceConfig | MysqlSourceConfig:
        """The source's config when it reads tables of a database (not Kafka topics)."""
        if isinstance(self.source, KafkaSourceConfig):
            raise AssertionError(f"pipeline {self.name} reads Kafka, not database tables")
        return self.source

    @property
    def slot_name(self) -> str:
        """The replication slot's name (PostgreSQL sources)."""
        source = self.source
        custom = source.slot if isinstance(source, PostgresSourceConfig) else None
        return custom or default_object_name(self.name)

    @property
    def publication_name(self) -> str:
        """The publication's name (PostgreSQL sources)."""
        source = self.source
        custom = source.publication if isinstance(source, PostgresSourceConfig) else None
        return custom or default_object_name(self.name)

    @property
    def server_id(self) -> int:
        """The replica server id a MySQL source's binlog reader announces.

        Unless configured, derived from the pipeline's name, so it stays the same across
        restarts and differs between pipelines.
        """
        source = self.source
        if isinstance(source, MysqlSourceConfig) and source.server_id is not None:
            return source.server_id
        return _DERIVED_SERVER_IDS + zlib.crc32(self.name.encode()) % _DERIVED_SERVER_IDS


class ApiConfig(_Model):
    """The management HTTP API and status page, served by ``replicator run``.

    Read-only endpoints are open; mutating ones (pause, resume, restart, reload) need the
    bearer token, read from the environment variable ``token_env`` or from ``token_file``.
    With neither set, mutating endpoints are refused.
    """

    listen: str = "127.0.0.1:8080"
    token_env: str | None = None
    token_file: Path | None = None

    @field_validator("listen")
    @classmethod
    def _check_listen(cls, listen: str) -> str:
        host, sep, port = listen.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
            raise ValueError("use host:port, e.g. 127.0.0.1:8080 (port 0 picks a free one)")
        return listen

    @field_validator("token_env")
    @classmethod
    def _check_token_env(cls, name: str | None) -> str | None:
        if name is not None and not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", name):
            raise ValueError("name an environment variable, e.g. REPLICATOR_API_TOKEN")
        return name

    @field_validator("token_file", mode="before")
    @classmethod
    def _resolve_token_file(cls, value: Any, info: ValidationInfo) -> Any:
        # Relative to the config file, like the checkpoint folder, not to the working folder.
        if isinstance(value, str):
            base = (info.context or {}).get("config_dir")
            path = Path(value).expanduser()
            return path if path.is_absolute() or base is None else Path(base) / path
        return value

    @model_validator(mode="after")
    def _one_token_source(self) -> ApiConfig:
        if self.token_env is not None and self.token_file is not None:
            raise ValueError("set token_env or token_file, not both")
        return self

    @property
    def host(self) -> str:
        """The address to bind (brackets of an IPv6 literal removed)."""
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        """The port to bind; 0 picks a free one."""
        return int(self.listen.rpartition(":")[2])

    def token(self) -> str | None:
        """The bearer token for mutating endpoints, or None when none is configured.

        Raises ConfigError when the named variable is unset or the file is unreadable, so
        a misconfigured token stops the start rather than leaving the API unprotected.
        """
        if self.token_env is not None:
            value = os.environ.get(self.token_env, "").strip()
            if not value:
                raise ConfigError(
                    f"api.token_env names {self.token_env}, which is not set or empty",
                    fix=f"export {self.token_env}=<a long random token>, or remove api.token_env",
                )
        elif self.token_file is not None:
            try:
                value = self.token_file.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ConfigError(
                    f"cannot read api.token_file {str(self.token_file)!r}: {exc.strerror}",
                    fix="create the file with the token on one line, readable by this user",
                ) from None
            if not value:
                raise ConfigError(f"api.token_file {str(self.token_file)!r} is empty")
        else:
            return None
        if len(value) < 16:
            raise ConfigError(
                "the API token is shorter than 16 characters",
                fix="use a long random token, e.g. the output of: openssl rand -hex 32",
            )
        register_secret(value)
        return value


class LoggingConfig(_Model):
    """Log level and format (``console`` for people, ``json`` for log shippers)."""

    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["console", "json"] = "console"
    # Columns whose values are masked wherever a server's message quotes them (a key in a
    # constraint error, a failing row): "table.column", "schema.table.column" or "column".
    redact_columns: list[str] = []


class ObservabilityConfig(_Model):
    """Tracing: OpenTelemetry spans per batch, exported over OTLP/HTTP when an endpoint is set."""

    otlp_endpoint: str | None = None
    service_name: str = "replicator"

    @field_validator("otlp_endpoint")
    @classmethod
    def _check_endpoint(cls, endpoint: str | None) -> str | None:
        if endpoint is not None and not re.match(r"^https?://[^/\s]+", endpoint):
            raise ValueError(
                "use the collector's OTLP/HTTP URL, e.g. http://127.0.0.1:4318 "
                "(spans are posted to /v1/traces under it)"
            )
        return endpoint


class Config(_Model):
    """A whole config file."""

    pipelines: Annotated[list[PipelineConfig], Field(min_length=1)]
    api: ApiConfig | None = None
    logging: LoggingConfig = LoggingConfig()
    observability: ObservabilityConfig = ObservabilityConfig()
    # SIGTERM: how long pipelines get to commit their batch and checkpoint before the process
    # gives up on them and exits non-zero (the next run resumes from the last checkpoint).
    shutdown_timeout_s: Annotated[float, Field(gt=0, le=3600)] = 30.0

    @model_validator(mode="after")
    def _unique_names(self) -> Config:
        seen: dict[str, str] = {}
        for pipeline in self.pipelines:
            names: list[tuple[str, object]] = [("name", pipeline.name)]
            if pipeline.source.type == "postgres":
                names += [("slot", pipeline.slot_name), ("publication", pipeline.publication_name)]
            elif pipeline.source.type == "mysql":
                names.append(("server_id", pipeline.server_id))
            for kind, value in names:
                key = f"{kind}:{value}"
                if key in seen:
                    raise ValueError(
                        f"pipelines {seen[key]!r} and {pipeline.name!r} would share the "
                        f"{kind} {value!r}; give them distinct names"
                    )
                seen[key] = pipeline.name
        return self

    def pipeline(self, name: str) -> PipelineConfig:
        """The pipeline called ``name``, or a ConfigError listing the known names."""
        for pipeline in self.pipelines:
            if pipeline.name == name:
                return pipeline
        known = ", ".join(p.name for p in self.pipelines)
        raise ConfigError(f"no pipeline named {name!r} in the config (it has: {known})")


def default_object_name(pipeline: str) -> str:
    """Name a slot or publication after its pipeline: ``shop-watch`` → ``replicator_shop_watch``."""
    return "replicator_" + re.sub(r"[^a-z0-9_]", "_", pipeline.lower())


def load_config(path: str | Path, environ: dict[str, str] | None = None) -> Config:
    """Read, interpolate and validate a config file; raise ConfigError listing every problem."""
    path = Path(path)
    env = dict(os.environ) if environ is None else environ
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"config file {str(path)!r} does not exist",
            fix="pass the path of your YAML config with -c FILE",
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {str(path)!r}: {exc}") from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {_yaml_problem(exc)}") from None
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: the config must be a mapping with a 'pipelines' list at the top level"
        )
    lines = _line_index(node)
    problems: list[str] = []
    data = _interpolate(data, env, (), problems, lines)
    if problems:
        raise ConfigError(f"{path}: " + _join(problems))
    try:
        return Config.model_validate(data, context={"config_dir": str(path.parent.resolve())})
    except ValidationError as exc:
        raise ConfigError(f"{path}: " + _join(_describe(exc, lines))) from None


def _join(problems: list[str]) -> str:
    if len(problems) == 1:
        return problems[0]
    return f"{len(problems)} problems:\n" + "\n".join(f"  - {p}" for p in problems)


def _yaml_problem(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    if mark is not None:
        return f"{problem} (line {mark.line + 1}, column {mark.column + 1})"
    return str(problem)


Path_ = tuple[str | int, ...]


def _line_index(node: yaml.Node | None) -> dict[Path_, int]:
    """Map each YAML path to its 1-based line, for error messages."""
    lines: dict[Path_, int] = {}

    def walk(n: yaml.Node, path: Path_) -> None:
        lines[path] = n.start_mark.line + 1
        if isinstance(n, yaml.MappingNode):
            for key, value in n.value:
                if isinstance(key, yaml.ScalarNode):
                    lines[(*path, key.value)] = key.start_mark.line + 1
                    walk(value, (*path, key.value))
        elif isinstance(n, yaml.SequenceNode):
            for i, item in enumerate(n.value):
                walk(item, (*path, i))

    if node is not None:
        walk(node, ())
    return lines


def _format_path(path: Path_) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _at(path: Path_, lines: dict[Path_, int]) -> str:
    probe = path
    while probe and probe not in lines:
        probe = probe[:-1]
    line = lines.get(probe)
    where = _format_path(path)
    return f"{where} (line {line})" if line else where


def _interpolate(
    value: Any, env: dict[str, str], path: Path_, problems: list[str], lines: dict[Path_, int]
) -> Any:
    """Expand ``${VAR}`` / ``${VAR:-default}`` in string values (``$$`` is a literal ``$``).

    Runs after parsing, so an environment value can never inject YAML structure.
    """
    if isinstance(value, dict):
        return {k: _interpolate(v, env, (*path, k), problems, lines) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, env, (*path, i), problems, lines) for i, v in enumerate(value)]
    if not isinstance(value, str) or "$" not in value:
        return value

    def expand(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, default = match.group(1), match.group(2)
        if name in env:
            return env[name]
        if default is not None:
            return default
        problems.append(
            f"{_at(path, lines)}: environment variable {name} is not set "
            f"(set it, or give a default with ${{{name}:-value}})"
        )
        return ""

    return _ENV_REF.sub(expand, value)


def _untagged(loc: Path_) -> Path_:
    """Drop the union tag pydantic puts after ``source`` (``source.mysql.dsn`` → ``source.dsn``)
    and ``sink``, and the member name of a union-typed value (``topics.list[str]``)."""
    for i in range(len(loc) - 1):
        if loc[i] in ("source", "sink") and loc[i + 1] in _CONNECTOR_TYPES:
            return _untagged(loc[: i + 1] + loc[i + 2 :])
        if isinstance(loc[i + 1], str) and loc[i + 1] in ("str", "list[str]"):
            return _untagged(loc[: i + 1] + loc[i + 2 :])
    return loc


_CONNECTOR_TYPES = ("postgres", "mysql", "kafka")


def _describe(exc: ValidationError, lines: dict[Path_, int]) -> list[str]:
    problems = []
    for error in exc.errors(include_input=False, include_url=False):
        loc: Path_ = _untagged(tuple(error["loc"]))
        kind = error["type"]
        # Union members show up as extra path parts (e.g. 'postgres'); drop tags for clarity.
        message = error["msg"]
        if kind == "extra_forbidden":
            field = loc[-1]
            problems.append(
                f"{_at(loc, lines)}: unknown key {field!r} (check its spelling and indentation)"
            )
            continue
        if kind == "missing":
            problems.append(f"{_at(loc, lines)}: required key is missing")
            continue
        if kind == "union_tag_invalid":
            expected = error.get("ctx", {}).get("expected_tags", "")
            problems.append(f"{_at((*loc, 'type'), lines)}: must be one of {expected}")
            continue
        if kind == "union_tag_not_found":
            problems.append(f"{_at((*loc, 'type'), lines)}: required key is missing")
            continue
        if kind == "literal_error":
            expected = error.get("ctx", {}).get("expected", "")
            problems.append(f"{_at(loc, lines)}: must be one of {expected}")
            continue
        if message.startswith("Value error, "):
            message = message[len("Value error, ") :]
        problems.append(f"{_at(loc, lines)}: {redact(message)}")
    return problems


__all__ = [
    "ApiConfig",
    "BatchConfig",
    "Config",
    "Dsn",
    "FileCheckpointConfig",
    "KafkaSinkConfig",
    "KafkaSourceConfig",
    "LoggingConfig",
    "MysqlDsn",
    "MysqlSourceConfig",
    "ObservabilityConfig",
    "PipelineConfig",
    "PostgresSinkConfig",
    "PostgresSourceConfig",
    "default_object_name",
    "load_config",
]
