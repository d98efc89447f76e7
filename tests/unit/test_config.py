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
