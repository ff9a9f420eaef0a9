#!/usr/bin/env bash
# Stop what up.sh started, by the PIDs it recorded, remove the pods' containers and kube-proxy's iptables rules,
# and unmount what the kubelet mounted; safe to run twice. usage: down.sh RUNDIR
R=${1:?run directory}
for n in proxy kubelet sched kcm; do [ -f "$R/$n.pid" ] && kill "$(cat "$R/$n.pid")" 2>/dev/null; done
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
rm -f "$R/proxy.pid" "$R/kubelet.pid" "$R/sched.pid" "$R/kcm.pid"
[ -f "$R/binaries" ] && "$(cat "$R/binaries")/kube-proxy" --cleanup >/dev/null 2>&1
if [ -f "$R/iptables-ours" ]; then  # the kubelet's chains too (KUBE-FIREWALL in INPUT and OUTPUT, marks, canaries)
    for t in filter nat mangle; do
        iptables -t $t -S 2>/dev/null | sed -n 's/^-A \([A-Z]*\) -j \(KUBE-[A-Z-]*\)$/\1 \2/p' | while read -r c j; do
            iptables -t $t -D "$c" -j "$j"; done
        chains=$(iptables -t $t -S 2>/dev/null | awk '/^-N KUBE-/{print $2}')
        for c in $chains; do iptables -t $t -F "$c"; done
        for c in $chains; do iptables -t $t -X "$c"; done
    done
    rm -f "$R/iptables-ours"
fi
for m in $(mount | awk '{print $3}' | grep "^$R/" | sort -r); do umount "$m" 2>/dev/null || umount -l "$m"; done
rm -f /run/dockershim.sock
exit 0
