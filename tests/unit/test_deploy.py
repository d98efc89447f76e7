"""The Grafana dashboard and Prometheus alert rules in deploy/: valid, unit-tested with promtool,
and using only metrics that Replicator exports.

promtool comes from Debian's `prometheus` package (scripts/ensure-test-tools.sh installs it).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from replicator.events import Op, TableId
from replicator.observability import errorlog, metrics

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
DASHBOARD = DEPLOY / "grafana" / "replicator-dashboard.json"
ALERTS = DEPLOY / "prometheus" / "replicator-alerts.yml"
ALERT_TESTS = DEPLOY / "prometheus" / "replicator-alerts.test.yml"
SCRAPE = DEPLOY / "prometheus" / "scrape-example.yml"

DATASOURCE = "${datasource}"
GRID_COLUMNS = 24

# --- Metric names in PromQL ----------------------------------------------------------------

# Removed before looking for names, in this order: strings first, so that braces, brackets or
# parentheses inside a regex matcher cannot confuse the later patterns.
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_GRAFANA_VARIABLE = re.compile(r"\$\{[^}]*\}|\$\w+")
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(
    r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", re.IGNORECASE
)
# A name not glued to a number (1e9, 10m) and not called like a function (rate(, sum ().
_NAME = re.compile(r"(?<![\w.:])[A-Za-z_:][\w:]*(?![\w:])(?!\s*\()")
_NAME_MATCHER = re.compile(r'__name__\s*=\s*"([^"]+)"')
_KEYWORDS = frozenset(
    {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring"}
    | {"group_left", "group_right", "inf", "nan"}
)
_HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
_HISTOGRAMS = frozenset(
    family.name for family in metrics.REGISTRY.collect() if family.type == "histogram"
)
# Grafana's `label_values(selector, label)`: only the selector is PromQL.
_LABEL_VALUES = re.compile(r"^\s*label_values\((.*),\s*\w+\s*\)\s*$", re.DOTALL)


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (Grafana variables allowed)."""
    names = set(_NAME_MATCHER.findall(expr))
    text = _STRING.sub(" ", expr)
    for pattern in (_GRAFANA_VARIABLE, _MATCHERS, _RANGE, _GROUPING):
        text = pattern.sub(" ", text)
    names.update(n for n in _NAME.findall(text) if n.lower() not in _KEYWORDS)
    return names


def _is_exported(name: str) -> bool:
    if name in metrics.NAMES or name == "up" or name.startswith(("process_", "python_")):
        return True
    return any(
        name.endswith(suffix) and name.removesuffix(suffix) in _HISTOGRAMS
        for suffix in _HISTOGRAM_SUFFIXES
    )


def unknown_metrics(expr: str) -> set[str]:
    """The names in ``expr`` that neither Replicator nor the Prometheus scrape produces."""
    return {name for name in metric_names(expr) if not _is_exported(name)}


