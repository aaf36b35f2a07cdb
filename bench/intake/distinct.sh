#!/usr/bin/env bash
# /anomaly with a distinct anomaly name in every request, every action
# recorded: healer's intake against the seed's FastAPI service under the
# same wrk load (distinct.lua: bench.<thread>.<counter>.high; one reflex,
# the glob bench.*.high of reflex_map_distinct.yml, matches them all, in
# both). After each load it waits (at most SETTLE s) until the records stop
# growing, stops the service, and counts what was recorded against what wrk
# sent:
#   seed      its CRITICAL `auto_healer_action` log lines (all it does);
#   would_run healer with `[intake] actions = false` (the kill switch): each
#             report is a `would_run` event, logged at CRITICAL as
#             auto_healer_action and stored (events and runs tables of
#             state_dir/healer.db). The seed's equivalent: record, run nothing;
#   workflow  healer with actions on: each report starts a real workflow run
#             (one `command` step, argv ["true"], in the plugin worker):
#             workflow_started, workflow_step, workflow_finished;
#   dry_run   healer, POST /anomaly?dry_run=true: answers what would run and
#             records nothing (by design), shown for the cost of matching only.
# Prints a table: requests/s, p50, p99, recorded/sent, CPU, RSS, ratio vs seed.
#
# Needs wrk (apt-get install -y wrk), sqlite3 (or python3's sqlite3) and
# Python 3 with venv (fastapi, uvicorn, pyyaml go into
# target/bench-intake/venv, shared with run.sh). Loopback only.
# Usage: bench/intake/distinct.sh [seed] [would_run] [workflow] [dry_run]
#        (default: all four, in that order)
#   HEALER_BIN_DIR=DIR  healer and libhealer_plugin_command.so from DIR
#                       (default: cargo build --release, target/release)
#   DURATION=10s CONNECTIONS=50 THREADS=2   the wrk load of each path
#   WORKFLOW_DURATION=3s  the load of the workflow path (its runs pile up)
#   SETTLE=60           most seconds to wait for the records to land
#   KEEP=1              keep each healer path's store and logs (they are
#                       large: ~700 B of store and ~700 B of log per report)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
work="$root/target/bench-intake/distinct"
venv="$root/target/bench-intake/venv"
read -r -a paths <<< "${*:-seed would_run workflow dry_run}"
duration=${DURATION:-10s}
workflow_duration=${WORKFLOW_DURATION:-3s}
connections=${CONNECTIONS:-50}
threads=${THREADS:-2}
settle=${SETTLE:-60}
seed_port=${SEED_PORT:-8011}
healer_port=${HEALER_PORT:-8012}
. "$here/../lib.sh"
need wrk wrk

if [ -n "${HEALER_BIN_DIR:-}" ]; then
    bin=$(cd "$HEALER_BIN_DIR" && pwd)
else
    (cd "$root" && cargo build --release -q -p healer -p healer-plugin-command)
    bin="$root/target/release"
