#!/usr/bin/env bash
# Installs the Debian packages KOS needs to build, test and run. Idempotent:
# packages already present are skipped, and apt-get runs only when something is missing.
set -euo pipefail

PACKAGES=(
  build-essential cmake ninja-build g++ pkg-config git
  libboost1.81-dev libboost-json1.81-dev libboost-url1.81-dev
  libssl-dev libsqlite3-dev sqlite3 libnghttp2-dev libjemalloc-dev
  libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc
  libyaml-cpp-dev libcli11-dev libspdlog-dev libfmt-dev
  libgtest-dev libgmock-dev googletest libbenchmark-dev
  libmnl-dev libnl-3-dev libnl-route-3-dev
  etcd-server etcd-client prometheus
  iproute2 iputils-ping traceroute procps python3-kubernetes
  systemd util-linux
  containernetworking-plugins golang-go golang-github-appc-cni-dev
  openvswitch-switch
  clang-16 libclang-rt-16-dev
  nftables libnftables-dev
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#PACKAGES[@]} packages present"
else
  echo "install-deps: installing ${missing[*]}"
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
  # Debian starts etcd, Prometheus and Open vSwitch as system services on install
  # (Prometheus on :9090, the port deploy/prometheus suggests); KOS's tests start their own
  # (free ports, their own run dirs) when they need them, so a service this script has
  # just installed is stopped and disabled. One that was there before is left alone.
  if command -v systemctl >/dev/null 2>&1; then
    for pair in etcd-server:etcd prometheus:prometheus openvswitch-switch:openvswitch-switch; do
      pkg=${pair%%:*} svc=${pair#*:}
      [[ " ${missing[*]} " == *" $pkg "* ]] || continue
      if systemctl is-enabled "$svc" >/dev/null 2>&1; then
        $SUDO systemctl disable --now "$svc" >/dev/null 2>&1 || true
      fi
    done
  fi
fi

# kubectl 1.20 for the client-compatibility tests (test/integration): Debian's
# kubernetes-client package, unpacked into its own folder because it would conflict with
# the kubectl on /usr/bin. Downloaded from Debian's archive once; the tests skip without it.
KUBECTL_120_DIR=/opt/kos-test/kubectl-1.20
if [ ! -x "$KUBECTL_120_DIR/usr/bin/kubectl" ]; then
  echo "install-deps: unpacking kubernetes-client (kubectl 1.20) into $KUBECTL_120_DIR"
  tmp="$(mktemp -d)"
  # Run as root, apt downloads as the _apt user, which needs to write there.
  if [ "$(id -u)" -eq 0 ] && id _apt >/dev/null 2>&1; then chown _apt "$tmp"; fi
  if ! (cd "$tmp" && apt-get download -qq kubernetes-client); then
    $SUDO apt-get update -qq
    (cd "$tmp" && apt-get download -qq kubernetes-client)
  fi
  $SUDO mkdir -p "$KUBECTL_120_DIR"
  $SUDO dpkg -x "$tmp"/kubernetes-client_*.deb "$KUBECTL_120_DIR"
  rm -rf "$tmp"
fi
