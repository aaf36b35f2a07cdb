#!/usr/bin/env bash
# Restart: healer side by side with supervisord and Monit, in one run, on the
# same supervised processes, one tool at a time:
#   1. crash to restart: `kill -9` at a random point of the 1 s cycle, then
#      polling every 1 ms until the pidfile names a new live process
#      (healer with its pidfd watch, healer polling only, supervisord, Monit);
#   2. burst: BURST processes killed in the same instant; the time until all
#      run again, and whether each was started exactly once; beside it, its
#      floor: the same BURST start commands (the argv of healer's config)
#      started at once with no healer, and the time until all run;
#   3. hang to restart: SIGSTOP of a tiny HTTP server, in steady state and
#      0-100 ms after a restart; the time until a new, running process
#      replaces it (healer by its HTTP timeout, and by the process
#      monitor's `stopped_for`).
# Prints the date, the machine, the versions, the raw figures and one
# markdown table (also written to target/bench-restart/report.md).
#
# Needs: monit, supervisor (installed with apt-get when missing), perl
# (Debian's perl-base), python3 (a dependency of supervisor). Loopback only;
# everything lives under target/bench-restart/ (own control files, sockets,
# pidfiles, logs); every wait is bounded. About 8 minutes on 2 cores.
#
# Usage: bench/restart/run.sh
#   HEALER_BIN_DIR=DIR  healer and libhealer_plugin_{process,command,http}.so
#                       (default: cargo build --release of those, target/release)
#   RUNS=10 BURST=100 BURST_RUNS=7 HANG_RUNS=5 HANG_LIMIT=10 BURST_DEFAULT=1
#   (0: skip the extra healer burst at the default max_concurrent_recoveries
#   = 4); BURST_RUNS bursts per tool (Monit: one, it takes some 20 s) and as
#   many runs of the floor
set -euo pipefail
umask 022
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
work="$root/target/bench-restart"
runs=${RUNS:-10}
burst=${BURST:-100}
burst_runs=${BURST_RUNS:-7}
hang_runs=${HANG_RUNS:-5}
hang_limit=${HANG_LIMIT:-10}
burst_default=${BURST_DEFAULT:-1}
command_line="${HEALER_BIN_DIR:+HEALER_BIN_DIR=$HEALER_BIN_DIR }RUNS=$runs BURST=$burst BURST_RUNS=$burst_runs HANG_RUNS=$hang_runs HANG_LIMIT=$hang_limit BURST_DEFAULT=$burst_default bash bench/restart/run.sh"
started_at=$SECONDS

# --- the peers, from Debian when missing ------------------------------------
if ! command -v monit >/dev/null || ! command -v supervisord >/dev/null; then
    echo "bench/restart: installing monit and supervisor (apt-get)" >&2
    export DEBIAN_FRONTEND=noninteractive
    timeout 600 apt-get install -y monit supervisor >&2 \
        || { timeout 300 apt-get update >&2 && timeout 600 apt-get install -y monit supervisor >&2; }
fi
py=$(command -v /usr/bin/python3 || command -v python3)
perl=$(command -v perl)
bench() { "$py" "$here/bench.py" "$@"; }

# --- healer ------------------------------------------------------------------
if [ -z "${HEALER_BIN_DIR:-}" ]; then
    (cd "$root" && timeout 1800 cargo build --release -q -p healer -p healer-plugin-process \
        -p healer-plugin-command -p healer-plugin-http)
    HEALER_BIN_DIR="$root/target/release"
fi
bin=$(cd "$HEALER_BIN_DIR" && pwd)
for f in healer libhealer_plugin_process.so libhealer_plugin_command.so libhealer_plugin_http.so; do
    [ -e "$bin/$f" ] || { echo "bench/restart: $bin/$f is missing" >&2; exit 2; }
done

rm -rf "$work"
mkdir -p "$work/plugins" "$work/results"
install -m 0644 "$bin"/libhealer_plugin_{process,command,http}.so "$work/plugins/"
chmod 0755 "$work/plugins"
exec > >(tee "$work/report.md") 2>&1

