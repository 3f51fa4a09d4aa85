#!/bin/sh
# The one entrypoint of the relrec images (Dockerfile, docker-compose.yml, deploy/k8s). The tests
# run this same file outside containers (tests/deploy/test_entrypoint.py).
#
#   serve [FLAGS]          exec `relrec serve FLAGS`; exec, so that SIGTERM reaches uvicorn,
#                          which stops accepting, drains in-flight requests and exits
#   train-demo [--out DIR] [--force] [--users N] [--items N] [--epochs N] [--dim N]
#              [--workdir DIR]
#                          the one-shot trainer of `docker compose up`: relrec sample -> relrec
#                          train --final (HLR, small, refit on everything) -> relrec export
#                          into DIR (default /artifacts).
#                          Does nothing when DIR/current exists, unless --force.
#   retrain --out DIR [--base CSV] [--workdir DIR] [-- TRAIN_FLAGS]
#                          the scheduled job: relrec export-interactions (the durable log at
#                          RELREC_HISTORY_URL), appended to the base log CSV when given, ->
#                          relrec train TRAIN_FLAGS -> relrec export into DIR
#   healthcheck [URL]      exit 0 when URL (default http://127.0.0.1:8000/healthz) answers 2xx
#   anything else          relrec ARGS: export, train, sample, export-interactions, ...
#
# ENTRYPOINT_DRY_RUN=1 prints each relrec command instead of running it, one per line with its
# arguments separated by tabs: the tests parse those lines with relrec's own argparse parsers.
set -eu

TAB=$(printf '\t')

log() { printf 'relrec-entrypoint: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 2; }
dry() { [ "${ENTRYPOINT_DRY_RUN:-0}" = 1 ]; }

# Run a command, or print it (tab separated) under ENTRYPOINT_DRY_RUN=1.
run() {
    if dry; then
        (IFS=$TAB; printf '%s\n' "$*")
    else
        log "$*"
        "$@"
    fi
}

# Like run, but replaces this shell: the command becomes the container's main process.
run_exec() {
    if dry; then
        run "$@"
        exit 0
    fi
    exec "$@"
}

usage() {
    sed -n '2,21s/^# \{0,1\}//p' "$0" >&2
    exit "${1:-2}"
}

# A scratch directory that is removed on exit, unless the caller named one.
make_workdir() {
    if [ -n "$workdir" ]; then
        mkdir -p "$workdir"
    else
        workdir=$(mktemp -d "${TMPDIR:-/tmp}/relrec-train.XXXXXX")
        trap 'rm -rf "$workdir"' EXIT
    fi
}

train_demo() {
    out=/artifacts force=0 users=2000 items=1000 epochs=5 dim=32 workdir=""
    while [ $# -gt 0 ]; do
        case $1 in
            --out | --users | --items | --epochs | --dim | --workdir)
                [ $# -ge 2 ] || die "train-demo: $1 needs a value" ;;
        esac
        case $1 in
            --out) out=$2; shift 2 ;;
            --users) users=$2; shift 2 ;;
            --items) items=$2; shift 2 ;;
            --epochs) epochs=$2; shift 2 ;;
            --dim) dim=$2; shift 2 ;;
            --workdir) workdir=$2; shift 2 ;;
            --force) force=1; shift ;;
            *) die "train-demo: unknown option $1 (see --help)" ;;
        esac
    done
    if [ -e "$out/current" ] && [ "$force" = 0 ]; then
        log "$out/current exists: nothing to train (--force trains and exports a new version)"
        return 0
    fi
    make_workdir
    run relrec sample --out "$workdir/sample.csv" --users "$users" --items "$items"
    # Small and quick: a demo model for `docker compose up`, not a tuned one.
    run relrec train --data "$workdir/sample.csv" --model hlr --out "$workdir/run" \
        --dim "$dim" --n-memory 8 --l-max 20 --epochs "$epochs" --k-core 5 --lr 0.01 \
        --eval-users 500 --no-progress --set eval.sampled=false --final
    run relrec export "$workdir/run" --out "$out"
}

# Append the exported log to the base log; both must be the CSV `relrec sample` and
# `relrec export-interactions` write (header user,item,rating,timestamp).
merge_logs() {
    base=$1 online=$2 merged=$3
    [ -f "$base" ] || die "retrain: base log $base not found"
    header=$(head -n 1 "$online" | tr -d '\r')
    if [ "$(head -n 1 "$base" | tr -d '\r')" != "$header" ]; then
        die "retrain: $base must start with the header '$header'"
    fi
    # awk, not cat: a base file without a final newline would glue two rows together; line
    # ends become LF (export-interactions writes the csv module's CRLF)
    awk 'FNR == 1 && NR != 1 { next } { sub(/\r$/, ""); print }' "$base" "$online" >"$merged"
}

retrain() {
    out="" base="" workdir=""
    while [ $# -gt 0 ]; do
        case $1 in
            --out | --base | --workdir)
                [ $# -ge 2 ] || die "retrain: $1 needs a value" ;;
        esac
        case $1 in
            --out) out=$2; shift 2 ;;
            --base) base=$2; shift 2 ;;
            --workdir) workdir=$2; shift 2 ;;
            --) shift; break ;;
            *) die "retrain: unknown option $1 (relrec train flags go after --)" ;;
        esac
    done
    [ -n "$out" ] || die "retrain: --out DIR is required"
    make_workdir
    data=$workdir/online.csv
    run relrec export-interactions --out "$data"
    if [ -n "$base" ]; then
        dry || merge_logs "$base" "$data" "$workdir/data.csv"
        data=$workdir/data.csv
    fi
    run relrec train --data "$data" --out "$workdir/run" "$@"
    run relrec export "$workdir/run" --out "$out"
}

healthcheck() {
    exec python - "${1:-http://127.0.0.1:8000/healthz}" <<'EOF'
import sys
import urllib.request

try:
    with urllib.request.urlopen(sys.argv[1], timeout=4) as response:
        sys.exit(0 if 200 <= response.status < 300 else 1)
except Exception as exc:
    sys.stderr.write(f"healthcheck {sys.argv[1]}: {exc}\n")
    sys.exit(1)
EOF
}

[ $# -gt 0 ] || usage
command=$1
shift
case $command in
    serve) run_exec relrec serve "$@" ;;
    train-demo) train_demo "$@" ;;
    retrain) retrain "$@" ;;
    healthcheck) healthcheck "$@" ;;
    -h | --help | help) usage 0 ;;
    *) run_exec relrec "$command" "$@" ;;
esac
