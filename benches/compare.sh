#!/usr/bin/env bash
# Side by side with etcd on this machine (see benches/compare.rs). Installs
# Debian's etcd-server if etcd is missing, then runs the comparison; any
# arguments go to it, e.g. --clients 1,16,64,256 --seconds 10.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v etcd >/dev/null; then
    if [ "$(id -u)" = 0 ]; then
        apt-get install -y etcd-server || { apt-get update && apt-get install -y etcd-server; }
    else
        sudo apt-get install -y etcd-server
    fi
fi
cargo bench --bench compare -- "$@"
