#!/bin/sh
# Builds the upstream cache into /srv/cache (an emptyDir the server container serves): the store
# paths of upstream.nix, signed with a key made here, copied with `nix copy --to file://`.
# Writes /srv/cache/upstream.pub and the paths the test asks for (root-path, small-path, big-path).
set -eu
out=/srv/cache
key=/work/upstream.sec   # never under $out: the server would publish it
nix-store --generate-binary-cache-key upstream-e2e-1 "$key" "$out/upstream.pub"
root=$(nix-build /e2e/upstream.nix -A root --arg n "${PATHS:-12}" --argstr salt k8s \
  --arg bigMb "${BIG_MIB:-256}" --no-out-link)
nix store sign --key-file "$key" --recursive "$root"
nix copy --to "file://$out?compression=zstd" "$root"
echo "$root" > "$out/root-path"
grep -- '-k8s-05-' "$root/nix-support/closure" > "$out/small-path"
grep -- '-big$' "$root/nix-support/closure" > "$out/big-path"
echo "upstream cache: $(find "$out" -name "*.narinfo" | wc -l) narinfos, root $root"
