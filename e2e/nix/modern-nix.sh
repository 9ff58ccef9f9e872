#!/usr/bin/env bash
# modern-nix.sh: a current Nix client beside the host's (Debian bookworm's Nix 2.8, from 2022),
# the second client generation of the e2e tests. A minimal Debian root of SUITE (default sid:
# Nix 2.34 in December 2026; trixie: 2.26) with its nix-bin, kept outside the clone, and a runner
# that runs a command of that Nix inside the root:
#
#   nixcache-nix-modern nix-store --store /tmp/s -r PATH --option substituters http://127.0.0.1:…
#
# The runner makes its mounts (/proc, /dev, and the host's /tmp, where the tests keep client
# stores, netrc files and caches) in a private mount namespace of that one command, so none
# outlives it and removing the root never reaches through a mount into the host. The root shares
# the host's network, loopback included.
#
# Env: SUITE=sid|trixie, NIXCACHE_TOOLS (default ~/.cache/nixcache-tools; the root goes to
# $NIXCACHE_TOOLS/nix-$SUITE, the runner to $NIXCACHE_TOOLS/bin/nixcache-nix-modern).
# stdout: the runner's path and the Nix version, as KEY=VALUE lines. About 80 s the first time
# (debootstrap, then nix-bin); a re-run checks and exits.
set -euo pipefail
# Only the KEY=VALUE result goes to stdout (a caller evals it); everything else to stderr.
exec 3>&1 1>&2
SUITE=${SUITE:-sid}
TOOLS=${NIXCACHE_TOOLS:-$HOME/.cache/nixcache-tools}
ROOT=$TOOLS/nix-$SUITE
RUNNER=$TOOLS/bin/nixcache-nix-modern
log() { printf '[modern-nix] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
[ "$(id -u)" = 0 ] || die "must run as root (debootstrap, chroot, mount namespaces)"

# Refuses to delete a directory with anything mounted under it (debootstrap mounts /proc in the
# target while it works; a failed run can leave that behind).
remove_unmounted() {
  if findmnt -rn -o TARGET | grep -q "^$1\(/\|$\)"; then
    die "$1 has mounts under it (findmnt | grep $1); unmount them, then re-run"
  fi
  rm -rf --one-file-system "$1"
}

# The Debian mirror this machine already uses (so no host name is written here).
mirror() {
  local m
  m=$(grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' | grep -v security | head -1 || true)
  [ -n "$m" ] || m=$(grep -hs '^deb ' /etc/apt/sources.list | awk '{print $2}' | grep -v security | head -1 || true)
  [ -n "$m" ] || die "no Debian mirror found in the apt sources"
  echo "$m"
}

# Runs "$@" chrooted into ROOT with /proc, /dev and /tmp in a private mount namespace.
in_root() {
  unshare --mount --propagation private -- /bin/sh -c '
    root=$1; shift
    mount --bind /proc "$root/proc" && mount --rbind /dev "$root/dev" && mount --bind /tmp "$root/tmp" || exit 125
    exec chroot "$root" /usr/bin/env HOME=/root "$@"' sh "$ROOT" "$@"
}

if [ ! -x "$ROOT/usr/bin/nix" ]; then
  t0=$SECONDS
  command -v debootstrap >/dev/null || {
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
  }
  if [ ! -x "$ROOT/usr/bin/apt-get" ]; then
    remove_unmounted "$ROOT.tmp"
    mkdir -p "$TOOLS"
    log "debootstrap $SUITE into $ROOT"
    debootstrap --variant=minbase "$SUITE" "$ROOT.tmp" "$(mirror)" >"$TOOLS/debootstrap-$SUITE.log" 2>&1 \
      || die "debootstrap $SUITE failed; see $TOOLS/debootstrap-$SUITE.log"
    remove_unmounted "$ROOT"
    mv "$ROOT.tmp" "$ROOT"
  fi
  # apt in the root behaves as the host's: proxies, and no validity check of a snapshot
  # mirror's Release files when the host says so.
  for f in /etc/apt/apt.conf.d/*; do
    [ -f "$f" ] && [ ! -e "$ROOT$f" ] && cp "$f" "$ROOT$f"
  done
  log "nix-bin from $SUITE"
  in_root sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nix-bin >/dev/null' \
    || die "installing nix-bin in $ROOT failed"
  log "set up in $((SECONDS - t0)) s"
fi

# Single-user root Nix, offline, like the host's (.ci/run); the tests pass their own options too.
mkdir -p "$ROOT/etc/nix"
printf '%s\n' '# Managed by nixcache e2e/nix/modern-nix.sh.' 'sandbox = false' \
  'experimental-features = nix-command' 'build-users-group =' 'substituters =' \
  'narinfo-cache-negative-ttl = 0' 'narinfo-cache-positive-ttl = 0' 'connect-timeout = 5' \
  >"$ROOT/etc/nix/nix.conf"

mkdir -p "$(dirname "$RUNNER")"
cat >"$RUNNER.tmp" <<RUN
#!/bin/sh
# Runs a command of the Nix in $ROOT ($SUITE) inside that root; written by nixcache's
# e2e/nix/modern-nix.sh. Mounts live in this command's own mount namespace.
exec unshare --mount --propagation private -- /bin/sh -c '
  root=\$1; shift
  mount --bind /proc "\$root/proc" && mount --rbind /dev "\$root/dev" && mount --bind /tmp "\$root/tmp" || exit 125
  exec chroot "\$root" /usr/bin/env HOME=/root "\$@"' sh "$ROOT" "\$@"
RUN
chmod +x "$RUNNER.tmp"
mv "$RUNNER.tmp" "$RUNNER"

version=$("$RUNNER" nix --version) || die "$RUNNER nix --version failed"
log "$version in $ROOT"
echo "NIXCACHE_NIX_MODERN=$RUNNER" >&3
echo "NIXCACHE_NIX_MODERN_VERSION=${version##* }" >&3