def _panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    # A collapsed row keeps its panels inside it.
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def dashboard_expressions(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """Every PromQL expression of a dashboard, its targets' and its query variables', each with
    where it is (a list: two panels sharing an id must not hide one's query)."""
    found: list[tuple[str, str]] = []
    for panel in _panels(dashboard):
        for target in panel.get("targets", []):
            found.append((f"panel {panel['id']} {target['refId']}", target["expr"]))
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            query = query["query"] if isinstance(query, dict) else query
            selector = _LABEL_VALUES.match(query)
            found.append((f"variable {variable['name']}", selector[1] if selector else query))
    return found


def alert_expressions(rules: dict[str, Any]) -> list[tuple[str, str]]:
    """Every rule's expression, with its alert name and its place in the group."""
    return [
        (f"{rule['alert']} #{number}", rule["expr"])
        for group in rules["groups"]
        for number, rule in enumerate(group["rules"])
    ]


def _load_dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def _load_alerts() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(ALERTS.read_text())
    return loaded


# --- The checker itself ----------------------------------------------------------------------


def test_metric_names_ignores_functions_keywords_labels_and_variables() -> None:
    """Only selected metrics count: no functions, keywords, labels, strings or variables."""
    expr = (
        "histogram_quantile(0.99, sum by (pipeline, le) (rate(replicator_batch_apply_seconds_bucket"
        '{job=~"$job", pipeline=~"a{2}|b"}[$__rate_interval]))) > 1e3 * 1024^3 '
        "and on (job, instance) up offset 10m unless ignoring (state) "
        'sum(replicator_pipeline_state) without (state) or {__name__="process_open_fds"} '
        'or label_replace(vector(1), "dst", "$1", "src", "(.*)") or time() - 4 * 3600'
    )

    assert metric_names(expr) == {
        "replicator_batch_apply_seconds_bucket",
        "up",
        "replicator_pipeline_state",
        "process_open_fds",
    }


def test_unknown_metrics_catches_a_misspelt_name() -> None:
    """A misspelt metric, or a histogram suffix on a gauge, is reported; real names are not."""
    assert unknown_metrics(
        'sum by (op) (rate(replicator_event_applied_total{pipeline=~"$pipeline"}[5m]))'
    ) == {"replicator_event_applied_total"}
    assert unknown_metrics("rate(replicator_lag_seconds_bucket[5m])") == {
        "replicator_lag_seconds_bucket"
    }
    assert unknown_metrics("replicator_errors > 0") == {"replicator_errors"}
    assert not unknown_metrics(
        "rate(replicator_batch_events_count[5m]) + replicator_errors_total "
        "+ process_resident_memory_bytes + python_info + up"
    )


def test_a_misspelt_metric_in_the_dashboard_is_found() -> None:
    """Renaming a metric in one panel of the real dashboard makes the check report it."""
    dashboard = _load_dashboard()
    panel = next(p for p in _panels(dashboard) if p.get("targets"))
    target = panel["targets"][0]
    target["expr"] = target["expr"].replace("replicator_", "replicator_x_", 1)

    unknown = {where: unknown_metrics(e) for where, e in dashboard_expressions(dashboard)}

    assert {where for where, names in unknown.items() if names} == {
        f"panel {panel['id']} {target['refId']}"
    }


def test_names_lists_every_replicator_family() -> None:
    """metrics.NAMES, which the checks trust, lists exactly the families the registry holds."""
    suffixes = {"counter": "_total", "info": "_info"}
    families = {
        family.name + suffixes.get(family.type, "")
        for family in metrics.REGISTRY.collect()
        if family.name.startswith("replicator_")
    }

    assert families == metrics.NAMES


# --- Metric names in the shipped files -------------------------------------------------------


_DASHBOARD_EXPRESSIONS = [
    pytest.param(e, id=w) for w, e in dashboard_expressions(_load_dashboard())
]
_ALERT_EXPRESSIONS = [pytest.param(e, id=w) for w, e in alert_expressions(_load_alerts())]


@pytest.mark.parametrize("expr", _DASHBOARD_EXPRESSIONS)
def test_dashboard_uses_only_exported_metrics(expr: str) -> None:
    """Each dashboard query selects metrics, and only metrics Replicator or Prometheus export."""
    assert metric_names(expr)
    assert not unknown_metrics(expr)


@pytest.mark.parametrize("expr", _ALERT_EXPRESSIONS)
def test_alert_rules_use_only_exported_metrics(expr: str) -> None:
    """Each alert rule selects metrics, and only metrics Replicator or Prometheus export."""
    assert metric_names(expr)
    assert not unknown_metrics(expr)


# --- promtool ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def promtool() -> str:
    """The promtool binary; its absence is a failure, not a skip."""
    found = shutil.which("promtool") or shutil.which("promtool", path="/usr/bin")
    if found is None:
        pytest.fail("promtool is missing: run scripts/ensure-test-tools.sh (package prometheus)")
    return found


def _promtool(promtool: str, *args: str, stdin: bytes | None = None) -> str:
    done = subprocess.run(
        [promtool, *args], input=stdin, capture_output=True, timeout=60, check=False
    )
    output = (done.stdout + done.stderr).decode()
    assert done.returncode == 0, f"promtool {' '.join(args)} failed:\n{output}"
    return output


def test_alert_rules_pass_promtool_check(promtool: str) -> None:
    """promtool accepts the alert rules file."""
    output = _promtool(promtool, "check", "rules", str(ALERTS))

    assert "SUCCESS" in output


def test_alert_rules_pass_their_unit_tests(promtool: str) -> None:
    """Every alert fires on its test's bad history and stays quiet on its good one."""
    output = _promtool(promtool, "test", "rules", str(ALERT_TESTS))

    assert "SUCCESS" in output


# A command or API call, quoted as code: what the person paged runs first.
_RUNBOOK_STEP = re.compile(r"`(replicator |GET /|POST /)")


def test_every_alert_has_a_unit_test_and_runbook_annotations() -> None:
    """Each alert is exercised by the promtool tests and tells the reader what to do."""
    rules = [rule for group in _load_alerts()["groups"] for rule in group["rules"]]
    tested = {
        case["alertname"]
        for test in yaml.safe_load(ALERT_TESTS.read_text())["tests"]
        for case in test["alert_rule_test"]
    }

    assert {rule["alert"] for rule in rules} <= tested
    for rule in rules:
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert {"summary", "description"} <= rule["annotations"].keys(), rule["alert"]
        assert "{{ $labels.instance }}" in rule["annotations"]["description"], rule["alert"]
        assert _RUNBOOK_STEP.search(rule["annotations"]["description"]), (
            f"{rule['alert']} names no command or API call to run"
        )


def test_scrape_example_passes_promtool_check(promtool: str) -> None:
    """The scrape snippet is a valid Prometheus config scraping the job the alerts expect."""
    _promtool(promtool, "check", "config", str(SCRAPE))
    (job,) = yaml.safe_load(SCRAPE.read_text())["scrape_configs"]

    assert job["job_name"] == "replicator"
    assert job["metrics_path"] == "/metrics"
    assert job["static_configs"] == [{"targets": ["127.0.0.1:8080"]}]


def test_dashboard_queries_parse_as_promql(promtool: str, tmp_path: Path) -> None:
    """Every dashboard query, its Grafana variables filled in, is PromQL promtool accepts."""
    rules = [
        {"record": f"dashboard:query_{number}", "expr": _fill_variables(expr)}
        for number, (_, expr) in enumerate(dashboard_expressions(_load_dashboard()))
    ]
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))

    _promtool(promtool, "check", "rules", str(path))