fi
mkdir -p "$root/target/bench-intake"
if [ ! -x "$venv/bin/uvicorn" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q fastapi uvicorn pyyaml
fi
rm -rf "$work"; mkdir -p "$work/plugins"
install -m 0644 "$bin/libhealer_plugin_command.so" "$work/plugins/"
chmod 0755 "$work/plugins"

server=""
cleanup() { [ -n "$server" ] && kill -TERM -- "-$server" 2>/dev/null || true; }
trap cleanup EXIT
ticks=$(getconf CLK_TCK)

wait_http() { # url
    for _ in $(seq 200); do curl -s -o /dev/null "$1" && return 0; sleep 0.05; done
    echo "distinct.sh: $1 never answered" >&2; return 1
}
# Waits until the files stop growing (unchanged for 2 s), at most SETTLE s;
# prints the seconds waited until the last change.
settled() {
    local start last size then=-1 now
    start=$(date +%s.%N); last=$start
    for _ in $(seq $((settle * 10))); do
        size=$(stat -c %s "$@" 2>/dev/null | paste -sd+ - | bc)
        now=$(date +%s.%N)
        if [ "$size" != "$then" ]; then then=$size; last=$now
        elif [ "$(echo "$now - $last >= 2" | bc)" = 1 ]; then break; fi
        sleep 0.1
    done
    echo "$last - $start" | bc
}
stop() { # pid: SIGTERM its group, wait at most 30 s
    kill -TERM -- "-$1" 2>/dev/null || true
    for _ in $(seq 300); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
    server=""
}
children() { # CPU seconds of the children this shell has reaped (wrk); not in $(...)
    times > "$work/times"
    tail -1 "$work/times" | awk '{n = 0; for (i = 1; i <= 2; i++) { split($i, p, "m"); n += p[1] * 60 + p[2] } print n}' > "$work/children"
}
busy() { # jiffies busy and total, all CPUs
    awk '/^cpu / {print $2 + $3 + $4 + $7 + $8 + $9, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9}' /proc/stat
}
ms() { # wrk's latency (850.00us, 1.20ms, 1.02s, 1.00m) in ms
    awk '{v=$1; u=$1; sub(/[a-z]+$/, "", v); sub(/^[0-9.]+/, "", u);
          f = (u=="us") ? 0.001 : (u=="ms") ? 1 : (u=="s") ? 1000 : (u=="m") ? 60000 : 1;
          printf "%.2f", v * f}' <<< "$1"
}
# load LABEL URL DURATION: wrk with distinct.lua against the running
# $server; sets rps p50 p99 sent generated cpu wrk_cpu host rss errors.
load() {
    local label=$1 url=$2 d=$3 c0 c1 t0 t1 b0 b1 w0 w1
    c0=$(cpu_of "$server"); t0=$(date +%s.%N); b0=$(busy); children; w0=$(cat "$work/children")
    timeout 120 wrk -t"$threads" -c"$connections" -d"$d" --latency -s "$here/distinct.lua" "$url" > "$work/wrk-$label.txt"
    c1=$(cpu_of "$server"); t1=$(date +%s.%N); b1=$(busy); children; w1=$(cat "$work/children")
    wrk_cpu=$(echo "100 * ($w1 - $w0) / ($t1 - $t0)" | bc -l | xargs printf '%.0f')
    host=$(echo "$b0 $b1" | awk -v n="$(nproc)" '{printf "%.0f", 100 * n * ($3 - $1) / ($4 - $2)}')
    rss=$(memory_of "$server" VmRSS status)
    rps=$(awk '/^Requests\/sec/ {printf "%.0f", $2}' "$work/wrk-$label.txt")
    p50=$(ms "$(awk '$1 == "50%" {print $2}' "$work/wrk-$label.txt")")
    p99=$(ms "$(awk '$1 == "99%" {print $2}' "$work/wrk-$label.txt")")
    sent=$(awk '/requests in/ {print $1}' "$work/wrk-$label.txt")
    generated=$(sed -n 's/^distinct: generated=\([0-9]*\).*/\1/p' "$work/wrk-$label.txt")
    errors=$(awk '/Non-2xx|Socket errors/' "$work/wrk-$label.txt" | tr -s ' ' | paste -sd';' -)
    cpu=$(echo "100 * ($c1 - $c0) / $ticks / ($t1 - $t0)" | bc -l | xargs printf '%.0f')
    echo "== $label: $rps req/s, p50 $p50 ms, p99 $p99 ms, $sent completed ($generated built), CPU $cpu % (wrk $wrk_cpu %, host $host % of $(($(nproc) * 100))), RSS $((rss / 1024)) MB ${errors:+, $errors}"
}
sql() { # DB QUERY
    if command -v sqlite3 > /dev/null; then sqlite3 -separator ' ' "$1" "$2"
    else python3 -c 'import sqlite3,sys; [print(*r) for r in sqlite3.connect(sys.argv[1]).execute(sys.argv[2])]' "$1" "$2"; fi
}

rows=()
run_seed() {
    REFLEX_MAP="$here/reflex_map_distinct.yml" setsid "$venv/bin/uvicorn" --app-dir "$here" seed_autohealer:app \
        --port "$seed_port" --log-level warning > "$work/seed.log" 2>&1 &
    server=$!
    wait_http "http://127.0.0.1:$seed_port/"
    load seed "http://127.0.0.1:$seed_port/anomaly" "$duration"
    local waited; waited=$(settled "$work/seed.log")
    stop "$server"
    local lines distinct
    lines=$(grep -c "'event': 'auto_healer_action'" "$work/seed.log" || true)
    distinct=$(grep -o "'anomaly': 'bench\.[0-9]*\.[0-9]*\.high'" "$work/seed.log" | sort -u | wc -l)
    echo "   seed log: $lines auto_healer_action lines, $distinct distinct names; settled ${waited}s after the load"
    rows+=("seed $rps $p50 $p99 $distinct $generated $cpu $wrk_cpu $host $((rss / 1024)) - $waited")
}

