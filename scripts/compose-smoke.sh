#!/usr/bin/env bash
# The compose stack end to end against a real Docker engine (docs/deploy.md, "Compose smoke
# test"): build both images, `docker compose up -d`, wait until the API is healthy, POST an
# interaction and GET a recommendation for that user, retrain and see the API serve the new
# version by itself, `docker compose down -v`. Exits non-zero on the first failure (after
# printing the services' logs and taking the stack down); prints the time of each step.
# Not run in CI (no engine there); the tests lint it and check its image names.
#
# Environment:
#   BASE_IMAGE        build arg of the Dockerfile (default python:3.11-slim-bookworm): an image
#                     built locally where no registry is reachable (scripts/local-base-images.sh)
#   REDIS_IMAGE       the compose file's Redis image (default redis:7.2-alpine)
#   TORCH_INDEX_URL   build arg: where the training image finds the CPU wheel of torch
#   BUILD_FLAGS       more `docker build` flags, split on spaces (e.g. "--network host")
#   DOCKER            the Docker CLI (default docker); DOCKER_BUILDKIT=0|1 picks the builder
#   COMPOSE           the compose command (default `docker compose`, else docker-compose)
#   SKIP_BUILD=1      use the images already built
#   KEEP=1            leave the stack up (no `down -v`) for a look after a failure
#   TIMEOUT_S         how long to wait for each of health and reload (default 300)
# The project is `relrec-smoke` (not `relrec`), so `down -v` never touches the volumes of a
# `docker compose up` of your own; it needs 127.0.0.1:8000 free.
set -euo pipefail
cd "$(dirname "$0")/.."

# The compose file's `image:` names (tests/deploy/test_compose.py checks they match).
API_IMAGE=relrec:local
TRAIN_IMAGE=relrec-train:local
PROJECT=relrec-smoke
URL=http://127.0.0.1:8000
USER_ID=smoke-user-$$
DOCKER=${DOCKER:-docker}
TIMEOUT_S=${TIMEOUT_S:-300}
export REDIS_IMAGE=${REDIS_IMAGE:-redis:7.2-alpine}

START=${EPOCHREALTIME:-$(date +%s)}
STEP_START=$START
STEP=""