daemons=()
cleanup() {
    local pid
    for pid in "${daemons[@]}"; do stop "$pid"; done
    bench kill "$work" || true
}
trap cleanup EXIT

# start LOG COMMAND...: runs a daemon in the background; its pid in $pid.
start() {
    local log=$1; shift
    "$@" > "$log" 2>&1 &
    pid=$!
    daemons+=("$pid")
}
# stop PID: SIGTERM, 10 s, then SIGKILL.
stop() {
    local pid=$1 i
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}
# wait_lines FILE PATTERN COUNT SECONDS: until COUNT lines of FILE match.
wait_lines() {
    timeout "$4" bash -c 'until n=$(grep -c -- "$2" "$1" 2>/dev/null); [ "${n:-0}" -ge "$3" ]; do sleep 0.05; done' \
        _ "$1" "$2" "$3" || { echo "bench/restart: $1: fewer than $3 lines match '$2' after $4 s" >&2; tail -n 20 "$1" >&2; exit 1; }
}
# finish DIR PID: stops the tool, then what it supervised.
finish() {
    stop "$2"
    bench kill "$1"
}

# --- configs -----------------------------------------------------------------
# healer_config DIR EXTRA_HEALER_KEYS: the [healer] table. Flap protection
# off (max_attempts = 1000, stable_after = 0s), as in
# tests/benches/crash_restart.rs: ten kills within a minute would otherwise
# be escalated by design after three.
healer_config() {
    cat > "$1/healer.toml" <<EOF
[healer]
interval = "1s"
max_attempts = 1000
stable_after = "0s"
plugins_dir = "../plugins"
state_dir = "state"
log_file = "healer.log"
event_log = "events.jsonl"
$2
EOF
}
# healer_svc DIR NAME WATCH: a target supervising svc.sh through a pidfile.
healer_svc() {
    cat >> "$1/healer.toml" <<EOF

[[target]]
name = "$2"
monitor = { plugin = "process", pidfile = "$1/$2.pid", watch = $3 }
[[target.recover]]
plugin = "command"
argv = ["$here/svc.sh", "bg", "$1/$2.pid", "$1/$2.starts", "$4"]
EOF
}
monit_config() {
    cat > "$1/monitrc" <<EOF
set daemon 1
set logfile $1/monit.log
set pidfile $1/monit.pid
set idfile $1/monit.id
set statefile $1/monit.state
EOF
    chmod 0600 "$1/monitrc"
}
monit_svc() {
    cat >> "$1/monitrc" <<EOF
check process $2 with pidfile $1/$2.pid
  start program = "$here/svc.sh bg $1/$2.pid $1/$2.starts $3" with timeout 10 seconds
EOF
}
supervisord_config() {
    cat > "$1/supervisord.conf" <<EOF
[unix_http_server]
file = $1/supervisor.sock
chmod = 0700

[supervisord]
nodaemon = true
user = root
logfile = $1/supervisord.log
pidfile = $1/supervisord.pid
childlogdir = $1
identifier = bench-restart

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl = unix://$1/supervisor.sock
EOF
}
# supervisord_program DIR NAME COMMAND: one restarted-at-once program.
supervisord_program() {
    cat >> "$1/supervisord.conf" <<EOF

[program:$2]
command = $3
autorestart = true
startsecs = 0
startretries = 1000
stopsignal = KILL
stopwaitsecs = 2
stdout_logfile = NONE
stderr_logfile = NONE
EOF
}
# supervisord_svc DIR NAME ID: the supervised sleep, as a program.
supervisord_svc() {
    supervisord_program "$1" "$2" "$here/svc.sh fg $1/$2.pid $1/$2.starts $3"
}
# Each tool, started on DIR, waits until it reports COUNT processes running.
run_healer() {
    start "$1/stderr.log" "$bin/healer" --config "$1/healer.toml" run
    wait_lines "$1/events.jsonl" '"event":"issue_resolved"' "$2" 60
}
run_supervisord() {
    start "$1/stdout.log" supervisord -c "$1/supervisord.conf"
    wait_lines "$1/supervisord.log" 'entered RUNNING state' "$2" 60
}
# Monit runs under a subreaper that reaps at once, as init does on a real
# machine (PID 1 here reaps only now and then, and Monit takes a zombie for
# a running process); supervisord and healer reap their own children.
run_monit() {
    monit -t -c "$1/monitrc" > /dev/null
    start "$1/stdout.log" "$py" "$here/bench.py" reaper -- monit -I -c "$1/monitrc"
    wait_lines "$1/monit.log" 'process is running with pid' "$2" 120
}

