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

# public_key, signing_key: the key files as Nix wrote them.
for f in "$TD"/keys/*.pub; do seed public_key < "$f"; done
for f in "$TD"/keys/*.sec; do seed signing_key < "$f"; done

# signature: every Sig line, and nix path-info's signatures.
{ field Sig; grep -o '[A-Za-z0-9._-]*:[A-Za-z0-9+/]\{86\}==' "$TD/path-info.json"; } | sort -u | seed_each signature

for d in "$CORPUS"/*/; do printf '%-14s %3d seeds\n' "$(basename "$d")" "$(find "$d" -type f | wc -l)"; done
