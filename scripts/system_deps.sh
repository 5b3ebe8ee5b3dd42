#!/usr/bin/env bash
# Debian packages the test suite uses: Chromium (the report is opened in a headless browser as a
# person would), promtool (from prometheus: checks and unit-tests the alert rules) and PostgreSQL
# (the shared record store's tests start a throwaway server from its binaries; no cluster is used) and
# nginx (`nginx -t` checks deploy/nginx.conf; the tests use the binary only).
# Installs only what is missing; needs root (or passwordless sudo) and apt-get.
set -euo pipefail
need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || need+=(postgresql)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx)
[ ${#need[@]} -eq 0 ] && exit 0
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo -n"
if ! command -v apt-get >/dev/null 2>&1; then
  echo "system_deps: apt-get not found; install ${need[*]} yourself (their tests are skipped otherwise)" >&2
  exit 0
fi
$SUDO apt-get update -qq
for pkg in "${need[@]}"; do
  flags=()
  [ "$pkg" = prometheus ] && flags=(--no-install-recommends)  # promtool only, not a server's extras
  [ "$pkg" = postgresql ] && flags=(--no-install-recommends)  # the server binaries, not its extras
  [ "$pkg" = nginx ] && flags=(--no-install-recommends)
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${flags[@]}" "$pkg" >/dev/null
done
