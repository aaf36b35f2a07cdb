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

# nginx_conf DIR PORT [timed]: writes DIR/nginx.conf (pid, logs and
# temporary files under DIR) for one server on 127.0.0.1:PORT answering
# 200 "ok" to every path; with `timed`, an access log of one line a
# request ("$msec $uri") in DIR/logs/access.log, else none.
nginx_conf() {
    local dir=$1 port=$2 access="access_log off;"
    mkdir -p "$dir/logs"
    [ "${3:-}" = timed ] && access="log_format timed '\$msec \$uri'; access_log $dir/logs/access.log timed;"
    cat > "$dir/nginx.conf" <<CONF
worker_processes 1;
pid $dir/nginx.pid;
error_log $dir/logs/error.log warn;
events { worker_connections 8192; }
http {
    $access
    client_body_temp_path $dir; proxy_temp_path $dir;
    fastcgi_temp_path $dir; uwsgi_temp_path $dir; scgi_temp_path $dir;
    # A backlog beyond the default 511: at 10,000 new connections a second
    # a short stall of nginx overflowed it, and each dropped SYN came back
    # 1 s later as a late check of whichever tool.
    server { listen 127.0.0.1:$port backlog=4096; location / { return 200 "ok\n"; } }
}
CONF
}
