"""Config loading: interpolation, validation messages, and secrets kept out of them."""

from __future__ import annotations

from pathlib import Path

import pytest

from replicator.config import default_object_name, load_config
from replicator.errors import ConfigError
from replicator.observability.redaction import redact

GOOD = """
pipelines:
  - name: shop-watch
    source:
      type: postgres
      dsn: postgresql://repl:${SOURCE_PASSWORD}@db:5432/shop
      tables: ["public.*", "sales.orders"]
    sink:
      type: postgres
      dsn: ${TARGET_DSN:-postgresql://writer@wh:5432/warehouse}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "replicator.yaml"
    path.write_text(text)
    return path


def test_environment_variables_are_interpolated_with_defaults(tmp_path: Path):
    """${VAR} takes the environment's value and ${VAR:-default} falls back to the default."""
    config = load_config(write(tmp_path, GOOD), {"SOURCE_PASSWORD": "pw-123"})
    pipeline = config.pipelines[0]
    assert pipeline.source.dsn.secret() == "postgresql://repl:pw-123@db:5432/shop"
    assert pipeline.sink.dsn.secret() == "postgresql://writer@wh:5432/warehouse"
    assert pipeline.source.snapshot == "initial"


def test_dsn_passwords_never_print(tmp_path: Path):
    """A DSN's password is masked in str(), repr() and any text passed through redact()."""
    config = load_config(write(tmp_path, GOOD), {"SOURCE_PASSWORD": "pw-123"})
    dsn = config.pipelines[0].source.dsn
    assert "pw-123" not in str(dsn) and "pw-123" not in repr(dsn)
    assert "pw-123" not in repr(config)
    assert redact("failed for pw-123 at host") == "failed for [secure] at host"
    assert redact("password=hunter2 host=x") == "password=[secure] host=x"


def test_missing_variable_names_the_variable_and_the_place(tmp_path: Path):
    """An unset variable without a default is an error naming it and its YAML path."""
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, GOOD), {})
    message = str(err.value)
    assert "SOURCE_PASSWORD" in message
    assert "pipelines[0].source.dsn (line 6)" in message
    assert err.value.exit_code == 2


def test_every_problem_is_reported_at_once_with_lines(tmp_path: Path):
    """Unknown keys, wrong types and bad values are all listed, each with its line."""
    text = """
pipelines:
  - name: shop
    source:
      type: postgres
      dsn: postgresql://u:topsecret@h/db
      tables: [orders]
      snapshot: yes
    sink:
      type: postgres
      dsn: postgresql://u@h/wh
      colour: blue
    batch:
      max_events: "10"
"""
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text), {})
    message = str(err.value)
    assert "4 problems" in message
    assert (
        "pipelines[0].source.tables (line 7): table pattern 'orders' must be schema-qualified"
        in message
    )
    assert "pipelines[0].source.snapshot (line 8): must be one of 'initial' or 'never'" in message
    assert "pipelines[0].sink.colour (line 12): unknown key 'colour'" in message
    assert "pipelines[0].batch.max_events (line 14)" in message
    assert "topsecret" not in message


def test_invalid_yaml_and_missing_file_are_config_errors(tmp_path: Path):
    """Broken YAML and a missing file both exit with code 2 and say where."""
    with pytest.raises(ConfigError, match=r"not valid YAML.*line 3"):
        load_config(write(tmp_path, "pipelines:\n  - name: [unclosed\n"), {})
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml", {})


def test_names_that_would_collide_after_sanitising_are_rejected(tmp_path: Path):
    """Two pipelines must not share a slot: shop-watch and shop_watch both map to one name."""
    text = GOOD + GOOD.split("pipelines:\n", 1)[1].replace("shop-watch", "shop_watch")
    with pytest.raises(ConfigError, match="would share the slot 'replicator_shop_watch'"):
        load_config(write(tmp_path, text), {"SOURCE_PASSWORD": "x"})


def test_default_object_names_are_sanitised():
    """Slot and publication names are replicator_ plus the pipeline name in [a-z0-9_]."""
    assert default_object_name("Shop-Watch.eu") == "replicator_shop_watch_eu"


def test_values_from_the_environment_cannot_inject_yaml(tmp_path: Path):
    """Interpolation happens after parsing, so a value with YAML syntax stays a string."""
    config = load_config(write(tmp_path, GOOD), {"SOURCE_PASSWORD": "x]:{evil"})
    assert config.pipelines[0].source.dsn.secret() == "postgresql://repl:x]:{evil@db:5432/shop"


def test_identifiers_are_quoted_like_postgresql_does():
    """Plain lower-case names stay bare; keywords, capitals and quotes are quoted."""
    from replicator.events import TableId, quote_ident

    assert quote_ident("orders") == "orders"
    assert quote_ident("order") == '"order"'
    assert quote_ident("user") == '"user"'
    assert quote_ident("Order Lines") == '"Order Lines"'
    assert quote_ident('a"b') == '"a""b"'
    assert TableId("public", "select").quoted == 'public."select"'