log() { printf 'compose-smoke: %s\n' "$*" >&2; }
fail() { log "FAILED: $*"; exit 1; }
now() { printf '%s' "${EPOCHREALTIME:-$(date +%s)}"; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# Each step logs its duration when the next one starts, or when the script ends.
end_step() {
    [ -z "$STEP" ] || log "$STEP: $(since "$STEP_START") s"
    STEP=""
}
step() {
    end_step
    STEP=$1
    STEP_START=$(now)
    log "-- $STEP"
}

if [ -n "${COMPOSE:-}" ]; then
    read -r -a COMPOSE_CMD <<<"$COMPOSE"
elif "$DOCKER" compose version >/dev/null 2>&1; then
    COMPOSE_CMD=("$DOCKER" compose)
elif command -v docker-compose >/dev/null 2>&1; then
    COMPOSE_CMD=(docker-compose)
else
    fail "no compose: install the Docker Compose plugin or set COMPOSE"
fi
compose() { "${COMPOSE_CMD[@]}" -p "$PROJECT" -f docker-compose.yml "$@"; }

on_exit() {
    local status=$?
    if [ "$status" -ne 0 ]; then
        log "failed during: ${STEP:-?}"
        if [ "${UP:-0}" = 1 ]; then
            compose ps -a >&2 || true
            compose logs --no-color --tail 40 >&2 || true
        fi
    fi
    if [ "${KEEP:-0}" = 1 ]; then
        log "KEEP=1: the stack is still up (${COMPOSE_CMD[*]} -p $PROJECT down -v)"
    elif [ "${UP:-0}" = 1 ]; then
        step "down -v"
        compose down -v --remove-orphans >&2 || status=1
    fi
    end_step
    log "total: $(since "$START") s, exit $status"
    exit "$status"
}
trap on_exit EXIT

# curl: -f fails on HTTP errors, -sS is quiet but for errors.
http() { curl -fsS --max-time 10 "$@"; }

# One field of a JSON document on stdin: json FIELD [FIELD...] walks into objects and lists.
json() {
    python3 -c 'import json, sys
value = json.load(sys.stdin)
for key in sys.argv[1:]:
    value = value[int(key)] if isinstance(value, list) else value[key]
print(value if isinstance(value, str) else json.dumps(value))' "$@"
}

# The recommended item ids of a /recommend answer on stdin, one a line.
item_ids() {
    python3 -c 'import json, sys
print("\n".join(item["item_id"] for item in json.load(sys.stdin)["items"]))'
}

# Wait until `$@` succeeds, at most TIMEOUT_S seconds.
wait_for() {
    local what=$1 deadline=$((SECONDS + TIMEOUT_S))
    shift
    until "$@"; do
        [ "$SECONDS" -lt "$deadline" ] || fail "$what: not within ${TIMEOUT_S} s"
        sleep 0.5
    done
}

api_health() {
    local id
    id=$(compose ps -q api)
    [ -n "$id" ] || return 1
    [ "$("$DOCKER" inspect --format '{{.State.Health.Status}}' "$id")" = healthy ]
}

step "preflight"
command -v curl >/dev/null || fail "curl not found"
command -v python3 >/dev/null || fail "python3 not found (it reads the JSON answers)"
engine=$("$DOCKER" info --format 'engine {{.ServerVersion}}, {{.NCPU}} CPUs') \
    || fail "no Docker engine answers ($DOCKER info)"
log "$engine"
log "compose: $("${COMPOSE_CMD[@]}" version | head -n 1)"
if curl -s --max-time 2 -o /dev/null "$URL"; then
    fail "something already answers on $URL: stop it first"
fi
compose config --quiet || fail "docker-compose.yml does not validate"

if [ "${SKIP_BUILD:-0}" != 1 ]; then
    build_args=()
    [ -n "${BASE_IMAGE:-}" ] && build_args+=(--build-arg "BASE_IMAGE=$BASE_IMAGE")
    [ -n "${TORCH_INDEX_URL:-}" ] && build_args+=(--build-arg "TORCH_INDEX_URL=$TORCH_INDEX_URL")
    read -r -a extra <<<"${BUILD_FLAGS:-}"
    step "build $API_IMAGE (target runtime)"
    "$DOCKER" build "${build_args[@]}" "${extra[@]}" --target runtime -t "$API_IMAGE" . >&2
    step "build $TRAIN_IMAGE (target train)"
    "$DOCKER" build "${build_args[@]}" "${extra[@]}" --target train -t "$TRAIN_IMAGE" . >&2
fi
"$DOCKER" image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' \
    | grep -E "^($API_IMAGE|$TRAIN_IMAGE) " >&2 || fail "images $API_IMAGE, $TRAIN_IMAGE missing"
# The serving image imports the service and holds no torch (exit 3 when it does).
"$DOCKER" run --rm --entrypoint python "$API_IMAGE" -c 'import importlib.util, sys
import service.app
sys.exit(3 if importlib.util.find_spec("torch") else 0)' \
    || fail "$API_IMAGE: the service does not import, or torch is in the serving image"

# compose waits for redis to be healthy and the trainer to exit 0 before it starts the API.
step "up -d (redis, trainer: sample, train, export; api)"
UP=1
compose up -d --no-build >&2
trainer=$(compose ps -a -q trainer)
[ "$("$DOCKER" inspect --format '{{.State.ExitCode}}' "$trainer")" = 0 ] \
    || fail "the trainer did not exit 0"

step "wait for the API to be healthy"
wait_for "api healthy" api_health
ready=$(http "$URL/readyz")
version=$(json parts artifact version <<<"$ready")
log "ready, serving version $version"

step "POST an interaction, GET a recommendation"
# An item of the model: the first one recommended to a user nobody has seen yet.
item=$(http "$URL/recommend/$USER_ID?k=1" | json items 0 item_id)
posted=$(http -X POST "$URL/interactions" -H 'content-type: application/json' \
    -d "{\"user_id\": \"$USER_ID\", \"item_id\": \"$item\"}")
[ "$(json accepted <<<"$posted")" = 1 ] || fail "interaction not accepted: $posted"
answer=$(http "$URL/recommend/$USER_ID?k=5&explain=true")
ids=$(item_ids <<<"$answer")
log "POST /interactions {$USER_ID, $item} -> $posted"
log "GET /recommend/$USER_ID?k=5 -> source $(json source <<<"$answer"): $(paste -sd ' ' <<<"$ids")"
log "  the first because: $(json items 0 because <<<"$answer")"
[ "$(json source <<<"$answer")" = history ] || fail "the posted interaction was not used"
[ "$(wc -l <<<"$ids")" -eq 5 ] || fail "expected 5 items"
grep -qxF "$item" <<<"$ids" && fail "the posted (seen) item $item was recommended"

step "retrain (train-demo --force) into the artifacts volume"
compose run --rm -T trainer train-demo --out /artifacts --force >&2

step "wait for the API to serve the new version (polling /recommend)"
served() {
    local got
    got=$(http "$URL/recommend/$USER_ID?k=5") || fail "a request failed during the reload"
    new_version=$(json model_version <<<"$got")
    [ "$new_version" != "$version" ]
}
wait_for "hot reload" served
log "reloaded: $version -> $new_version"
[ "$(http "$URL/readyz" | json parts artifact version)" = "$new_version" ] \
    || fail "/readyz does not report $new_version"
