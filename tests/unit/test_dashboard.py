"""packaging/grafana/dcmrecvd.json: a Grafana dashboard that imports cleanly, whose every
expression is PromQL that Prometheus parses and names only metrics that a running
dcmrecvd serves on GET /metrics."""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.daemon import conf as daemon_conf
from tests.support.daemon import ct, dcmrecvd, requestor
from tests.support.dicomgen import CT
from tests.support.net import LOCALHOST, free_port
from tests.support.prometheus import prometheus

DASHBOARD = Path(__file__).resolve().parents[2] / "packaging" / "grafana" / "dcmrecvd.json"
DATASOURCE = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
DEADLINE = 30.0


def words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# PromQL's functions (Prometheus 2.42 to 3.x) and aggregation operators: identifiers that
# a "(" follows and that name no metric.
FUNCTIONS = words(
    """abs absent absent_over_time acos acosh asin asinh atan atanh avg_over_time ceil
    changes clamp clamp_max clamp_min cos cosh count_over_time day_of_month day_of_week
    day_of_year days_in_month deg delta deriv double_exponential_smoothing end exp floor
    histogram_avg histogram_count histogram_fraction histogram_quantile histogram_stddev
    histogram_stdvar histogram_sum holt_winters hour idelta increase info irate label_join
    label_replace last_over_time ln log10 log2 mad_over_time max_over_time min_over_time
    minute month pi predict_linear present_over_time quantile_over_time rad rate resets
    round scalar sgn sin sinh sort sort_by_label sort_by_label_desc sort_desc sqrt start
    stddev_over_time stdvar_over_time sum_over_time tan tanh time timestamp vector
    year"""
)
AGGREGATIONS = words(
    "avg bottomk count count_values group limit_ratio limitk max min quantile stddev stdvar"
    " sum topk"
)
# Keywords whose parenthesised list that follows names labels, not metrics.
GROUPING = words("by without on ignoring group_left group_right")
KEYWORDS = GROUPING | words("offset bool and or unless atan2 inf nan")

