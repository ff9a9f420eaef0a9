#!/usr/bin/env bash
# Kubernetes v1.20.2 for the cluster tier, built from Debian bookworm's `kubernetes` source package with Debian's
# Go: kube-apiserver, kube-controller-manager, kube-scheduler, kubelet, kube-proxy and a static pause binary (about
# 5 min on 2 cores, root). Prints the directory of the binaries: $RESUME_NER_CACHE/k8s-<hash of this script>, reused
# when it is complete. Installs golang-go, etcd-server and what the build needs with apt; the source package
# comes through a private apt directory (the system's apt sources are untouched). Two source edits make it
# work here: Debian's reflect2 1.0.2 replaces the vendored 1.0.1 (which crashes under Go >= 1.18), and the
# kubelet's negative OOM-score constants are zeroed (this sandbox refuses a negative oom_score_adj).
set -euo pipefail
cache=${RESUME_NER_CACHE:-$HOME/.cache/resume-ner}
W=$cache/k8s-$(sha256sum "$0" | cut -c1-16)
if [ -f "$W/.complete" ]; then echo "$W"; exit 0; fi
rm -rf "$W" && mkdir -p "$W" && cd "$W"
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -qq --no-install-recommends golang-go rsync jq dpkg-dev etcd-server etcd-client \
    golang-github-modern-go-reflect2-dev >/dev/null
mkdir -p apt/lists/partial apt/cache apt/parts
MIRROR=$(grep -rhoE '^URIs: *\S+' /etc/apt/sources.list.d/*.sources 2>/dev/null | grep -v security | head -1 | awk '{print $2}')
[ -n "$MIRROR" ] || MIRROR=$(grep -hoE '^deb +\S+' /etc/apt/sources.list 2>/dev/null | head -1 | awk '{print $2}')
printf 'Types: deb-src\nURIs: %s\nSuites: bookworm\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
    "$MIRROR" > apt/parts/src.sources
APTO=(-o Dir::Etc::SourceList=/dev/null -o Dir::Etc::SourceParts="$W/apt/parts" -o Dir::State::Lists="$W/apt/lists"
      -o Dir::Cache="$W/apt/cache")
apt-get "${APTO[@]}" update >/dev/null
apt-get "${APTO[@]}" source --download-only kubernetes >/dev/null
dpkg-source -x kubernetes_*.dsc k8s >/dev/null
rm -rf k8s/vendor/github.com/modern-go/reflect2
cp -r /usr/share/gocode/src/github.com/modern-go/reflect2 k8s/vendor/github.com/modern-go/
mkdir -p gopath/src/k8s.io && ln -sfn "$W/k8s" gopath/src/k8s.io/kubernetes
cd gopath/src/k8s.io/kubernetes
export CGO_ENABLED=0 GO111MODULE=off GOPATH="$W/gopath" GOCACHE="$W/gocache" HOME="$W"
make generated_files >/dev/null
sed -i 's/defaultSandboxOOMAdj int = -998/defaultSandboxOOMAdj int = 0/' pkg/kubelet/dockershim/docker_sandbox.go
sed -i 's/guaranteedOOMScoreAdj int = -997/guaranteedOOMScoreAdj int = 0/' pkg/kubelet/qos/policy.go
V=k8s.io/kubernetes/vendor/k8s.io
for c in kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy; do
    go build -ldflags "-s -w -X $V/component-base/version.gitVersion=v1.20.2 -X $V/client-go/pkg/version.gitVersion=v1.20.2 -X $V/component-base/version.gitMajor=1 -X $V/component-base/version.gitMinor=20" \
        -o "$W/$c" "k8s.io/kubernetes/cmd/$c"
done
gcc -Os -static -o "$W/pause" build/pause/linux/pause.c
cd "$W" && rm -rf k8s gopath gocache apt kubernetes_* && touch .complete
echo "$W"
