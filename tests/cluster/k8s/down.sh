#!/usr/bin/env bash
# Stop what up.sh started, by the PIDs it recorded, remove the pods' containers and unmount what the kubelet
# mounted; safe to run twice. usage: down.sh RUNDIR
R=${1:?run directory}
for n in kubelet sched kcm; do [ -f "$R/$n.pid" ] && kill "$(cat "$R/$n.pid")" 2>/dev/null; done
sleep 2
if [ -n "${DOCKER_HOST:-}" ]; then
    ids=$(docker ps -aq --filter label=io.kubernetes.pod.name 2>/dev/null)
    [ -n "$ids" ] && docker rm -f $ids >/dev/null 2>&1
fi
for n in apiserver etcd; do
    if [ -f "$R/$n.pid" ]; then
        pid=$(cat "$R/$n.pid"); kill "$pid" 2>/dev/null
        for _ in $(seq 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
        rm -f "$R/$n.pid"
    fi
done
rm -f "$R/kubelet.pid" "$R/sched.pid" "$R/kcm.pid"
for m in $(mount | awk '{print $3}' | grep "^$R/" | sort -r); do umount "$m" 2>/dev/null || umount -l "$m"; done
rm -f /run/dockershim.sock
exit 0
