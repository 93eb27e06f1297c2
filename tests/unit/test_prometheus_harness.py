"""tests/support/prometheus.py against a registry this process serves: Prometheus scrapes
it, and its API answers with what was counted."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter, start_http_server

from tests.support.net import LOCALHOST, free_port
from tests.support.prometheus import QueryError, prometheus
from tests.support.promtool import check_metrics


# Prometheus' discovery hands its first targets over after about 5 s.
@pytest.mark.slow
def test_prometheus_scrapes_a_counter_and_answers_its_value(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    counter = Counter("harness_things", "Things counted by the test.", ["kind"], registry=registry)
    port = free_port()
    server, thread = start_http_server(port, addr=LOCALHOST, registry=registry)
    try:
        counter.labels(kind="a").inc(3)
        with prometheus(tmp_path, [f"{LOCALHOST}:{port}"], job="harness") as prom:
            up = prom.wait_for_value('up{job="harness"}', lambda r: [v for _l, v in r] == [1.0])
            assert up[0][0]["instance"] == f"{LOCALHOST}:{port}"
            found = prom.wait_for_value(
                "harness_things_total", lambda r: [v for _l, v in r] == [3.0]
            )
            assert found[0][0] == {
                "__name__": "harness_things_total",
                "instance": f"{LOCALHOST}:{port}",
                "job": "harness",
                "kind": "a",
            }
            # A later increment shows in a later scrape.
            counter.labels(kind="b").inc()
            counter.labels(kind="a").inc(2)
            by_kind = prom.wait_for_value(
                "sum by (kind) (harness_things_total)",
                lambda r: {labels["kind"]: v for labels, v in r} == {"a": 5.0, "b": 1.0},
            )
            assert len(by_kind) == 2
            scalar = prom.query("scalar(sum(harness_things_total))")
            assert scalar == [({}, 6.0)]
            with pytest.raises(QueryError, match="parse error"):
                prom.query("sum by (kind) (")
            with pytest.raises(AssertionError, match="not as expected within"):
                prom.wait_for_value("harness_things_total", lambda r: False, deadline=0.5)
            assert prom.stop() == 0
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
    assert "Server is ready to receive web requests" in prom.text()


def test_promtool_check_metrics_reads_stdin_and_names_the_problems() -> None:
    good = "# HELP x_total Things.\n# TYPE x_total counter\nx_total 1\n"
    assert check_metrics(good) == ""
    bad = "# HELP x Things.\n# TYPE x counter\nx 1\n"
    assert "counter metrics should have" in check_metrics(bad)
