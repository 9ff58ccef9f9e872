let
  leaf = builtins.derivation { name = "leaf"; system = builtins.currentSystem; builder = "/bin/sh"; args = ["-c" "echo hi > $out"]; };
  withref = builtins.derivation { name = "withref"; system = builtins.currentSystem; builder = "/bin/sh"; args = ["-c" "echo ${leaf} > $out"]; };
  dir = builtins.derivation { name = "dir-out"; system = builtins.currentSystem; builder = "/bin/sh"; args = ["-c" "/bin/mkdir -p $out/sub; echo a > $out/a; echo ${leaf} > $out/sub/b; echo $out > $out/self"]; };
in { inherit leaf withref dir; }
