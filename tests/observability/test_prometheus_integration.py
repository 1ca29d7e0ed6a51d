"""A real Prometheus scrapes a real worker and a real scheduler; the dashboard and the alerts read real data.

The module starts, once: a Dramatiq worker in this process on every queue with its metrics exposition
server (``metrics_server.serve_metrics``) on a free loopback port; the scheduler in a process of its
own (``obs_scheduler_driver.py``, a fast clock); and the Debian ``prometheus`` binary with a config and a
data directory of the test's own, scraping both every second and evaluating ``docker/prometheus/alerts.yml``.
It sends a mix of succeeding, retried, failing and rejected jobs before and while Prometheus scrapes, then
the tests run every PromQL expression of the dashboard and of the alert rules through Prometheus's HTTP API.

Set ``DASHBOARD_RESULTS_JSON=path`` to keep the captured query results; ``docker/grafana/render_panels.py``
draws docs/dashboard.png from them.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pytest

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "docker" / "grafana" / "dashboards" / "platform.json"
ALERTS = REPO / "docker" / "prometheus" / "alerts.yml"
RENDER_SCRIPT = REPO / "docker" / "grafana" / "render_panels.py"
HERE = Path(__file__).resolve().parent

#: What the test puts for Grafana's template variables: every queue, every actor, a 10 s rate window
#: (Grafana's $__rate_interval is four scrape intervals at least; the test scrapes every second).
TEMPLATE_VALUES = {"$queue": ".*", "$actor": ".*", "$__rate_interval": "10s"}
#: Seconds of traffic while Prometheus scrapes (longer for a nicer docs/dashboard.png).
TRAFFIC_SECONDS = max(int(os.environ.get("OBSERVABILITY_TRAFFIC_SECONDS", "14")), 12)

pytestmark = [
    pytest.mark.skipif(
        shutil.which("prometheus") is None or shutil.which("promtool") is None,
        reason="needs Debian's prometheus package (the prometheus and promtool binaries)",
    ),
    pytest.mark.timeout(300),
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get(url: str, timeout: float = 10.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return bytes(response.read())


def _wait_for_http(url: str, timeout: float, process: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            _get(url, timeout=1.0)
            return
        except OSError:
            if process is not None and process.poll() is not None:
                raise AssertionError(f"{process.args!r} exited with {process.returncode}") from None
            if time.monotonic() > deadline:
                raise AssertionError(f"{url} did not answer within {timeout} s") from None
            time.sleep(0.1)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


class PromAPI:
    """The HTTP API of one Prometheus server."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url

    def call(self, path: str, **params: Any) -> Any:
        url = f"{self.base_url}{path}?{urllib.parse.urlencode(params, doseq=True)}"
        try:
            body = json.loads(_get(url))
        except urllib.error.HTTPError as error:
            body = json.loads(error.read())
        assert body.get("status") == "success", f"{path} {params}: {body.get('error')!r}"
        return body["data"]

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"query": expr}
        if at is not None:
            params["time"] = at
        return list(self.call("/api/v1/query", **params)["result"])

    def query_range(self, expr: str, start: float, end: float, step: float = 1.0) -> list[dict[str, Any]]:
        return list(self.call("/api/v1/query_range", query=expr, start=start, end=end, step=step)["result"])

    def metric_names(self) -> set[str]:
        return set(self.call("/api/v1/label/__name__/values"))


@dataclass
class Observed:
    """What the module-wide set-up leaves for the tests."""

    prom: PromAPI
    worker_metrics_url: str
    scheduler_metrics_url: str
    traffic_start: float
    traffic_end: float
    workdir: Path


def _substitute(expr: str) -> str:
    # Longest names first, so "$__rate_interval" is never cut by a shorter variable.
    for name in sorted(TEMPLATE_VALUES, key=len, reverse=True):
        expr = expr.replace(name, TEMPLATE_VALUES[name])
    return expr


def _dashboard() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD.read_text()))


def _finite_values(result: list[dict[str, Any]]) -> list[float]:
    values = []
    for series in result:
        for _, raw in series.get("values", [series.get("value", [0, "NaN"])]):
            value = float(raw)
            if math.isfinite(value):
                values.append(value)
    return values


def _send_mix(round_number: int, *, burst: bool = False) -> list[str]:
    """One round of traffic: successes, a retried job, jobs that fail until dead and rejected ones."""
    import obs_actors

    ids = [obs_actors.obs_succeeds.send(pages, sleep_ms=5 * pages).message_id for pages in (1, 2, 3, 4)]
    ids.append(obs_actors.obs_flaky.send(f"round-{round_number}-{uuid.uuid4().hex[:6]}").message_id)
    ids += [obs_actors.obs_always_fails.send(round_number).message_id for _ in range(2)]
    ids += [obs_actors.obs_rejects.send(f"bad-{round_number}").message_id for _ in range(2)]
    # An offline LLM extraction (new text each round, so it is not a cache hit) for the LLM row.
    from actors.llm import extract_trading_strategy

    ids.append(extract_trading_strategy.send(f"Buy when RSI(14) < 30 on the 1h chart ({uuid.uuid4().hex}).").message_id)
    if burst:
        # A short backlog, so queue depth and queue wait show something other than zero.
        ids += [obs_actors.obs_succeeds.send(1, sleep_ms=150).message_id for _ in range(40)]
    return ids


