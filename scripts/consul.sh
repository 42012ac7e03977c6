#!/usr/bin/env bash
# Builds the Consul agent used by the integration tests (once) and prints its path.
# The binary is cached outside the checkout, keyed by version, so a fresh clone reuses it.
set -euo pipefail
version=v1.22.0
root=$(cd "$(dirname "$0")/.." && pwd)
cache=${DIALTONE_CACHE:-$HOME/.cache/dialtone}
bin=$cache/consul-$version/consul
if [ ! -x "$bin" ]; then
  mkdir -p "$(dirname "$bin")"
  echo "building consul $version into $bin (about 4 minutes the first time)" >&2
  (cd "$root/internal/tools/consul" && GOFLAGS=-buildvcs=false go build -o "$bin.tmp" github.com/hashicorp/consul)
  mv "$bin.tmp" "$bin"
fi
"$bin" version >/dev/null
echo "$bin"
