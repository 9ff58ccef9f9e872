#!/usr/bin/env bash
# Seeds fuzz/corpus/<target>/ from the real Nix fixtures in proxy/protocol/testdata/ (see its
# README.md). Each seed is named by the SHA-1 of its content, as libFuzzer names corpus files, so
# re-running adds nothing new and never removes anything (regression inputs live there too).
set -euo pipefail
cd "$(dirname "$0")"
TD=../proxy/protocol/testdata
CORPUS=corpus

# seed TARGET: stdin becomes one corpus file of TARGET.
seed() {
  local tmp
  tmp=$(mktemp)
  cat > "$tmp"
  mkdir -p "$CORPUS/$1"
  mv "$tmp" "$CORPUS/$1/$(sha1sum < "$tmp" | cut -d' ' -f1)"
  chmod 644 "$CORPUS/$1"/*
}
# seed_each TARGET: each line of stdin becomes one corpus file of TARGET (without its newline).
seed_each() {
  local line
  while IFS= read -r line; do
    [ -n "$line" ] && printf '%s' "$line" | seed "$1"
  done
}
# Values of narinfo field KEY in every fixture narinfo.
field() { sed -n "s/^$1: //p" "$TD"/narinfo/*/*.narinfo | sort -u; }
# Data lines (no comments) of a fixture table, column N.
column() { grep -v '^#' "$TD/$1" | awk -v n="$2" 'NF { print $n }' | sort -u; }

# narinfo: every narinfo written by `nix copy`.
for f in "$TD"/narinfo/*/*.narinfo; do seed narinfo < "$f"; done

# cache_info: Nix's file cache's, and cache.nixos.org's (WantMassQuery, Priority).
seed cache_info < "$TD/nix-cache-info"
printf 'StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 40\n' | seed cache_info

# store_path: absolute paths, base names (References, Deriver), and one sorted list of them all.
{ field StorePath; grep -o '"/nix/store/[^"]*"' "$TD/path-info.json" | tr -d '"'; } | sort -u | seed_each store_path
{ field References | tr ' ' '\n'; field Deriver; } | sort -u | seed_each store_path
{ field References | tr ' ' '\n'; field Deriver; } | sort -u | grep . | seed store_path

# nixbase32: Nix's encodings of md5/sha1/sha256/sha512 digests, and store path hashes.
{ column nixbase32-vectors.txt 2; column sha256-forms.txt 2; } | seed_each nixbase32
for f in "$TD"/narinfo/*/*.narinfo; do basename "$f" .narinfo; done | sort -u | seed_each nixbase32

# sha256_hash: each form Nix prints, and the narinfos' NarHash/FileHash.
for n in 1 2 3; do column sha256-forms.txt "$n" | sed 's/^/sha256:/'; done | seed_each sha256_hash
column sha256-forms.txt 4 | seed_each sha256_hash
{ field NarHash; field FileHash; } | seed_each sha256_hash

# nar_file: `ls nar/` of Nix's file caches.
column nar-file-names.txt 1 | seed_each nar_file

# narinfo_name: the narinfo files' names.
for f in "$TD"/narinfo/*/*.narinfo; do basename "$f"; done | sort -u | seed_each narinfo_name

# side_file: listings and logs named after the narinfos' paths and derivers.
for f in "$TD"/narinfo/*/*.narinfo; do basename "$f" .narinfo | sed 's/$/.ls/'; done | sort -u | seed_each side_file
field Deriver | sed 's|^|log/|' | seed_each side_file