_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<comment>\#[^\n]*)
  | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
  | (?P<variable>\$\{[^}]*\}|\$\w+|\[\[\w+(?::\w+)?\]\])   # Grafana's
  | (?P<range>\[[^\[\]]*\])                               # [5m], [1h:1m], [$__rate_interval]
  | (?P<duration>(?:\d+(?:ms|[smhdwy]))+)(?![\w:.])        # after offset, @
  | (?P<number>0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)
  | (?P<op>=~|!~|!=|==|<=|>=|[-+*/%^=<>{}(),@])
    """,
    re.VERBOSE,
)


def tokens(expr: str) -> Iterator[tuple[str, str]]:
    """(kind, text) of each token of `expr`, without space and comments."""
    position = 0
    while position < len(expr):
        match = _TOKEN.match(expr, position)
        if match is None:
            raise ValueError(f"cannot read {expr[position:]!r} in {expr!r}")
        position = match.end()
        kind = match.lastgroup
        assert kind is not None
        if kind not in ("space", "comment"):
            yield kind, match.group()


def metric_names(expr: str) -> set[str]:
    """The metric names that the PromQL `expr` selects (Grafana's $variables allowed):
    its identifiers less functions, aggregations, keywords, label names in {...} and
    in the lists of by, without, on, ignoring, group_left and group_right, and
    durations; plus the names of {__name__="..."} matchers."""
    found: set[str] = set()
    items = list(tokens(expr))
    braces = 0
    index = 0
    while index < len(items):
        kind, text = items[index]
        after = items[index + 1][1] if index + 1 < len(items) else ""
        if text == "{":
            braces += 1
        elif text == "}":
            braces -= 1
        elif kind == "name" and braces:
            # A label name; __name__="x" selects the metric x.
            if text == "__name__" and after == "=" and items[index + 2][0] == "string":
                found.add(items[index + 2][1][1:-1])
        elif kind == "name" and text.lower() in GROUPING and after == "(":
            close = [t for _k, t in items[index:]].index(")")
            labels = items[index + 2 : index + close]
            assert all(k == "name" or t == "," for k, t in labels), (expr, labels)
            index += close
        elif kind == "name" and text.lower() in KEYWORDS:
            pass
        elif kind == "name" and text.lower() in AGGREGATIONS and after.lower() in GROUPING:
            pass  # sum by (...) (...)
        elif kind == "name" and after == "(":
            if text not in FUNCTIONS and text.lower() not in AGGREGATIONS:
                raise ValueError(f"{text}() is not a PromQL function: {expr!r}")
        elif kind == "name":
            found.add(text)
        index += 1
    assert braces == 0, f"unbalanced braces: {expr!r}"
    return found


# -- the extractor itself -------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ('sum by (peer) (rate(dcmrecvd_x_total{peer!="other"}[5m]))', {"dcmrecvd_x_total"}),
        (
            "histogram_quantile(0.99, sum without (instance) "
            '(rate(a_seconds_bucket{job="$job", instance=~"$instance"}[$__rate_interval])))',
            {"a_seconds_bucket"},
        ),
        ("sum(rate(a_sum[1h:5m])) / sum(rate(a_count[1h:5m]))", {"a_sum", "a_count"}),
        ("a > bool on (job, instance) group_left (sha256) b", {"a", "b"}),
        ("a unless ignoring(le) b or c AND d", {"a", "b", "c", "d"}),
        ("rate(a[5m] offset 1h30m) * 1e3 + 0x10 - Inf", {"a"}),
        ("max(a @ start()) > 0 # a comment: rate(b[5m])", {"a"}),
        ('sum(x) by (by, on) + count_values("le", y)', {"x", "y"}),
        ('label_replace(up, "a", "$1", "instance", "(.*):.*")', {"up"}),
        ('{__name__="dcmrecvd_workers", job="x"}', {"dcmrecvd_workers"}),
        ("topk(5, recording:rule:rate5m) and on() vector(1)", {"recording:rule:rate5m"}),
        (
            "time() - dcmrecvd_last_reload_success_timestamp_seconds",
            {"dcmrecvd_last_reload_success_timestamp_seconds"},
        ),
        ("sum without () (offset_total) + bool_total", {"offset_total", "bool_total"}),
    ],
)
def test_metric_names_finds_the_metrics_and_nothing_else(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


@pytest.mark.parametrize("expr", ["rates(a[5m])", 'a{b="c"', "a ; b", "sum by (a + b) (c)"])
def test_metric_names_refuses_what_it_cannot_read(expr: str) -> None:
    with pytest.raises((ValueError, AssertionError)):
        metric_names(expr)


# -- the dashboard's structure --------------------------------------------------------


def load() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return document


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, those inside collapsed rows too."""
    found = []
    for panel in dashboard["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))
    return found


def expressions(dashboard: dict[str, Any]) -> list[str]:
    return [target["expr"] for panel in panels(dashboard) for target in panel.get("targets", [])]


def variable_queries(dashboard: dict[str, Any]) -> list[str]:
    """The PromQL selectors inside the template variables' label_values(SELECTOR, label)."""
    found = []
    for variable in dashboard["templating"]["list"]:
        if variable["type"] != "query":
            continue
        query = variable["query"]
        text = query["query"] if isinstance(query, dict) else query
        match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", text)
        assert match, f"not label_values(selector, label): {text!r}"
        found.append(match.group(1))
    return found


def test_the_dashboard_is_a_grafana_dashboard_with_one_prometheus_input() -> None:
    dashboard = load()
    assert dashboard["schemaVersion"] >= 36
    assert dashboard["uid"] == "dcmrecvd" and dashboard["title"] == "dcmrecvd"
    assert dashboard["id"] is None  # Grafana assigns it on import
    inputs = dashboard["__inputs"]
    assert [(i["name"], i["type"], i["pluginId"]) for i in inputs] == [
        ("DS_PROMETHEUS", "datasource", "prometheus")
    ]
    required = {(r["type"], r["id"]) for r in dashboard["__requires"]}
    kinds = {panel["type"] for panel in panels(dashboard)} - {"row"}
    assert {("panel", kind) for kind in kinds} | {("datasource", "prometheus")} <= required

    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert set(variables) == {"job", "instance"}
    for variable in variables.values():
        assert variable["datasource"] == DATASOURCE
    assert variables["instance"]["includeAll"] and variables["instance"]["allValue"] == ".*"
    assert variable_queries(dashboard) == [
        "dcmrecvd_workers",
        'dcmrecvd_workers{job="$job"}',
    ]

    ids = [panel["id"] for panel in panels(dashboard)]
    assert len(ids) == len(set(ids))
    graphs = [panel for panel in panels(dashboard) if panel["type"] != "row"]
    assert len(graphs) >= 10
    for panel in graphs:
        where = panel["title"]
        assert panel["datasource"] == DATASOURCE, where
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24 and grid["h"] > 0, where
        assert panel["targets"], where
        refs = [target["refId"] for target in panel["targets"]]
        assert len(refs) == len(set(refs)), where
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, where
            assert target["expr"].strip(), where
            # Every selector is limited to the chosen job and instances.
            for selector in re.findall(r"dcmrecvd_\w+(\{[^}]*\})?", target["expr"]):
                assert 'job="$job"' in selector and 'instance=~"$instance"' in selector, (
                    where,
                    target["expr"],
                )
    # No datasource but the input, anywhere (a uid left from the exporting Grafana
    # would not import).
    text = DASHBOARD.read_text()
    uids = set(re.findall(r'"uid":\s*"([^"]*)"', text)) - {"dcmrecvd"}
    assert uids == {"${DS_PROMETHEUS}", "-- Grafana --"}


def test_the_dashboard_shows_what_issue_18_asks_for() -> None:
    used = set().union(*map(metric_names, expressions(load())))
    assert {
        "dcmrecvd_received_instances_total",
        "dcmrecvd_received_bytes_total",
        "dcmrecvd_cstore_responses_total",
        "dcmrecvd_store_commit_seconds_bucket",
        "dcmrecvd_fsync_seconds_bucket",
        "dcmrecvd_output_free_bytes",
        "dcmrecvd_output_reserve_bytes",
        "dcmrecvd_associations_active",
        "dcmrecvd_associations_rejected_total",
        "dcmrecvd_worker_deaths_total",
        "dcmrecvd_reloads_total",
        "dcmrecvd_event_deliveries",
    } <= used
    quantiles = [e for e in expressions(load()) if "dcmrecvd_store_commit_seconds_bucket" in e]
    assert sorted(re.findall(r"histogram_quantile\((0\.\d+)", " ".join(quantiles))) == [
        "0.5",
        "0.95",
        "0.99",
    ]


def grafana_to_promql(expr: str) -> str:
    """`expr` as Grafana sends it: its variables replaced."""
    values = {"job": "dcmrecvd", "instance": ".*", "__rate_interval": "1m", "__interval": "15s"}
    return re.sub(r"\$\{?(\w+)\}?", lambda m: values[m.group(1)], expr)


def test_every_expression_is_promql_that_prometheus_parses(tmp_path: Path) -> None:
    dashboard = load()
    with prometheus(tmp_path, []) as prom:
        for expr in expressions(dashboard) + variable_queries(dashboard):
            # Raises QueryError with Prometheus' reason when it does not parse.
            assert isinstance(prom.query(grafana_to_promql(expr)), list)
        assert prom.stop() == 0


# -- against a running dcmrecvd -------------------------------------------------------


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://{LOCALHOST}:{port}/metrics", timeout=10) as response:
        assert response.status == 200
        text: str = response.read().decode()
        return text


def served(text: str) -> set[str]:
    """The names of every sample in an exposition (x_total, x_bucket, x_sum, ...)."""
    return {
        sample.name for family in text_string_to_metric_families(text) for sample in family.samples
    }


def test_every_metric_the_dashboard_uses_is_served_by_dcmrecvd(tmp_path: Path) -> None:
    dashboard = load()
    used = set().union(*map(metric_names, expressions(dashboard) + variable_queries(dashboard)))
    assert len(used) >= 20
    port, metrics = free_port(), free_port()
    out = tmp_path / "in"
    out.mkdir()
    sections = (
        "[peer ct]\ncalling-aetitle = CT1\n"
        "[completion]\nseries-quiet = 1s\nstudy-quiet = 1s\n"
        "[events]\nmanifests = series-complete study-complete\n"
        f"[metrics]\naddress = {LOCALHOST}\nport = {metrics}\n"
    )
    text = daemon_conf(
        port,
        out,
        sections,
        workers="2",
        default_policy="reject",
        index=str(tmp_path / "index.sqlite"),
    )
    with dcmrecvd(tmp_path, text) as daemon:
        assoc = requestor(port, [CT], calling="CT1")
        assert assoc.is_established
        assert assoc.send_c_store(ct("1.2.3.4.1")).Status == 0x0000
        assoc.release()
        assert not requestor(port, [CT], calling="STRANGER").is_established
        # Labelled series appear once something was counted with those labels, the
        # event deliveries once the study completed: scrape until all are there.
        deadline = time.monotonic() + DEADLINE
        while True:
            try:
                missing = used - served(scrape(metrics))
            except (urllib.error.URLError, ConnectionError) as exc:
                missing = {f"(no scrape: {exc})"}
            if not missing or time.monotonic() > deadline:
                break
            time.sleep(0.2)  # polling interval of the deadline loop
        assert not missing, f"the dashboard uses metrics dcmrecvd does not serve: {missing}"
        assert daemon.stop() == 0
