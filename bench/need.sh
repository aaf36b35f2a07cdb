# Sourced by the bench scripts: `need PACKAGE COMMAND` installs a Debian
# package when its command is missing (apt-get update once, then
# apt-get install -y), bounded in time; says so on stderr, and stops the
# script with a clear line when it cannot.
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
