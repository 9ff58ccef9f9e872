# The e2e's Nix image (build context: e2e/): Debian's Nix (single-user, no daemon, offline), the
# tools upstream.nix builds with, and a throttled static HTTP server. It plays the signed upstream
# cache (built inside the cluster) and the Nix clients.
#   docker build -f e2e/kind/nix-tools.Dockerfile -t nixcache-e2e-nix:e2e e2e
FROM docker.io/library/debian:bookworm-slim
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      nix-bin openssl python3 ca-certificates coreutils sed \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /etc/nix /nix/store /nix/var/nix/gcroots /nix/var/nix/profiles \
 && printf '%s\n' 'sandbox = false' 'build-users-group =' 'experimental-features = nix-command' \
      'substituters =' 'connect-timeout = 5' > /etc/nix/nix.conf
COPY fixtures/upstream.nix /e2e/upstream.nix
COPY kind/serve.py /e2e/serve.py
COPY kind/client.sh /e2e/client.sh
COPY kind/build-upstream.sh /e2e/build-upstream.sh