def _collect_sources() -> list[str]:
    """Collect from a folder source (it succeeds) and from a missing folder (it fails), so the collection's
    series exist: items, errors by reason, latency, health."""
    from actors.collection import collect_from_source
    from processing.sources import SourceConfig
    from settings import settings
    from storage.collection import sync_sources

    tag = uuid.uuid4().hex[:8]
    folder = settings.storage_root / "collection" / f"obs-{tag}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "items.csv").write_text(f"guid,title\nobs-{tag},Observed story {tag}\n")
    sync_sources(
        [
            SourceConfig(f"obs-folder-{tag}", "folder", f"collection/obs-{tag}"),
            SourceConfig(f"obs-missing-{tag}", "folder", f"collection/obs-missing-{tag}"),
        ],
        origin=f"obs-{tag}",
    )
    return [
        collect_from_source.send(f"obs-folder-{tag}").message_id,
        collect_from_source.send(f"obs-missing-{tag}").message_id,
    ]


def _print_logs(workdir: Path) -> None:
    """Show what the scheduler and Prometheus said, when the set-up fails."""
    for name in ("scheduler.log", "prometheus.log"):
        path = workdir / name
        if path.exists():
            print(f"--- {name} (last lines) ---")
            print("\n".join(path.read_text(errors="replace").splitlines()[-30:]))


def _prometheus_config(workdir: Path, worker_target: str, scheduler_target: str) -> Path:
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "900ms", "evaluation_interval": "1s"},
        "rule_files": [str(ALERTS)],
        "scrape_configs": [
            {"job_name": "workers", "static_configs": [{"targets": [worker_target]}]},
            {"job_name": "scheduler", "static_configs": [{"targets": [scheduler_target]}]},
        ],
    }
    path = workdir / "prometheus.yml"
    path.write_text(json.dumps(config, indent=2))  # JSON is YAML
    return path


