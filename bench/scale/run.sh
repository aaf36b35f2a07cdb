#!/usr/bin/env bash
# Scale: N HTTP targets checked every second against one local nginx (a
# new connection per check for both tools), healer (`http` monitor and
# diagnoser, plugins in their workers) and Monit (`set daemon 1`), one
# after the other on the same server, in one run. For each: CPU (of one
# core, healer's plugin workers included), RSS (the same, summed) and
# PSS (pages the processes share, such as the binary healer and its worker
# both run, counted once), checks per
# second seen by nginx against N expected, and the time from start to the
# first check. Prints one table with the ratios.
#
# Needs: nginx, monit (installed with apt-get when missing), a release build.
# Loopback only; every run is bounded (WARMUP + MEASURE seconds).
# Usage: bench/scale/run.sh [N ...]      (default: 100 1000)
#        MONIT_MAX=1000 WARMUP=10 MEASURE=30 DIAGNOSE=1 (0: no http diagnoser)
#        ISOLATION=in-process (the http package loaded into healer, no worker)
#        WORKERS=N ([plugins] workers: worker processes per package)
# For healer it also prints its own view at the end of the window: the
# longest gap between two checks of one target, `/healthz` (ok, or behind
# with the late window), the metrics of late checks and the events that
# said healer fell behind or caught up (from its log), and the open issues
# (a healthy server: none may open). No event log: with one, every check
# is news and crosses from the worker, which is not what is measured.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
work="$root/target/bench-scale"
sizes=("${@:-100 1000}")
read -r -a sizes <<< "${sizes[*]}"
warmup=${WARMUP:-10}
measure=${MEASURE:-30}
monit_max=${MONIT_MAX:-1000}
port=${PORT:-18480}
. "$here/../lib.sh"
need nginx nginx
need monit monit
nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)
monit_bin=$(command -v monit || echo /usr/bin/monit)

(cd "$root" && cargo build --release -q -p healer -p healer-plugin-http)
rm -rf "$work"; mkdir -p "$work/plugins" "$work/nginx/logs"
install -m 0644 "$root/target/release/libhealer_plugin_http.so" "$work/plugins/"
chmod 0755 "$work/plugins"

nginx_conf "$work/nginx" "$port" timed
"$nginx_bin" -p "$work/nginx" -c "$work/nginx/nginx.conf"
cleanup() {
    [ -n "${tool_pid:-}" ] && kill "$tool_pid" 2>/dev/null || true
    "$nginx_bin" -p "$work/nginx" -c "$work/nginx/nginx.conf" -s stop 2>/dev/null || true
}
trap cleanup EXIT
ticks=$(getconf CLK_TCK)

requests() { wc -l < "$work/nginx/logs/access.log"; }

# run LABEL N COMMAND...: starts the tool, waits for its first check, then
# measures; prints "label n cpu% rss_mb checks_per_s first_check_s".
run() {
    local label=$1 n=$2; shift 2
    : > "$work/nginx/logs/access.log"; "$nginx_bin" -p "$work/nginx" -c "$work/nginx/nginx.conf" -s reopen
    local start; start=$(date +%s.%N)
    setsid "$@" > "$work/$label-$n.out" 2>&1 &
    tool_pid=$!
    local first=""
    for _ in $(seq 600); do
        if [ "$(requests)" -gt 0 ]; then first=$(echo "$(date +%s.%N) - $start" | bc); break; fi
        sleep 0.05
    done
    sleep "$warmup"
    local c0 r0 t0 c1 r1 t1
    c0=$(cpu_of "$tool_pid"); r0=$(requests); t0=$(date +%s.%N)
    sleep "$measure"
    c1=$(cpu_of "$tool_pid"); r1=$(requests); t1=$(date +%s.%N)
    local rss pss; rss=$(rss_of "$tool_pid"); pss=$(pss_of "$tool_pid")
    if [ "$label" = healer ]; then
        {
            echo "healer $n: /healthz $(curl -s -m 5 -w ' (HTTP %{http_code})' "http://127.0.0.1:$api_port/healthz")"
            curl -s -m 5 "http://127.0.0.1:$api_port/metrics" | grep -E '^healer_(checks_began|checks_late|behind|behind_by_seconds|issues)[_ {]' | sed "s/^/healer $n: /"
            echo "healer $n: said: $(grep -oE 'healer (is behind|caught up)' "$work/healer-$n.log" 2>/dev/null | sort | uniq -c | tr '\n' ' ')"
        } >> "$work/views"
    fi
    kill -TERM -- "-$tool_pid" 2>/dev/null || kill "$tool_pid" 2>/dev/null || true
    wait "$tool_pid" 2>/dev/null || true
    tool_pid=""
    local secs; secs=$(echo "$t1 - $t0" | bc)
    # Each target's checks inside the window: the real period, and the
    # share of intervals on time (at most 10 % over 1 s).
    local periods; periods=$(python3 "$root/bench/slow/periods.py" "$work/nginx/logs/access.log" "$t0" "$t1" 1)
    local on_time median
    on_time=$(sed -n 's/.*on_time=\([0-9.]*\).*/\1/p' <<< "$periods")
    median=$(sed -n 's/.*median=\([0-9.]*\).*/\1/p' <<< "$periods")
    echo "$label $n: $periods" >> "$work/views"
    printf '%s %s %.1f %.1f %.0f %s %s %s %.1f\n' "$label" "$n" \
        "$(echo "100 * ($c1 - $c0) / $ticks / $secs" | bc -l)" \
        "$(echo "$rss / 1024" | bc -l)" \
        "$(echo "($r1 - $r0) / $secs" | bc -l)" \
        "${first:-none}" "${on_time:--}" "${median:--}" "$(echo "$pss / 1024" | bc -l)"
}

