#!/usr/bin/env bash
# A single-node garage S3 server on 127.0.0.1 for the benchmarks: sqlite
# metadata, fsync off, pinned to one core, fixed bench credentials.
#
#   eval "$(bench/lib/garage.sh start WORKDIR [CPU])"   # exports EP, GARAGE_PID, METRICS, AWS_*
#   bench/lib/garage.sh bucket NAME...                  # needs GARAGE_CONFIG_FILE from start
#   kill "$GARAGE_PID"
#
# The binary is built once with `cargo install garage --version 2.5.0` into
# ~/.cache/haul-bench/garage (about 17 minutes cold on 2 cores), outside the repo.
set -euo pipefail
GARAGE_VERSION=2.5.0
CACHE=${HAUL_BENCH_CACHE:-$HOME/.cache/haul-bench}
GARAGE=$CACHE/garage/bin/garage
KEY_ID=GK0123456789abcdef01234567
SECRET=0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef

install() {
  if [ -x "$GARAGE" ] && "$GARAGE" --version 2>/dev/null | grep -q "$GARAGE_VERSION"; then return; fi
  echo "building garage $GARAGE_VERSION once (~17 minutes on 2 cores) into $CACHE/garage" >&2
  cargo install garage --version "$GARAGE_VERSION" --locked --root "$CACHE/garage" \
    --target-dir "$CACHE/garage-target" >&2
}

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

start() { # WORKDIR [CPU]
  local dir=$1/garage cpu=${2:-0}
  install
  rm -rf "$dir" && mkdir -p "$dir"
  local s3 rpc admin
  s3=$(port); rpc=$(port); admin=$(port)
  cat > "$dir/garage.toml" <<TOML
metadata_dir = "$dir/meta"
data_dir = "$dir/data"
db_engine = "sqlite"
metadata_fsync = false
data_fsync = false
replication_factor = 1
rpc_bind_addr = "127.0.0.1:$rpc"
rpc_public_addr = "127.0.0.1:$rpc"
rpc_secret = "$(printf '%064d' 7)"
[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:$s3"
root_domain = ".s3.garage.localhost"
[admin]
api_bind_addr = "127.0.0.1:$admin"
admin_token = "bench-admin-token"
TOML
  chmod 600 "$dir/garage.toml"
  export GARAGE_CONFIG_FILE=$dir/garage.toml
  RUST_LOG=warn setsid taskset -c "$cpu" "$GARAGE" server > "$dir/server.log" 2>&1 < /dev/null &
  local pid=$! node=""
  for _ in $(seq 100); do
    node=$("$GARAGE" node id -q 2>/dev/null | cut -d@ -f1) && [ -n "$node" ] && break
    sleep 0.2
  done
  [ -n "$node" ] || { echo "garage did not start:"; tail "$dir/server.log"; kill "$pid"; exit 1; } >&2
  "$GARAGE" layout assign -z dc1 -c 100G "$node" >/dev/null
  "$GARAGE" layout apply --version 1 >/dev/null
  "$GARAGE" key import --yes -n bench "$KEY_ID" "$SECRET" >/dev/null
  cat <<ENV
export GARAGE_CONFIG_FILE=$dir/garage.toml GARAGE_PID=$pid EP=http://127.0.0.1:$s3 METRICS=http://127.0.0.1:$admin/metrics
export AWS_ACCESS_KEY_ID=$KEY_ID AWS_SECRET_ACCESS_KEY=$SECRET AWS_REGION=garage AWS_DEFAULT_REGION=garage AWS_EC2_METADATA_DISABLED=true
ENV
}

bucket() { # NAME...
  for b in "$@"; do
    "$GARAGE" bucket create "$b" >/dev/null
    "$GARAGE" bucket allow --read --write --owner "$b" --key bench >/dev/null
  done
}

version() { "$GARAGE" --version | head -1; }

cmd=${1:-}; shift || true
case "$cmd" in
  start|bucket|install|version) "$cmd" "$@" ;;
  *) echo "usage: $0 start WORKDIR [CPU] | bucket NAME... | install | version" >&2; exit 2 ;;
esac
