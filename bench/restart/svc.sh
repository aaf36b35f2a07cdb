#!/bin/sh
# The supervised process of bench/restart: `sleep 100000 ID` (the ID makes
# each command line distinct), its pid in PIDFILE, one line appended to
# STARTS at each start (so a double start shows).
#   svc.sh fg PIDFILE STARTS ID   becomes the sleep itself (supervisord)
#   svc.sh bg PIDFILE STARTS ID   starts it in the background and returns
#                                 (healer's `command` recoverer, Monit's
#                                 start program)
mode=$1 pidfile=$2 starts=$3 id=$4
case $mode in
fg)
    echo "$$" >> "$starts"
    echo "$$" > "$pidfile"
    exec sleep 100000 "$id"
    ;;
bg)
    sleep 100000 "$id" < /dev/null > /dev/null 2>&1 &
    echo "$!" >> "$starts"
    echo "$!" > "$pidfile"
    ;;
*)
    echo "usage: svc.sh fg|bg PIDFILE STARTS ID" >&2
    exit 2
    ;;
esac
