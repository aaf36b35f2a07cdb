#!/usr/bin/env bash
# Slow targets: N HTTP targets that each answer after 200 ms, checked
# every second, healer (`http` monitor, its plugin in its worker) and Monit
# (`set daemon 1`), one after the other against the same server. The
# server (slow_server.py: Python asyncio, standard library only) logs the
# arrival of every request with its path, /t/<i> for target i, so the real
# period of each target's checks is read from it: the intervals between
# consecutive requests of each target within the measured window, pooled
# over all targets (median, p99, max). Also: checks/s against the N
# expected, CPU and RSS of each tool (healer's plugin workers included),
# and the server's own CPU (it must not be the bottleneck).
#
# Monit checks its services one after the other, so one cycle over N
# targets lasts about N x 200 ms, longer than the window: no target is
# checked twice in it. Its period is then computed from its achieved rate
# (N / checks per second), and marked so.
#
# Needs: monit (installed with apt-get when missing), Python 3. Loopback only; each
# tool runs WARMUP + MEASURE seconds (about 1.5 minutes in all).
# Usage: bench/slow/run.sh
#   HEALER_BIN_DIR=DIR  healer and libhealer_plugin_http.so from DIR
#                       (default: cargo build --release, target/release)
#   N=1000 DELAY=0.2 WARMUP=10 MEASURE=30 PORT=18490 TOOLS="healer monit"
#   DIAGNOSE=1          also give each target the http diagnoser (default 0)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
work="$root/target/bench-slow"
n=${N:-1000}
delay=${DELAY:-0.2}
warmup=${WARMUP:-10}
measure=${MEASURE:-30}
port=${PORT:-18490}
read -r -a tools <<< "${TOOLS:-healer monit}"
. "$here/../lib.sh"
for tool in "${tools[@]}"; do
    [ "$tool" = monit ] && need monit monit
done
monit_bin=$(command -v monit || echo /usr/bin/monit)

if [ -n "${HEALER_BIN_DIR:-}" ]; then
    bin=$(cd "$HEALER_BIN_DIR" && pwd)
else
    (cd "$root" && cargo build --release -q -p healer -p healer-plugin-http)
    bin="$root/target/release"
fi
rm -rf "$work"; mkdir -p "$work/plugins"
install -m 0644 "$bin/libhealer_plugin_http.so" "$work/plugins/"
chmod 0755 "$work/plugins"
log="$work/requests.log"

setsid python3 "$here/slow_server.py" "$port" "$log" "$delay" > "$work/server.out" 2>&1 &
server=$!
tool_pid=""
cleanup() {
    [ -n "$tool_pid" ] && kill -TERM -- "-$tool_pid" 2>/dev/null || true
    kill -TERM "$server" 2>/dev/null || true
}
trap cleanup EXIT
for _ in $(seq 100); do curl -s -o /dev/null --max-time 2 "http://127.0.0.1:$port/ready" && break; sleep 0.1; done
curl -s -o /dev/null --max-time 2 "http://127.0.0.1:$port/ready" || { echo "bench/slow: the server did not start" >&2; cat "$work/server.out" >&2; exit 1; }
ticks=$(getconf CLK_TCK)

lines() { wc -l < "$log"; }

# run LABEL COMMAND...: starts the tool, waits for its first request, warms
# up, measures; prints "label cpu% rss_mb server_cpu% first_s t0 t1".
run() {
    local label=$1; shift
    local before start first=""
    before=$(lines); start=$(date +%s.%N)
    setsid "$@" > "$work/$label.out" 2>&1 &
    tool_pid=$!
    for _ in $(seq 200); do
        if [ "$(lines)" -gt "$before" ]; then first=$(echo "$(date +%s.%N) - $start" | bc); break; fi
        sleep 0.05
    done
    sleep "$warmup"
    local c0 s0 t0 c1 s1 t1 rss
    c0=$(cpu_of "$tool_pid"); s0=$(cpu_of "$server"); t0=$(date +%s.%N)
    sleep "$measure"
    c1=$(cpu_of "$tool_pid"); s1=$(cpu_of "$server"); t1=$(date +%s.%N)
    rss=$(rss_of "$tool_pid")
    kill -TERM -- "-$tool_pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$tool_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$tool_pid" 2>/dev/null || true
    wait "$tool_pid" 2>/dev/null || true
    tool_pid=""
    local secs; secs=$(echo "$t1 - $t0" | bc)
    printf '%s %.1f %.1f %.1f %s %s %s\n' "$label" \
        "$(echo "100 * ($c1 - $c0) / $ticks / $secs" | bc -l)" \
        "$(echo "$rss / 1024" | bc -l)" \
        "$(echo "100 * ($s1 - $s0) / $ticks / $secs" | bc -l)" \
        "${first:-none}" "$t0" "$t1"
}