# --- the header ----------------------------------------------------------------
echo "# bench/restart: healer, supervisord and Monit restarting what they supervise"
echo
echo "- date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
echo "- machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')), $(uname -sr), $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "- healer: $("$bin/healer" --version) ($bin/healer, plugins process, command, http; each package in its plugin worker, the default)"
echo "- $(monit -V | head -1)"
echo "- supervisord $(supervisord --version)"
echo "- $("$py" --version) (the poller), perl $("$perl" -e 'print $^V') (the HTTP server)"
echo "- command: \`$command_line\`"
echo
echo "Settings: every tool checks every 1 s (healer \`interval = \"1s\"\`, Monit \`set daemon 1\`,"
echo "supervisord's main loop ticks every 1 s). healer: \`max_attempts = 1000\`, \`stable_after = \"0s\"\`"
echo "(flap protection off, as in tests/benches/crash_restart.rs; otherwise the third kill within"
echo "5 min is escalated by design), other pacing at its defaults (grace 500 ms, backoff 1 s)."
echo "supervisord: \`autorestart = true\`, \`startsecs = 0\`, \`startretries = 1000\`. Monit runs as"
echo "\`monit -I -c FILE\` under a reaping parent. The supervised process is \`sleep 100000 ID\`"
echo "started by bench/restart/svc.sh, which writes its pid to a pidfile and appends a line per start."
echo

# --- 1. crash to restart -------------------------------------------------------------
echo "## 1. Crash to restart: kill -9, $runs runs each"
for mode in watch poll; do
    d="$work/crash-healer-$mode"; mkdir -p "$d"
    healer_config "$d" ""
    healer_svc "$d" svc "$([ $mode = watch ] && echo true || echo false)" "1"
    run_healer "$d" 1; p=$pid
    bench crash "healer-$mode" "$d/svc.pid" "$work/results/crash-healer-$mode.json" --runs "$runs"
    finish "$d" "$p"
done

d="$work/crash-supervisord"; mkdir -p "$d"
supervisord_config "$d"; supervisord_svc "$d" svc 2
run_supervisord "$d" 1; p=$pid
bench crash supervisord "$d/svc.pid" "$work/results/crash-supervisord.json" --runs "$runs"
finish "$d" "$p"

d="$work/crash-monit"; mkdir -p "$d"
monit_config "$d"; monit_svc "$d" svc 3
run_monit "$d" 1; p=$pid
bench crash monit "$d/svc.pid" "$work/results/crash-monit.json" --runs "$runs"
finish "$d" "$p"
echo