def _fill_variables(expr: str) -> str:
    # A range variable ($__rate_interval, $__range) becomes a duration, any other a regex.
    return re.sub(r"\$\w+", ".*", re.sub(r"\[\$\w+\]", "[5m]", expr))


def test_exposition_passes_promtool_check_metrics(promtool: str) -> None:
    """The real /metrics text, with every kind of series present, has no lint problems."""
    name = "deploy-check"
    pipeline = metrics.PipelineMetrics(name)
    table = TableId("public", "t")
    try:
        pipeline.state("streaming")
        pipeline.committed(
            Counter({(table, Op.INSERT): 3, (table, Op.DELETE): 1}),
            transactions=2,
            seconds=0.02,
            events=4,
            commit_ts=datetime(2025, 1, 1, tzinfo=UTC),
        )
        pipeline.lag(0.5)
        # Counts the error and its retry, the way the engine reports a reconnect.
        errorlog.record(name, OSError("connection reset"), retried="reconnect")
        exposition = metrics.render()

        output = _promtool(promtool, "check", "metrics", stdin=exposition)
    finally:
        pipeline.forget()
        errorlog.forget(name)

    assert output == ""
    text = exposition.decode()
    assert f'replicator_pipeline_state{{pipeline="{name}",state="streaming"}} 1.0' in text
    assert (
        f'replicator_rows_applied_total{{op="insert",pipeline="{name}",table="public.t"}}' in text
    )
    assert f'replicator_errors_total{{kind="OSError",pipeline="{name}"}} 1.0' in text
    assert f'replicator_retries_total{{operation="reconnect",pipeline="{name}"}} 1.0' in text


# --- The dashboard's structure ---------------------------------------------------------------


def test_dashboard_panel_ids_are_unique() -> None:
    """No two panels, rows included, share an id."""
    ids = [panel["id"] for panel in _panels(_load_dashboard())]

    assert len(ids) == len(set(ids))


def test_every_panel_queries_the_datasource_variable() -> None:
    """Panels and their targets use ${datasource}, so the dashboard imports into any Grafana."""
    for panel in _panels(_load_dashboard()):
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == DATASOURCE, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == {"type": "prometheus", "uid": DATASOURCE}, panel["title"]


def test_dashboard_variables_select_datasource_and_pipelines() -> None:
    """A Prometheus datasource variable, and a multi-select pipeline variable with All."""
    dashboard = _load_dashboard()
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}

    assert dashboard["schemaVersion"] >= 36
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    pipeline = variables["pipeline"]
    assert pipeline["datasource"]["uid"] == DATASOURCE
    assert pipeline["multi"] and pipeline["includeAll"]
    assert re.fullmatch(
        r"label_values\(replicator_pipeline_state(\{[^}]*\})?, pipeline\)",
        pipeline["query"]["query"],
    )


# The replicator families without a pipeline label.
# Process-wide series, and the circuit breaker's, which is per target (shared by pipelines).
_UNLABELLED = frozenset(
    {
        "replicator_build_info",
        "replicator_config_reloads_total",
        "replicator_target_circuit_open",
        "replicator_target_probes_total",
    }
)
_SELECTOR = re.compile(r"\b(replicator_\w+)(\{[^}]*\})?")


def test_per_pipeline_queries_filter_on_the_pipeline_variable() -> None:
    """Every selector of a per-pipeline metric in a panel honours the $pipeline choice."""
    for where, expr in dashboard_expressions(_load_dashboard()):
        if where.startswith("variable"):
            continue
        for name, matchers in _SELECTOR.findall(expr):
            if name not in _UNLABELLED:
                assert 'pipeline=~"$pipeline"' in matchers, f"{where}: {name} ignores $pipeline"


def test_dashboard_panels_do_not_overlap() -> None:
    """Every panel fits the 24-column grid and none covers another."""
    taken: dict[tuple[int, int], str] = {}
    for panel in _panels(_load_dashboard()):
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["w"] > 0 and grid["h"] > 0, panel["title"]
        assert grid["x"] + grid["w"] <= GRID_COLUMNS, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in taken, f"{panel['title']} overlaps {taken[(x, y)]}"
                taken[(x, y)] = panel["title"]
