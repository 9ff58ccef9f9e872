#!/usr/bin/env bash
# Installs Debian bookworm's Prometheus 2.42 (prometheus and promtool) into
# $HOME/.cache/nixcache-tools, outside the clone, for the alert rule tests (`promtool check rules`,
# `promtool test rules`) and the dashboard test, which scrapes a running nixcache with a real
# Prometheus. The .deb is unpacked rather than installed: installing would start a server and
# pull in the web UI's JavaScript packages. Safe to re-run; skipped when the version is there.
set -euo pipefail

log() { printf '[prometheus-tools] %s\n' "$*" >&2; }
TOOLS=$HOME/.cache/nixcache-tools
VERSION=2.42.0
dir=$TOOLS/prometheus-$VERSION
mkdir -p "$TOOLS/bin"

if ! "$dir/promtool" --version 2>/dev/null | grep -q "version $VERSION"; then
  log "apt-get download prometheus ($VERSION from Debian bookworm)"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  apt-get update -qq
  (cd "$tmp" && apt-get download -qq "prometheus=$VERSION*" >/dev/null)
  dpkg-deb -x "$tmp"/prometheus_*.deb "$tmp/root"
  rm -rf "$dir" && mkdir -p "$dir"
  cp "$tmp/root/usr/bin/prometheus" "$tmp/root/usr/bin/promtool" "$dir/"
  rm -rf "$tmp"
  trap - EXIT
fi
ln -sfn "$dir/prometheus" "$TOOLS/bin/prometheus"
ln -sfn "$dir/promtool" "$TOOLS/bin/promtool"
log "$("$TOOLS/bin/promtool" --version 2>&1 | head -1)"
