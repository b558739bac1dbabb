# shellcheck shell=bash
# A single-node garage S3 server on 127.0.0.1 for the benchmarks: sqlite
# metadata, fsync off, one core (taskset), fixed bench credentials.
#
#   source bench/lib/garage.sh
#   garage_start WORKDIR [CPU]     # exports EP, AWS_* ; buckets via garage_bucket
#   garage_bucket NAME
#   garage_stop
#
# The binary is built once with `cargo install garage --version 2.5.0` into
# ~/.cache/haul-bench/garage (about 17 minutes cold on 2 cores), outside the repo.

GARAGE_VERSION=2.5.0
GARAGE_ROOT=${HAUL_BENCH_CACHE:-$HOME/.cache/haul-bench}/garage
GARAGE=$GARAGE_ROOT/bin/garage
GARAGE_KEY_ID=GK0123456789abcdef01234567
GARAGE_SECRET=0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef

garage_install() {
  if [ -x "$GARAGE" ] && "$GARAGE" --version 2>/dev/null | grep -q "$GARAGE_VERSION"; then return; fi
  echo "building garage $GARAGE_VERSION (once; ~17 minutes on 2 cores) into $GARAGE_ROOT" >&2
  cargo install garage --version "$GARAGE_VERSION" --locked --root "$GARAGE_ROOT" \
    --target-dir "$GARAGE_ROOT/../garage-target" >&2
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

garage_start() { # WORKDIR [CPU]
  local dir=$1 cpu=${2:-0}
  garage_install
  rm -rf "$dir/garage" && mkdir -p "$dir/garage"
  local s3 rpc admin
  s3=$(free_port); rpc=$(free_port); admin=$(free_port)
  cat > "$dir/garage/garage.toml" <<TOML
metadata_dir = "$dir/garage/meta"
data_dir = "$dir/garage/data"
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
  chmod 600 "$dir/garage/garage.toml"
  export GARAGE_CONFIG_FILE=$dir/garage/garage.toml
  RUST_LOG=warn taskset -c "$cpu" "$GARAGE" server > "$dir/garage/server.log" 2>&1 &
  GARAGE_PID=$!
  local node=""
  for _ in $(seq 100); do
    node=$("$GARAGE" node id -q 2>/dev/null | cut -d@ -f1) && [ -n "$node" ] && break
    sleep 0.2
  done
  [ -n "$node" ] || { echo "garage did not start:"; tail "$dir/garage/server.log"; return 1; } >&2
  "$GARAGE" layout assign -z dc1 -c 100G "$node" >/dev/null
  "$GARAGE" layout apply --version 1 >/dev/null
  "$GARAGE" key import --yes -n bench "$GARAGE_KEY_ID" "$GARAGE_SECRET" >/dev/null
  export EP=http://127.0.0.1:$s3
  export AWS_ACCESS_KEY_ID=$GARAGE_KEY_ID AWS_SECRET_ACCESS_KEY=$GARAGE_SECRET \
         AWS_REGION=garage AWS_DEFAULT_REGION=garage AWS_EC2_METADATA_DISABLED=true
}

garage_bucket() { # NAME
  "$GARAGE" bucket create "$1" >/dev/null
  "$GARAGE" bucket allow --read --write --owner "$1" --key bench >/dev/null
}

garage_stop() {
  [ -n "${GARAGE_PID:-}" ] && kill "$GARAGE_PID" 2>/dev/null && wait "$GARAGE_PID" 2>/dev/null
  GARAGE_PID=
}