KAFKA = """
pipelines:
  - name: shop-watch
    source: {type: postgres, dsn: "postgresql://repl@db/shop", tables: ["public.*"]}
    sink:
      type: kafka
      bootstrap_servers: "127.0.0.1:9092"
      topic_prefix: shop
      kafka: {sasl.password: "kafka-secret-9", linger.ms: 5}
  - name: shop-sync
    source:
      type: kafka
      bootstrap_servers: "127.0.0.1:9092"
      topics: "^shop\\\\..*"
      group: shop-sync
    sink: {type: postgres, dsn: "postgresql://writer@wh/warehouse"}
"""


def test_kafka_watcher_and_syncer_configs_load_with_their_defaults(tmp_path: Path):
    """The issue's example loads: a watcher with a file checkpoint next to the config, and a
    syncer subscribing by regular expression."""
    config = load_config(write(tmp_path, KAFKA), {})
    watch, sync = config.pipelines
    assert watch.sink.type == "kafka" and watch.sink.topic_for("public", "orders") == (
        "shop.public.orders"
    )
    assert watch.checkpoint is not None
    assert watch.checkpoint.dir == str(tmp_path.resolve() / "replicator-state")
    assert sync.source.type == "kafka" and sync.source.subscription == ["^shop\\..*"]
    assert sync.checkpoint is None
    assert redact("auth failed with kafka-secret-9") == "auth failed with [secure]"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ('topics: "^shop\\\\.(["', "pipelines[1].source.topics (line 14): not a valid regular"),
        ('topics: ["bad topic"]', "is not a Kafka topic name"),
        ("group: shop-sync\n      kafka: {group.id: x}", "'group.id' is set by Replicator"),
        (
            "group: shop-sync\n      topic_tables: {t: orders}",
            "name a schema-qualified table",
        ),
    ],
)
def test_kafka_source_mistakes_are_named(tmp_path: Path, change: str, expected: str):
    """Bad topic patterns, owned librdkafka settings and unqualified tables are config errors."""
    key = change.split(":")[0]
    original = {"topics": '      topics: "^shop\\\\..*"', "group": "      group: shop-sync"}[key]
    assert original in KAFKA
    text = KAFKA.replace(original, "      " + change)
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text), {})
    assert expected in str(err.value)
    assert err.value.exit_code == 2


def test_a_postgres_sink_takes_no_checkpoint_section(tmp_path: Path):
    """The checkpoint of a postgres sink lives in its database: a file checkpoint is refused."""
    text = GOOD + "    checkpoint: {type: file, dir: /tmp/x}\n"
    with pytest.raises(ConfigError, match="keeps the checkpoint in the target"):
        load_config(write(tmp_path, text), {"SOURCE_PASSWORD": "x"})


def test_kafka_sink_template_and_prefix_are_checked(tmp_path: Path):
    """A topic template with unknown placeholders, or a prefix Kafka refuses, is an error."""
    bad = KAFKA.replace("topic_prefix: shop", "topic_prefix: shop\n      topic: '{db}.{table}'")
    with pytest.raises(ConfigError, match=r"may use \{prefix\}, \{schema\} and \{table\}"):
        load_config(write(tmp_path, bad), {})
    bad = KAFKA.replace("topic_prefix: shop", "topic_prefix: 'sh op'")
    with pytest.raises(ConfigError, match="letters, digits"):
        load_config(write(tmp_path, bad), {})


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ("retry: {initial_delay_s: 5, max_delay_s: 1}", "max_delay_s must not be below"),
        ("retry: {initial_delay_s: 0}", "greater than 0"),
        ("dead_letter: {store: jsonl, topic: t}", "are for store: kafka"),
        ("dead_letter: {store: table, path: x.jsonl}", "dead_letter.path is for store: jsonl"),
        ("dead_letter: {store: kafka}", "needs dead_letter.bootstrap_servers"),
        ("dead_letter: {policy: drop}", "'hold_key' or 'skip'"),
        ("validation: [{tables: [public.x]}]", "a rule needs required, max_length"),
        ("validation: [{tables: [public.x], patterns: {a: '(['}}]", "not a regular expression"),
        ("validation: [{tables: [public.x], ranges: {a: {}}}]", "give min, max or both"),
        ("validation: [{tables: [public.x], ranges: {a: {min: 5, max: 1}}}]", "min must not"),
        ("degraded_errors_per_minute: -1", "greater than or equal to 0"),
    ],
)
def test_fault_handling_mistakes_are_named(tmp_path: Path, extra: str, expected: str):
    """Retry, dead-letter and validation settings that cannot work are config errors."""
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, GOOD + "    " + extra + "\n"), {"SOURCE_PASSWORD": "x"})
    assert expected in str(err.value) and err.value.exit_code == 2


def test_fault_handling_defaults(tmp_path: Path):
    """Retries never give up, the DLQ is a table in a PostgreSQL target holding keys, and a
    SIGTERM waits 30 s."""
    config = load_config(write(tmp_path, GOOD), {"SOURCE_PASSWORD": "x"})
    pipeline = config.pipelines[0]
    assert pipeline.retry.give_up_after_s == 0 and pipeline.retry.max_delay_s == 30
    assert pipeline.dead_letter_store == "table" and pipeline.dead_letter.policy == "hold_key"
    assert not pipeline.backfill and config.shutdown_timeout_s == 30
    assert load_config(write(tmp_path, KAFKA), {}).pipelines[0].dead_letter_store == "jsonl"