results=()
api_port=$((port + 1))
: > "$work/views"
printf 'anomalies: []\n' > "$work/reflex_map.yml"
for n in "${sizes[@]}"; do
    conf="$work/healer-$n.toml"
    {
        printf '[healer]\ninterval = "1s"\ntimeout = "5s"\nplugins_dir = "%s/plugins"\nstate_dir = "%s/state-%s"\nlog_file = "%s/healer-%s.log"\nlog_level = "info"\n' \
            "$work" "$work" "$n" "$work" "$n"
        printf '[intake]\nbind = "127.0.0.1:%s"\nreflex_map = "%s/reflex_map.yml"\n' "$api_port" "$work"
        [ -z "${ISOLATION:-}${WORKERS:-}" ] || printf '[plugins]\n'
        [ -z "${ISOLATION:-}" ] || printf 'isolation = "%s"\n' "$ISOLATION"
        [ -z "${WORKERS:-}" ] || printf 'workers = %s\n' "$WORKERS"
        for i in $(seq 1 "$n"); do
            printf '[[target]]\nname = "t%d"\nmonitor = { plugin = "http", url = "http://127.0.0.1:%d/t%d", timeout = "4s" }\n' "$i" "$port" "$i"
            [ "${DIAGNOSE:-1}" = 0 ] || printf '[[target.diagnose]]\nplugin = "http"\n'
        done
    } > "$conf"
    check_start=$(date +%s.%N)
    "$root/target/release/healer" check --config "$conf" > /dev/null
    check_s=$(echo "$(date +%s.%N) - $check_start" | bc)
    line=$(run healer "$n" "$root/target/release/healer" run --config "$conf")
    results+=("$line $check_s")
    if [ "$n" -le "$monit_max" ]; then
        mconf="$work/monitrc-$n"
        {
            printf 'set daemon 1\nset logfile %s/monit-%s.log\nset pidfile %s/monit-%s.pid\nset idfile %s/monit-%s.id\nset statefile %s/monit-%s.state\n' \
                "$work" "$n" "$work" "$n" "$work" "$n" "$work" "$n"
            for i in $(seq 1 "$n"); do
                printf 'check host t%d with address 127.0.0.1\n  if failed port %d protocol http request "/t%d" then alert\n' "$i" "$port" "$i"
            done
        } > "$mconf"
        chmod 0600 "$mconf"
        results+=("$(run monit "$n" "$monit_bin" -I -c "$mconf") -")
    fi
done

echo
echo "scale: $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPUs, warm-up ${warmup}s, measured ${measure}s"
printf '%-7s %6s %8s %8s %8s %10s %9s %9s %8s %12s %11s %13s %12s\n' tool N "CPU %" "RSS MB" "PSS MB" "checks/s" "of N/s" "on time" "period" "1st check s" "check s" "µs CPU/check" "KB RSS/target"
for line in "${results[@]}"; do
    read -r label n cpu rss rate first on_time median pss check <<< "$line"
    printf '%-7s %6s %8s %8s %8s %10s %8.1f%% %8s%% %7ss %12.2f %11s %13.1f %12.1f\n' "$label" "$n" "$cpu" "$rss" "$pss" "$rate" \
        "$(echo "100 * $rate / $n" | bc -l)" "$on_time" "$median" "$first" "$check" \
        "$(echo "10000 * $cpu / ($rate + 0.0001)" | bc -l)" "$(echo "1024 * $rss / $n" | bc -l)"
done
echo
cat "$work/views"
echo
for n in "${sizes[@]}"; do
    h=""; m=""
    for line in "${results[@]}"; do
        read -r label ln cpu rss _ <<< "$line"
        [ "$ln" = "$n" ] || continue
        [ "$label" = healer ] && h="$cpu $rss"
        [ "$label" = monit ] && m="$cpu $rss"
    done
    if [ -n "$h" ] && [ -n "$m" ]; then
        read -r hc hr <<< "$h"; read -r mc mr <<< "$m"
        printf 'N=%s: healer/Monit CPU %.1fx, RSS %.1fx\n' "$n" \
            "$(echo "$hc / ($mc + 0.0001)" | bc -l)" "$(echo "$hr / ($mr + 0.0001)" | bc -l)"
    fi
done
# Growth: what one more target costs between consecutive sizes (the
# daemon's fixed part cancels out), for healer.
prev=""
for line in "${results[@]}"; do
    read -r label n cpu rss rate _ <<< "$line"
    [ "$label" = healer ] || continue
    if [ -n "$prev" ]; then
        read -r pn pcpu prss prate <<< "$prev"
        printf 'healer %s -> %s targets: %.1f µs CPU per extra check, %.1f KB RSS per extra target\n' "$pn" "$n" \
            "$(echo "10000 * ($cpu - $pcpu) / ($rate - $prate + 0.0001)" | bc -l)" \
            "$(echo "1024 * ($rss - $prss) / ($n - $pn)" | bc -l)"
    fi
    prev="$n $cpu $rss $rate"
done