run_healer() { # PATH
    local path=$1 actions=true url="http://127.0.0.1:$healer_port/anomaly" d=$duration
    [ "$path" = would_run ] && actions=false
    [ "$path" = dry_run ] && url="$url?dry_run=true"
    [ "$path" = workflow ] && d=$workflow_duration
    local conf="$work/healer-$path.toml" state="$work/state-$path"
    cat > "$conf" <<CONF
# distinct.sh, path $path: the reflex map's glob bench.*.high, no rate limit
# (max_runs_per_minute = 0), so every distinct name is acted on.
[healer]
plugins_dir = "$work/plugins"
log_file = "$work/healer-$path.log"
state_dir = "$state"

[intake]
bind = "127.0.0.1:$healer_port"
reflex_map = "$here/reflex_map_distinct.yml"
max_runs_per_minute = 0
actions = $actions

[workflow.bench_distinct_action]
steps = [{ plugin = "command", argv = ["true"] }]
CONF
    setsid "$bin/healer" --config "$conf" run > /dev/null 2> "$work/healer-$path.stderr" &
    server=$!
    wait_http "http://127.0.0.1:$healer_port/healthz"
    load "$path" "$url" "$d"
    local waited; waited=$(settled "$work/healer-$path.log" "$state"/healer.db*)
    local peak; peak=$(memory_of "$server" VmHWM status)
    stop "$server"
    local db="$state/healer.db" recorded
    echo "   events (store): $(sql "$db" "SELECT group_concat(event || '=' || n || ' (' || d || ' names)', ', ') FROM (SELECT event, count(*) n, count(DISTINCT subject) d FROM events WHERE event NOT IN ('started', 'stopping') GROUP BY event)")"
    echo "   runs (store): $(sql "$db" "SELECT group_concat(status || '=' || n, ', ') FROM (SELECT status, count(*) n FROM runs GROUP BY status)"); distinct names in runs: $(sql "$db" "SELECT count(DISTINCT anomaly) FROM runs")"
    echo "   healer log: $(grep -c 'event="auto_healer_action"' "$work/healer-$path.log" || true) auto_healer_action lines, $(grep -o 'anomaly="bench\.[0-9]*\.[0-9]*\.high"' "$work/healer-$path.log" | sort -u | wc -l) distinct names"
    grep -hE "flooded|fell behind|still running|dropped|degraded" "$work/healer-$path.log" | cut -c1-300 | sed 's/^/   warning: /' | head -5 || true
    echo "   settled ${waited}s after the load; peak RSS $((peak / 1024)) MB; store $(du -m "$state" | cut -f1) MB"
    case $path in
        would_run) recorded=$(sql "$db" "SELECT count(DISTINCT subject) FROM events WHERE event = 'would_run' AND subject LIKE 'bench.%'") ;;
        workflow) recorded=$(sql "$db" "SELECT count(DISTINCT subject) FROM events WHERE event = 'workflow_started' AND subject LIKE 'bench.%'")
                  echo "   workflow runs finished and recorded: $(sql "$db" "SELECT count(DISTINCT subject) FROM events WHERE event = 'workflow_finished' AND subject LIKE 'bench.%'") of $recorded started; the step failures: $(sql "$db" "SELECT group_concat(error || ' x' || n, '; ') FROM (SELECT error, count(*) n FROM runs WHERE status = 'failed' GROUP BY error)")" ;;
        *) recorded=$(sql "$db" "SELECT count(DISTINCT subject) FROM events WHERE subject LIKE 'bench.%'") ;;
    esac
    [ -n "${KEEP:-}" ] || rm -rf "$state" "$work/healer-$path.log" "$work/healer-$path.stderr"
    rows+=("healer:$path $rps $p50 $p99 $recorded $generated $cpu $wrk_cpu $host $((rss / 1024)) $((peak / 1024)) $waited")
}

for path in "${paths[@]}"; do
    case $path in
        seed) run_seed ;;
        would_run | workflow | dry_run) run_healer "$path" ;;
        *) echo "distinct.sh: unknown path $path (seed, would_run, workflow, dry_run)" >&2; exit 2 ;;
    esac
done

seed_rps=""
for row in "${rows[@]}"; do read -r label r _ <<< "$row"; [ "$label" = seed ] && seed_rps=$r; done
{
    echo
    echo "intake, distinct names: $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg), wrk -t$threads -c$connections, $duration each (workflow $workflow_duration)"
    echo "recorded/sent: distinct names recorded (seed: its log; healer: its store's history) / requests wrk built and sent"
    echo "CPU: the service's (healer's workers included) during the load, % of one core; wrk: the load generator's; host: all CPUs busy, of $(($(nproc) * 100)) (host - CPU - wrk: other work on the machine)"
    echo "settle: seconds after the load until the records stopped growing"
    printf '%-16s %9s %8s %8s %24s %6s %5s %5s %7s %8s %9s %8s\n' path "req/s" "p50 ms" "p99 ms" "recorded/sent" "CPU %" "wrk" "host" "RSS MB" "peak MB" "settle s" "vs seed"
    for row in "${rows[@]}"; do
        read -r label r a b rec sent cpu wcpu host rss peak waited <<< "$row"
        ratio="-"; [ -n "$seed_rps" ] && ratio=$(echo "$r / $seed_rps" | bc -l | xargs printf '%.1fx')
        printf '%-16s %9s %8s %8s %24s %6s %5s %5s %7s %8s %9.1f %8s\n' "$label" "$r" "$a" "$b" \
            "$rec/$sent ($(echo "100 * $rec / $sent" | bc -l | xargs printf '%.1f')%)" "$cpu" "$wcpu" "$host" "$rss" "$peak" "$waited" "$ratio"
    done
} | tee "$work/results.txt"
