#!/bin/sh
# A private Docker engine for machines that run none (these build machines: Debian's docker.io installed, no
# daemon started): `images/dockerd.sh start` starts dockerd with its own data root (kept in the cache, so built
# images and their layers survive for the next build), exec root, pidfile and unix socket, and prints the
# DOCKER_HOST to use; `images/dockerd.sh stop` stops it by its PID. Needs root. No bridge network and no
# iptables rules: containers use --network host or none.
#   RESUME_NER_CACHE  where the data root goes (default: $HOME/.cache/resume-ner)
set -eu
cache=${RESUME_NER_CACHE:-$HOME/.cache/resume-ner}
run=/tmp/resume-ner-dockerd   # short: a unix socket path has at most 107 bytes
socket=$run/docker.sock
case "${1:-}" in
start)
    if [ -S "$socket" ] && DOCKER_HOST=unix://$socket docker version >/dev/null 2>&1; then
        echo "unix://$socket"; exit 0
    fi
    command -v dockerd >/dev/null || { echo "dockerd not found: apt-get install docker.io" >&2; exit 1; }
    mkdir -p "$cache/docker" "$run/exec"
    nohup dockerd --data-root "$cache/docker" --exec-root "$run/exec" --pidfile "$run/dockerd.pid" \
        --host "unix://$socket" --iptables=false --ip6tables=false --bridge=none > "$run/dockerd.log" 2>&1 &
    for _ in $(seq 60); do
        DOCKER_HOST=unix://$socket docker version >/dev/null 2>&1 && { echo "unix://$socket"; exit 0; }
        sleep 1
    done
    echo "dockerd did not start; its log: $run/dockerd.log" >&2
    tail -5 "$run/dockerd.log" >&2
    exit 1
    ;;
stop)
    if [ -f "$run/dockerd.pid" ]; then
        pid=$(cat "$run/dockerd.pid")
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
        kill -9 "$pid" 2>/dev/null || true
    fi
    # what the engine mounted under its exec root (the network namespace of its default network)
    mount | awk '{print $3}' | grep "^$run/" | sort -r | while read -r m; do umount "$m" 2>/dev/null || umount -l "$m"; done
    ;;
*)
    echo "usage: images/dockerd.sh start|stop" >&2; exit 2 ;;
esac