# --- 2. burst ------------------------------------------------------------------------
echo "## 2. Burst: $burst processes killed with SIGKILL in the same instant, $burst_runs runs"
echo "healer: \`max_concurrent_recoveries = $burst\`, as an operator sets it for $burst services (the"
echo "default, 4, runs at most 4 restarts at once: measured too, as 'healer (default 4)')."
echo "The floor: once healer has stopped, the $burst start commands of its config (each target's"
echo "\`argv\`, stdin /dev/null, a process group each, PATH only, as the \`command\` recoverer runs"
echo "them) started at once with no healer, each by a process of its own (as healer starts each"
echo "on a thread of its own), polled every 1 ms until every pidfile names a new running process."
echo "healer's bursts and the floor alternate, round by round (healer started afresh each round),"
echo "so that both see the same load on a shared machine."
# burst_healer NAME EXTRA_HEALER_KEYS NOTE FLOOR: BURST_RUNS rounds of healer
# started, one burst, healer stopped, and with FLOOR = 1 one run of the floor.
burst_healer() {
    local name=$1 extra=$2 note=$3 floor=$4 i r
    d="$work/burst-$name"; mkdir -p "$d"
    healer_config "$d" "$extra"
    for i in $(seq 0 $((burst - 1))); do healer_svc "$d" "svc-$i" true "$((1000 + i))"; done
    for r in $(seq "$burst_runs"); do
        run_healer "$d" "$burst"; p=$pid
        bench burst "$name" "$d" "$burst" "$work/results/burst-$name.json" --append --limit 20 \
            --note "$note"
        finish "$d" "$p"
        mv "$d/events.jsonl" "$d/events-$r.jsonl"
        bench timeline "$name run $r" "$d/events-$r.jsonl"
        if [ "$floor" = 1 ]; then
            bench floor floor "$d/healer.toml" "$work/results/burst-floor.json" --append --limit 20 \
                --note "the floor: the same $burst start commands, no healer"
        fi
    done
}
burst_healer healer "max_concurrent_recoveries = $burst" \
    "healer, process watch, \`max_concurrent_recoveries = $burst\`" 1
if [ "$burst_default" = 1 ]; then
    burst_healer healer-default "" "healer, process watch, \`max_concurrent_recoveries\` default (4)" 0
fi

d="$work/burst-supervisord"; mkdir -p "$d"
supervisord_config "$d"
for i in $(seq 0 $((burst - 1))); do supervisord_svc "$d" "svc-$i" "$((2000 + i))"; done
run_supervisord "$d" "$burst"; p=$pid
bench burst supervisord "$d" "$burst" "$work/results/burst-supervisord.json" --runs "$burst_runs" --limit 20 \
    --note "supervisord (\`autorestart\`, \`startsecs = 0\`)"
finish "$d" "$p"

d="$work/burst-monit"; mkdir -p "$d"
monit_config "$d"
for i in $(seq 0 $((burst - 1))); do monit_svc "$d" "svc-$i" "$((3000 + i))"; done
run_monit "$d" "$burst"; p=$pid
bench burst monit "$d" "$burst" "$work/results/burst-monit.json" --limit 40 \
    --note "Monit (\`set daemon 1\`)"
finish "$d" "$p"
echo

# --- 3. hang to restart --------------------------------------------------------------
echo "## 3. Hang to restart: SIGSTOP of an HTTP server (bench/restart/hangsrv.pl)"
echo "A stopped process (state T) still has its pid, so no pidfile or pidfd check sees the hang"
echo "at once. healer and Monit see it through the health endpoint: healer's \`http\` monitor"
echo "(interval 1 s, timeout 1 s) with the \`service-restart\` recoverer (stop: kill -9, start),"
echo "Monit's \`if failed port ... protocol http with timeout 1 seconds then restart\` (1 s is"
echo "Monit's shortest timeout) with the same stop and start programs. Monit pauses connection"
echo "tests after a start for the start program's timeout (default 30 s): set to 1 s here, its"
echo "shortest; healer verifies a recovery \`grace\` (500 ms) after it. healer also sees the stop"
echo "itself: its \`process\` monitor on the pidfile (interval 1 s) says CRITICAL \`process.stopped\`"
echo "once a check has seen the process stopped for \`stopped_for = \"1s\"\` (its watcher looks"
echo "again then, without waiting for the next check), with the same \`service-restart\`."
echo "supervisord has no health check: it cannot see a hang."
srv=("$perl" "$here/hangsrv.pl")
hang_measure() {
    local label=$1 pidfile=$2 runs=$3; shift 3
    bench hang "$label" "$pidfile" "$work/results/hang-steady-$label.json" --mode steady \
        --runs "$runs" --limit "$hang_limit" "$@"
    bench hang "$label" "$pidfile" "$work/results/hang-restart-$label.json" --mode restart \
        --runs "$runs" --limit "$hang_limit" "$@"
}

