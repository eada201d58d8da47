#!/usr/bin/env bash
# The full suite: what CI runs and what a contributor runs before pushing.
#
#   scripts/test.sh
#
# 1. Installs the external programs the feature-gated suites need when they
#    are missing: redis-server (multi-node tests), openssl (the TLS tests'
#    certificates) and chromium (browser tests), with apt-get when run as
#    root. Not root? Install them by hand:
#        sudo apt-get update && sudo apt-get install -y redis-server openssl chromium
# 2. cargo fmt --check
# 3. cargo clippy --all-targets --all-features -- -D warnings, and cargo doc
#    with -D warnings (broken intra-doc links)
# 4. cargo test --all-features
#    then node --test client/test/*.test.mjs (the browser client's tests) when node is
#    there; as root, nodejs is installed with the others, otherwise skipped
# 5. the chaos soak's CI version: 200 connections over 50 users, 10 s of churn
#    against the axum example (docs/reliability.md)
#
# Plain `cargo test` needs none of the external programs.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
# Optional: without node (and not root) the client's tests are skipped.
if ! command -v node >/dev/null 2>&1 && [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
  need+=(nodejs)
fi
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "scripts/test.sh: installing ${need[*]} with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  else
    echo "scripts/test.sh: missing ${need[*]}; install with:" >&2
    echo "    sudo apt-get update && sudo apt-get install -y ${need[*]}" >&2
    exit 1
  fi
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy --all-targets --all-features -- -D warnings"
cargo clippy --all-targets --all-features -- -D warnings
echo "== cargo doc (broken intra-doc links fail)"
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --all-features
echo "== cargo test --all-features"
cargo test --all-features
if command -v node >/dev/null 2>&1; then
  echo "== node --test client/test/*.test.mjs"
  # Files, not the directory: Node 21+ no longer searches a directory argument.
  node --test client/test/*.test.mjs
else
  echo "== node --test client/test/*.test.mjs: skipped, no node (sudo apt-get install -y nodejs)"
fi
echo "== chaos soak (CI version)"
# cargo test built both examples with these features: this build is cheap.
cargo build --all-features --example axum_chat --example chaos_soak
"${CARGO_TARGET_DIR:-target}/debug/examples/chaos_soak" --connections 200 --users 50 --seconds 10
