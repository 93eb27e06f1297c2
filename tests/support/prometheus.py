"""A real Prometheus scraping test targets every second, and its HTTP API.

The server is Debian's prometheus package (/usr/bin/prometheus, with promtool), which
scripts/peers installs; `installed()` runs scripts/peers when it is missing and the tests
run as root (as in CI), and skips the test otherwise. Each Prometheus runs in a
temporary directory with a generated prometheus.yml, on a free port of 127.0.0.1.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.installed import program as installed_program
from tests.support.net import LOCALHOST, free_port

PROMETHEUS = Path("/usr/bin/prometheus")
DEADLINE = 30.0
# How often the deadline loops ask again: a polling interval, not synchronisation.
POLL = 0.1

# One element of an instant vector: its labels and its value.
Sample = tuple[dict[str, str], float]


def installed() -> Path:
    """/usr/bin/prometheus, installed by scripts/peers first when missing (as root);
    skips the test when it is missing and we are not root."""
    return installed_program(PROMETHEUS, "Prometheus")


def config(targets: Sequence[str], job: str) -> str:
    """A prometheus.yml (as JSON, which YAML reads) scraping `targets` every second."""
    document = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [{"job_name": job, "static_configs": [{"targets": list(targets)}]}],
    }
    return json.dumps(document, indent=2) + "\n"


class QueryError(AssertionError):
    """Prometheus refused a query (a PromQL syntax error, a bad argument...)."""


@dataclass
class Prometheus:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path

    def _get(self, path: str, params: dict[str, str]) -> Any:
        url = f"{self.url}{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                return json.load(response)
        except urllib.error.HTTPError as exc:
            # 400 (bad_data) and 422 (execution) carry the reason as JSON.
            body = exc.read().decode(errors="replace")
            raise QueryError(f"{params}: HTTP {exc.code}: {body}") from None

    def query(self, promql: str) -> list[Sample]:
        """The instant query `promql` at this moment, through /api/v1/query: each element
        as (labels, value); a scalar is one element without labels."""
        answer = self._get("/api/v1/query", {"query": promql})
        if answer.get("status") != "success":
            raise QueryError(f"{promql}: {answer}")
        data = answer["data"]
        if data["resultType"] == "vector":
            return [(dict(item["metric"]), float(item["value"][1])) for item in data["result"]]
        if data["resultType"] == "scalar":
            return [({}, float(data["result"][1]))]
        raise QueryError(f"{promql}: a {data['resultType']}, not an instant vector or scalar")

    def wait_for_value(
        self,
        promql: str,
        predicate: Callable[[list[Sample]], bool],
        deadline: float = DEADLINE,
    ) -> list[Sample]:
        """Query `promql` until `predicate` holds for its result (within `deadline`
        seconds, else AssertionError with the last result); returns that result."""
        end = time.monotonic() + deadline
        while True:
            result = self.query(promql)
            if predicate(result):
                return result
            if time.monotonic() > end:
                raise AssertionError(f"{promql}: not as expected within {deadline} s: {result}")
            if self.proc.poll() is not None:
                raise AssertionError(f"prometheus exited with {self.proc.returncode}")
            time.sleep(POLL)

    def stop(self) -> int:
        """SIGTERM, and its exit status (0 when it shut down cleanly)."""
        self.proc.terminate()
        try:
            return self.proc.wait(timeout=DEADLINE)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"prometheus did not stop on SIGTERM: {self.text()}") from None

    def text(self) -> str:
        """What it logged."""
        return self.log.read_text(errors="replace")


def _ready(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + DEADLINE
    while True:
        if proc.poll() is not None:
            raise AssertionError(f"prometheus exited with {proc.returncode}: {log.read_text()}")
        try:
            with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass  # not listening yet, or 503 while it starts
        if time.monotonic() > deadline:
            raise AssertionError(f"prometheus not ready within {DEADLINE} s: {log.read_text()}")
        time.sleep(POLL)


@contextmanager
def prometheus(
    tmp_path: Path, targets: Sequence[str], job: str = "dcmrecvd"
) -> Iterator[Prometheus]:
    """A Prometheus scraping `targets` ("127.0.0.1:PORT") as `job` every second, from
    ready until the block ends; its files in tmp_path/prometheus."""
    binary = installed()
    home = tmp_path / "prometheus"
    home.mkdir()
    (home / "prometheus.yml").write_text(config(targets, job))
    log = home / "prometheus.log"
    url = f"http://{LOCALHOST}:{free_port()}"
    with log.open("wb") as output:
        proc = subprocess.Popen(
            [
                str(binary),
                f"--config.file={home / 'prometheus.yml'}",
                f"--web.listen-address={url.removeprefix('http://')}",
                f"--storage.tsdb.path={home / 'data'}",
            ],
            cwd=home,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=output,
        )
    server = Prometheus(url, proc, log)
    try:
        _ready(url, proc, log)
        yield server
    finally:
        if proc.poll() is None:
            server.stop()
