# Sourced by the bench scripts. `need PACKAGE COMMAND` installs a Debian
# package when its command is missing (apt-get update once, then
# apt-get install -y), bounded in time, and stops the script with a clear
# line when it cannot; `cpu_of` and `rss_of` measure a tool with its
# plugin workers.
need() {
    local package=$1 command=$2
    command -v "$command" > /dev/null || [ -x "/usr/sbin/$command" ] || [ -x "/usr/bin/$command" ] && return 0
    echo "bench: $command is missing: installing $package (apt-get)" >&2
    if [ -z "${NEED_UPDATED:-}" ]; then
        timeout 300 apt-get update -qq >&2 || true
        NEED_UPDATED=1
    fi
    timeout 600 apt-get install -y "$package" >&2 || {
        echo "bench: could not install $package; install it (apt-get install -y $package) and run again" >&2
        exit 2
    }
}

# CPU ticks (utime + stime) of a process, its process group and its
# children (healer's plugin workers).
cpu_of() {
    local total=0 p
    for p in $({ pgrep -g "$(ps -o pgid= -p "$1" | tr -d ' ')"; ps -o pid= --ppid "$1"; } 2>/dev/null | sort -u); do
        [ -r "/proc/$p/stat" ] || continue
        total=$((total + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0)))
    done
    echo "$total"
}

# Memory (kB) of a process and its children (healer's plugin workers):
# FIELD of /proc/PID/FILE, summed. status: VmRSS, VmHWM (peak);
# smaps_rollup: Pss, where pages the processes share (the worker runs
# healer's own binary) are counted once, split between them.
memory_of() {
    local total=0 p
    for p in "$1" $(ps -o pid= --ppid "$1" 2>/dev/null); do
        [ -r "/proc/$p/$3" ] || continue
        total=$((total + $(awk -v f="$2:" '$1 == f {print $2}' "/proc/$p/$3" 2>/dev/null || echo 0)))
    done
    echo "$total"
}
rss_of() { memory_of "$1" VmRSS status; }
pss_of() { memory_of "$1" Pss smaps_rollup; }
