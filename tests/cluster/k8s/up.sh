#!/usr/bin/env bash
# Start a single-node Kubernetes v1.20.2 on 127.0.0.1 for the cluster tier: etcd, kube-apiserver (RBAC, token
# auth, :16443), controller manager, scheduler, a kubelet named "localhost" on the Docker engine at $DOCKER_HOST
# (the container tier's private one: images/dockerd.sh) and kube-proxy (iptables mode: Service cluster IPs reach
# their endpoints). usage: up.sh BINARIES RUNDIR
# Writes RUNDIR/kubeconfig (user admin, in system:masters) and a PID file per process for down.sh. No bridge
# network and no cluster DNS: pods that talk to each other or to the host use hostNetwork, and name Services
# through hostAliases.
set -euo pipefail
B=${1:?directory of the binaries (build.sh)}; R=${2:?run directory}
: "${DOCKER_HOST:?the Docker engine of the kubelet (images/dockerd.sh start)}"
socket=${DOCKER_HOST#unix://}
mkdir -p "$R/logs" "$R/certs" "$R/etcd" "$R/kubelet"
[ -f "$R/sa.key" ] || { openssl genrsa -out "$R/sa.key" 2048 2>/dev/null; openssl rsa -in "$R/sa.key" -pubout -out "$R/sa.pub" 2>/dev/null; }
echo 'tier-token,admin,admin,system:masters' > "$R/tokens.csv"
cat > "$R/kubeconfig" <<K
apiVersion: v1
kind: Config
clusters: [{name: tier, cluster: {server: "https://127.0.0.1:16443", insecure-skip-tls-verify: true}}]
contexts: [{name: tier, context: {cluster: tier, user: admin}}]
current-context: tier
users: [{name: admin, user: {token: tier-token}}]
K
# down.sh removes the kubelet's and kube-proxy's iptables chains only where there were none before
if ! iptables-save 2>/dev/null | grep -q '^:KUBE-'; then touch "$R/iptables-ours"; fi
bg() { local n=$1; shift; nohup "$@" > "$R/logs/$n.log" 2>&1 & echo $! > "$R/$n.pid"; }
export KUBECONFIG=$R/kubeconfig
bg etcd etcd --name tier --data-dir "$R/etcd" --listen-client-urls http://127.0.0.1:23790 \
    --advertise-client-urls http://127.0.0.1:23790 --listen-peer-urls http://127.0.0.1:23800 \
    --initial-advertise-peer-urls http://127.0.0.1:23800 --initial-cluster tier=http://127.0.0.1:23800
bg apiserver "$B/kube-apiserver" --etcd-servers=http://127.0.0.1:23790 --bind-address=127.0.0.1 \
    --advertise-address=127.0.0.1 --secure-port=16443 --insecure-port=0 --cert-dir="$R/certs" \
    --token-auth-file="$R/tokens.csv" --authorization-mode=Node,RBAC --service-account-issuer=https://kubernetes.default.svc \
    --service-account-key-file="$R/sa.pub" --service-account-signing-key-file="$R/sa.key" \
    --service-cluster-ip-range=10.96.0.0/16 --kubelet-preferred-address-types=Hostname
for _ in $(seq 90); do kubectl get --raw /readyz >/dev/null 2>&1 && break; sleep 1; done
kubectl get --raw /readyz >/dev/null || { tail -20 "$R/logs/apiserver.log" >&2; exit 1; }
K=$R/kubeconfig
bg kcm "$B/kube-controller-manager" --kubeconfig="$K" --authentication-kubeconfig="$K" --authorization-kubeconfig="$K" \
    --leader-elect=false --bind-address=127.0.0.1 --secure-port=10257 --port=0 \
    --service-account-private-key-file="$R/sa.key" --root-ca-file="$R/certs/apiserver.crt" \
    --use-service-account-credentials=true --controllers='*,-nodeipam,-cloud-node-lifecycle,-route,-service'
bg sched "$B/kube-scheduler" --kubeconfig="$K" --authentication-kubeconfig="$K" --authorization-kubeconfig="$K" \
    --leader-elect=false --bind-address=127.0.0.1 --secure-port=10259 --port=0
mkdir -p "$R/pause" && cp "$B/pause" "$R/pause/pause"
docker image inspect k8s.gcr.io/pause:3.2 >/dev/null 2>&1 || \
    tar -C "$R/pause" -c . | docker import -c 'ENTRYPOINT ["/pause"]' - k8s.gcr.io/pause:3.2 >/dev/null
# A test node on a shared disk: no disk-pressure taint and no image garbage collection until the disk is really
# full (the kubelet's defaults, 15% free for images and GC from 85% used, tainted the node on a busy 252 GB disk and
# every pod stayed Pending).
bg kubelet "$B/kubelet" --kubeconfig="$K" --container-runtime=docker --docker-endpoint="unix://$socket" \
    --pod-infra-container-image=k8s.gcr.io/pause:3.2 --root-dir="$R/kubelet" --cert-dir="$R/kubelet-certs" \
    --hostname-override=localhost --address=127.0.0.1 --port=10250 --read-only-port=0 \
    --healthz-bind-address=127.0.0.1 --fail-swap-on=false --cgroup-driver=cgroupfs --cgroups-per-qos=false \
    --enforce-node-allocatable= --oom-score-adj=0 --authorization-mode=AlwaysAllow --anonymous-auth=true \
    --eviction-hard='memory.available<100Mi,nodefs.available<2%,imagefs.available<2%' \
    --image-gc-high-threshold=99 --image-gc-low-threshold=98
echo "$B" > "$R/binaries"   # down.sh removes kube-proxy's rules with it
bg proxy "$B/kube-proxy" --kubeconfig="$K" --hostname-override=localhost --proxy-mode=iptables \
    --bind-address=127.0.0.1 --healthz-bind-address=127.0.0.1:10256 --metrics-bind-address=127.0.0.1:10249 \
    --conntrack-max-per-core=0 --cluster-cidr=10.96.0.0/16
for _ in $(seq 90); do kubectl get node localhost >/dev/null 2>&1 && break; sleep 1; done
kubectl wait --for=condition=Ready node/localhost --timeout=120s >/dev/null
echo "$K"