@pytest.fixture(scope="module")
def observed(broker: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Observed]:
    import dramatiq
    import obs_actors

    from broker import redis_client_for
    from metrics_server import serve_metrics
    from middleware.job_status import flush
    from tests.support import wait_for_job, wait_until

    workdir = tmp_path_factory.mktemp("prometheus")
    redis_client = redis_client_for(broker)
    assert redis_client is not None, "these tests need the Redis broker"
    broker.flush_all()
    worker = dramatiq.Worker(broker, worker_threads=4, worker_timeout=50)
    worker.start()
    processes: list[subprocess.Popen[bytes]] = []
    logs: list[IO[bytes]] = []
    metrics_server = None
    try:
        # The worker's exposition server, as `dramatiq actors` forks it.
        worker_port = _free_port()
        metrics_server = serve_metrics("127.0.0.1", worker_port, block=False)
        worker_metrics_url = f"http://127.0.0.1:{worker_port}/metrics"
        _wait_for_http(worker_metrics_url, timeout=10)

        # The scheduler, in a process of its own.
        scheduler_port = _free_port()
        namespace = f"obs-test-{uuid.uuid4().hex[:8]}"
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        scheduler_log = open(workdir / "scheduler.log", "wb")  # noqa: SIM115  (closed at teardown)
        logs.append(scheduler_log)
        processes.append(
            subprocess.Popen(
                [sys.executable, str(HERE / "obs_scheduler_driver.py"), "--port", str(scheduler_port),
                 "--namespace", namespace],
                cwd=REPO, env=env, stdout=scheduler_log, stderr=subprocess.STDOUT,
            )
        )  # fmt: skip
        scheduler_metrics_url = f"http://127.0.0.1:{scheduler_port}/metrics"
        _wait_for_http(scheduler_metrics_url, timeout=60, process=processes[-1])

        # A first mix of jobs, all finished before Prometheus starts; one message delayed for later.
        first = _send_mix(0) + _collect_sources()
        for message_id in first:
            wait_for_job(message_id, timeout=60)
        obs_actors.obs_succeeds.send_with_options(args=(1,), delay=3_600_000)

        # Prometheus with a config and a data directory of the test's own.
        prom_port = _free_port()
        config = _prometheus_config(workdir, f"127.0.0.1:{worker_port}", f"127.0.0.1:{scheduler_port}")
        prom_log = open(workdir / "prometheus.log", "wb")  # noqa: SIM115
        logs.append(prom_log)
        processes.append(
            subprocess.Popen(
                ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={workdir / 'data'}",
                 f"--web.listen-address=127.0.0.1:{prom_port}", "--log.level=warn"],
                stdout=prom_log, stderr=subprocess.STDOUT,
            )
        )  # fmt: skip
        prom = PromAPI(f"http://127.0.0.1:{prom_port}")
        _wait_for_http(f"{prom.base_url}/-/ready", timeout=60, process=processes[-1])

        # Traffic while Prometheus scrapes. Twice a rival scheduler holds the lock for two seconds, so the
        # scheduler loses it and catches the missed tick up (a misfire) when it leads again; the second
        # misfire is the one increase() can show (the first only creates the series).
        traffic_start = time.time()
        sent: list[str] = []
        for round_number in range(1, TRAFFIC_SECONDS + 1):
            sent += _send_mix(round_number, burst=round_number == TRAFFIC_SECONDS // 2)
            if round_number in (3, TRAFFIC_SECONDS - 5):
                redis_client.set(f"{namespace}:leader", "a-rival-copy", px=2_000)
            time.sleep(1.0)
        for message_id in sent:
            wait_for_job(message_id, timeout=60)
        flush()
        time.sleep(2.5)  # the last results scraped twice

        # Two successful scrapes of each target at least (a scrape may time out on a busy machine).
        for job in ("workers", "scheduler"):

            def scraped_twice(job: str = job) -> bool:
                scrapes = prom.query(f'sum_over_time(up{{job="{job}"}}[5m])')
                return bool(scrapes) and float(scrapes[0]["value"][1]) >= 2

            wait_until(scraped_twice, timeout=30, interval=0.5)
        traffic_end = time.time()

        yield Observed(prom, worker_metrics_url, scheduler_metrics_url, traffic_start, traffic_end, workdir)
    except BaseException:
        _print_logs(workdir)
        raise
    finally:
        for process in reversed(processes):
            _stop(process)
        for log in logs:
            log.close()
        if metrics_server is not None:
            metrics_server.shutdown()
            metrics_server.server_close()
        worker.stop(timeout=10_000)
        flush()
        broker.flush_all()


@pytest.fixture(scope="module")
def dashboard_results(observed: Observed) -> dict[str, Any]:
    """Every query of every panel, with the template variables set to "all", run over the traffic window."""
    dashboard = _dashboard()
    panels = []
    for panel in dashboard["panels"]:
        queries = []
        for target in panel.get("targets", []):
            expr = _substitute(target["expr"])
            result = observed.prom.query_range(expr, observed.traffic_start, observed.traffic_end)
            queries.append({"expr": expr, "legend": target.get("legendFormat", ""), "result": result})
        panels.append(
            {key: panel.get(key) for key in ("title", "type", "gridPos", "fieldConfig")} | {"queries": queries}
        )
    document = {
        "title": dashboard["title"],
        "start": observed.traffic_start,
        "end": observed.traffic_end,
        "template_values": TEMPLATE_VALUES,
        "panels": panels,
    }
    text = json.dumps(document)
    (observed.workdir / "dashboard-results.json").write_text(text)
    keep = os.environ.get("DASHBOARD_RESULTS_JSON")
    if keep:
        Path(keep).parent.mkdir(parents=True, exist_ok=True)
        Path(keep).write_text(text)
    return document


def test_every_dashboard_query_returns_data_from_the_real_worker_and_scheduler(
    dashboard_results: dict[str, Any],
) -> None:
    # Given every query of every panel, run through Prometheus's HTTP API over the traffic window
    queries = [(panel["title"], query) for panel in dashboard_results["panels"] for query in panel["queries"]]
    assert len(queries) >= 20

    # When their results are read
    empty = [f"{title}: {query['expr']}" for title, query in queries if not _finite_values(query["result"])]

    # Then no panel is empty: every query has at least one series with a number in it
    assert not empty, "queries without data:\n" + "\n".join(empty)

    # And the panels show what happened: failures, retries, dead letters, fires and misfires
    def peak(title: str, legend_prefix: str) -> float:
        return max(
            (
                value
                for panel in dashboard_results["panels"]
                if panel["title"] == title
                for query in panel["queries"]
                if query["legend"].startswith(legend_prefix)
                for value in _finite_values(query["result"])
            ),
            default=0.0,
        )

    assert peak("Failure ratio by actor", "") == 1.0  # obs_always_fails and obs_rejects fail every time
    assert peak("Errors and retries", "retries") > 0
    assert peak("Dead letters", "in DLQ") >= TRAFFIC_SECONDS
    assert peak("Scheduler fires and misfires", "fires") > 0
    assert peak("Scheduler fires and misfires", "misfires") > 0
    assert peak("Scheduler fires and misfires", "skipped") > 0
    assert peak("Domain work", "pages") > 0


def test_the_dashboard_variables_list_the_queues_and_the_actors_that_ran(observed: Observed) -> None:
    # Given the dashboard's template variables (Grafana's label_values(metric, label))
    variables = {v["name"]: v for v in _dashboard()["templating"]["list"] if v["type"] == "query"}
    pattern = re.compile(r"^label_values\((?P<match>.+),\s*(?P<label>\w+)\)$")

    # When each is asked of Prometheus's label values API
    values = {}
    for name, variable in variables.items():
        parsed = pattern.match(variable["query"]["query"])
        assert parsed, variable["query"]
        match = _substitute(parsed["match"])
        values[name] = observed.prom.call(f"/api/v1/label/{parsed['label']}/values", **{"match[]": match})

    # Then the queue list holds every queue and the actor list every actor the worker ran
    from settings import QUEUES

    assert set(QUEUES) <= set(values["queue"])
    assert {"obs_succeeds", "obs_flaky", "obs_always_fails", "obs_rejects", "obs_tick"} <= set(values["actor"])


def test_every_alert_rule_evaluates_in_prometheus_over_series_that_exist(observed: Observed) -> None:
    # Given the alert rules Prometheus loaded from docker/prometheus/alerts.yml and evaluated every second
    rules = [rule for group in observed.prom.call("/api/v1/rules")["groups"] for rule in group["rules"]]
    assert {rule["name"] for rule in rules} >= {
        "QueueBackingUp", "HighFailureRate", "NoWorkerAlive", "DeadLettersGrowing", "SchedulerWithoutLeader",
    }  # fmt: skip
    names = observed.prom.metric_names()

    for rule in rules:
        # When its expression runs through the query API (a parse or evaluation error fails the call)
        result = observed.prom.query(rule["query"])

        # Then the rule engine evaluated it without error, and every series it reads exists: an alert
        # that is quiet here is quiet because all is well, not because it reads nothing
        assert rule["health"] == "ok", (rule["name"], rule.get("lastError"))
        used = set(
            re.findall(r"\b(?:dramatiq|scheduler|documents|media|market|collection)_[a-z_]+\b|\bup\b", rule["query"])
        )
        assert used, rule["name"]
        assert not used - names, f"{rule['name']} reads series that do not exist: {sorted(used - names)}"
        for metric in used:
            assert observed.prom.query(metric), f"{rule['name']}: {metric} returned nothing"
        if rule["name"] in {"DeadLettersGrowing", "HighFailureRate"}:
            assert result, f"{rule['name']} should see the failing actors"


def test_the_alerts_prometheus_raises_are_the_ones_the_traffic_deserves(observed: Observed) -> None:
    # Given a worker that dead-letters and fails one actor's every message, with every queue consumed,
    # a leading scheduler and both targets up

    # When Prometheus has evaluated the rules every second over the traffic
    alerts = observed.prom.call("/api/v1/alerts")["alerts"]
    active = {
        (alert["labels"]["alertname"], alert["labels"].get("actor_name") or alert["labels"].get("queue_name"))
        for alert in alerts
    }

    # Then the failing actors raise DeadLettersGrowing and HighFailureRate, and the failing source
    # SourceFailing (pending: their "for" has not passed yet), and nothing else is raised
    assert ("DeadLettersGrowing", "default") in active
    assert ("HighFailureRate", "obs_always_fails") in active
    assert ("HighFailureRate", "obs_rejects") in active
    assert any(alert["labels"].get("source", "").startswith("obs-missing-") for alert in alerts), alerts
    assert {name for name, _ in active} == {"DeadLettersGrowing", "HighFailureRate", "SourceFailing"}, active
    assert ("HighFailureRate", "obs_succeeds") not in active


def test_promtool_check_metrics_passes_on_real_scrapes(observed: Observed) -> None:
    for url in (observed.worker_metrics_url, observed.scheduler_metrics_url):
        # Given a real scrape
        text = _get(url)
        assert b"# HELP" in text

        # When promtool lints it
        linted = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, timeout=60)

        # Then it passes
        assert linted.returncode == 0, (url, linted.stdout.decode(), linted.stderr.decode())


def test_the_render_script_draws_the_dashboard_from_the_captured_results(
    observed: Observed, dashboard_results: dict[str, Any]
) -> None:
    # Given the query results of the dashboard's panels
    results = observed.workdir / "dashboard-results.json"

    # When the render script draws them
    picture = observed.workdir / "dashboard.png"
    rendered = subprocess.run(
        [sys.executable, str(RENDER_SCRIPT), str(results), str(picture)], capture_output=True, timeout=120
    )

    # Then it writes a PNG small enough for the README
    assert rendered.returncode == 0, rendered.stderr.decode()
    data = picture.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert 10_000 < len(data) < 600_000