d="$work/hang-healer"; mkdir -p "$d"; port=$(bench freeport)
healer_config "$d" ""
cat >> "$d/healer.toml" <<EOF

[[target]]
name = "web"
monitor = { plugin = "http", url = "http://127.0.0.1:$port/", timeout = "1s" }
[[target.recover]]
plugin = "service-restart"
stop = ["$perl", "$here/hangsrv.pl", "stop", "$d/web.pid"]
start = ["$perl", "$here/hangsrv.pl", "$port", "$d/web.pid", "$d/web.starts", "bg"]
EOF
run_healer "$d" 1; p=$pid
hang_measure healer "$d/web.pid" "$hang_runs"
finish "$d" "$p"

d="$work/hang-healer-stopped"; mkdir -p "$d"; port=$(bench freeport)
healer_config "$d" ""
cat >> "$d/healer.toml" <<EOF

[[target]]
name = "web"
[target.monitor]
plugin = "process"
pidfile = "$d/web.pid"
stopped_for = "1s"
[[target.diagnose]]
plugin = "process"
[[target.recover]]
plugin = "service-restart"
on = ["process.not_running", "process.stopped"]
stop = ["$perl", "$here/hangsrv.pl", "stop", "$d/web.pid"]
start = ["$perl", "$here/hangsrv.pl", "$port", "$d/web.pid", "$d/web.starts", "bg"]
EOF
run_healer "$d" 1; p=$pid
hang_measure healer-stopped "$d/web.pid" "$hang_runs"
finish "$d" "$p"

d="$work/hang-monit"; mkdir -p "$d"; port=$(bench freeport)
monit_config "$d"
cat >> "$d/monitrc" <<EOF
check process web with pidfile $d/web.pid
  start program = "$perl $here/hangsrv.pl $port $d/web.pid $d/web.starts bg" with timeout 1 seconds
  stop program = "$perl $here/hangsrv.pl stop $d/web.pid"
  if failed host 127.0.0.1 port $port protocol http request "/" with timeout 1 seconds then restart
EOF
run_monit "$d" 1; p=$pid
hang_measure monit "$d/web.pid" "$hang_runs"
finish "$d" "$p"

d="$work/hang-supervisord"; mkdir -p "$d"; port=$(bench freeport)
supervisord_config "$d"
supervisord_program "$d" web "$perl $here/hangsrv.pl $port $d/web.pid $d/web.starts"
run_supervisord "$d" 1; p=$pid
hang_measure supervisord "$d/web.pid" 1 --stop-on-miss
finish "$d" "$p"
echo

# --- the table -----------------------------------------------------------------------
echo "## Results"
echo
bench table "$work/results"
echo
echo "Ratios are each row's median over healer's (process watch for crashes, http monitor for"
echo "hangs, \`max_concurrent_recoveries = $burst\` for the burst); *all back / floor* is each burst's"
echo "median all back over the floor's median (issue 23's goal: healer's at most 1.5x)."
echo
echo "How the peers restart, for reading the figures:"
echo "- supervisord respawns an exited program in the pass of its main loop after the one that"
echo "  reaped it, and that loop waits up to 1 s in poll() (supervisord.py runforever, timeout = 1):"
echo "  a lone crash waits for that tick; in a burst the other children's I/O wakes it sooner."
echo "- Monit checks its services one after another in each cycle and, after running a start"
echo "  program, waits for its process to come up before it goes on: a burst is restarted one"
echo "  service at a time."
echo
echo "Whole run: $((SECONDS - started_at)) s; load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)."
echo "Logs and configs: target/bench-restart/<test>-<tool>/."