# public_key, signing_key: the key files as Nix wrote them.
for f in "$TD"/keys/*.pub; do seed public_key < "$f"; done
for f in "$TD"/keys/*.sec; do seed signing_key < "$f"; done

# signature: every Sig line, and nix path-info's signatures.
{ field Sig; grep -o '[A-Za-z0-9._-]*:[A-Za-z0-9+/]\{86\}==' "$TD/path-info.json"; } | sort -u | seed_each signature

# --- the formats crate (nixcache-formats) ----------------------------------------------------
# range: 8 bytes of object size (little-endian), then the header; the RFC 9110 examples.
size_le() { python3 -c "import sys; sys.stdout.buffer.write(int(sys.argv[1]).to_bytes(8, 'little'))" "$1"; }
for size in 0 1 1000 18446744073709551615; do
  for h in 'bytes=0-99' 'bytes=212-' 'bytes=-10' 'bytes=990-5000' 'bytes=0-1,5-6' 'bytes=-0'; do
    { size_le "$size"; printf '%s' "$h"; } | seed range
  done
done

# netrc: the format as Nix's netrc-file and curl read it (machines, default, macdef).
printf 'machine cache.example.com login alice password s3cret\nmacdef init\ncd /pub\n\nmachine other.example\n  login bob\n  password pw2\ndefault login anon password guest\n' | seed netrc
printf 'machine 127.0.0.1 login nix password some-long-upload-token\n' | seed netrc

# credentials: htpasswd lines (`htpasswd -nbB`), a comment and a token.
printf '# uploaders\nci:$2y$05$bvIG6Nmid91Mu9RcmmWZfO5HJIMCT8riNW0hEp8f6/FuA2/mHZFpe\n\nsome-long-upload-token\n' | seed credentials
printf 'laptop:$2b$12$KIXQJiFbCm2bEoUGSPn0.OQxPgaPpFKHp1.3lhu2TmuPQn0V3iOey\n' | seed credentials

# settings: first byte 0 for TOML, 1 for YAML; the README's example and the flags' forms.
{ printf '\0'; sed -n '/^# nixcache.toml$/,/^```$/p' ../README.md | sed '$d'; } | seed settings
printf '\0listen = "127.0.0.1:9000"\npriority = 30\nupstream = ["http://a", "http://b"]\ns3-path-style = true\nlease-ttl = "3s"\n' | seed settings
printf '\001negative-ttl: 5s\nupstream:\n  - http://c\nmax-size: 5G\ns3-path-style: true\n' | seed settings

# nar_digest: compression (0 none, 1 xz, 2 zstd, 3 bzip2), the NarSize limit in units of 64
# bytes (2 bytes, little-endian: 0x4000 is 1 MiB), then the file: a NAR that `nix-store --dump`
# made of hello.txt, compressed by the tools Nix's compressions come from. nar_roundtrip:
# compression, then the NAR.
if command -v nix-store >/dev/null; then
  nar=$(mktemp)
  nix-store --dump "$TD/hello.txt" > "$nar"
  compressors=(cat "xz -c" "zstd -c -q" "bzip2 -c")
  for i in 0 1 2 3; do
    { printf "\\$(printf '%03o' "$i")\\100\\000"; ${compressors[$i]} < "$nar"; } | seed nar_digest
    { printf "\\$(printf '%03o' "$i")"; cat "$nar"; } | seed nar_roundtrip
  done
  # Two xz streams back to back, as `xz` concatenates and Nix accepts.
  { printf '\001\100\000'; xz -c < "$nar"; xz -c < "$nar"; } | seed nar_digest
  rm -f "$nar"
fi

# content_encoding: encoding (0 identity, 2 gzip, 3 zstd, 4 xz, 5 bzip2; no brotli tool here),
# then a NAR listing as `nix copy --to …?write-nar-listing=true` writes it, encoded.
listing='{"version":1,"root":{"type":"directory","entries":{"hello.txt":{"type":"regular","size":6,"narOffset":200}}}}'
encoders=(cat "" "gzip -c" "zstd -c -q" "xz -c" "bzip2 -c")
for i in 0 2 3 4 5; do
  { printf "\\$(printf '%03o' "$i")"; printf '%s' "$listing" | ${encoders[$i]}; } | seed content_encoding
done

for d in "$CORPUS"/*/; do printf '%-14s %3d seeds\n' "$(basename "$d")" "$(find "$d" -type f | wc -l)"; done

# build_trace: each Nix 2.8 build trace under its path, a layout 2 path, and a bare path.
for f in "$TD"/realisations/*.doi; do
  { printf 'realisations/%s\n' "$(basename "$f")"; cat "$f"; } | seed build_trace
done
printf 'build-trace-v2/9sgrhzh75qdm6n0b91q0szqr9v0s59ah-ca-top.drv/out.doi\n{"outPath":"sy2air4ni4an0d59lqnyasgh2ydd4gw6-ca-top","signatures":[{"keyName":"k","sig":"AA=="}]}' | seed build_trace