results=()
for tool in "${tools[@]}"; do
    case $tool in
    healer)
        conf="$work/healer.toml"
        {
            printf '[healer]\ninterval = "1s"\ntimeout = "5s"\nplugins_dir = "%s/plugins"\nstate_dir = "%s/state"\nlog_file = "%s/healer.log"\nlog_level = "warn"\n' \
                "$work" "$work" "$work"
            for i in $(seq 1 "$n"); do
                printf '[[target]]\nname = "t%d"\nmonitor = { plugin = "http", url = "http://127.0.0.1:%d/t/%d", timeout = "4s" }\n' "$i" "$port" "$i"
                [ "${DIAGNOSE:-0}" = 0 ] || printf '[[target.diagnose]]\nplugin = "http"\n'
            done
        } > "$conf"
        "$bin/healer" check --config "$conf" > /dev/null
        results+=("$(run healer "$bin/healer" run --config "$conf")")
        ;;
    monit)
        mconf="$work/monitrc"
        {
            printf 'set daemon 1\nset logfile %s/monit.log\nset pidfile %s/monit.pid\nset idfile %s/monit.id\nset statefile %s/monit.state\n' \
                "$work" "$work" "$work" "$work"
            for i in $(seq 1 "$n"); do
                printf 'check host t%d with address 127.0.0.1\n  if failed port %d protocol http request "/t/%d" then alert\n' "$i" "$port" "$i"
            done
        } > "$mconf"
        chmod 0600 "$mconf"
        results+=("$(run monit "$monit_bin" -I -c "$mconf")")
        ;;
    *) echo "bench/slow: unknown tool $tool (healer, monit)" >&2; exit 2 ;;
    esac
done

{
    echo
    echo "slow targets: $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg), N=$n answering after ${delay}s, interval 1 s, warm-up ${warmup}s, measured ${measure}s"
    echo "period: intervals between consecutive requests of one target inside the window, pooled (Monit: none fit, so N / (checks/s), marked *)"
    printf '%-7s %10s %8s %12s %12s %12s %9s %8s %8s %11s %11s\n' tool "checks/s" "of N/s" "period p50" "period p99" "period max" "targets" "CPU %" "RSS MB" "server CPU" "1st check s"
    for line in "${results[@]}"; do
        read -r label cpu rss scpu first t0 t1 <<< "$line"
        stats=$(python3 "$here/periods.py" "$log" "$t0" "$t1")
        echo "$label $stats" >> "$work/periods.txt"
        declare -A s=()
        for kv in $stats; do s[${kv%%=*}]=${kv#*=}; done
        p50=${s[median]}; p99=${s[p99]}; max=${s[max]}
        if [ "${s[intervals]}" = 0 ]; then
            p50="$(echo "$n / ${s[rate]}" | bc -l | xargs printf '%.1f')*"; p99="-"; max="-"
        fi
        printf '%-7s %10s %7.1f%% %12s %12s %12s %9s %8s %8s %10s%% %11s\n' "$label" "${s[rate]}" \
            "$(echo "100 * ${s[rate]} / $n" | bc -l)" "$p50" "$p99" "$max" "${s[targets]}" "$cpu" "$rss" "$scpu" "$first"
    done
} | tee "$work/results.txt"
