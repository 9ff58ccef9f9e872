rec {
  dep = derivation { name = "ca-dep"; system = builtins.currentSystem; builder = "/bin/sh"; args = ["-c" "echo dep > $out"]; __contentAddressed = true; outputHashMode = "recursive"; outputHashAlgo = "sha256"; };
  top = derivation { name = "ca-top"; system = builtins.currentSystem; builder = "/bin/sh"; args = ["-c" "echo top; read x < ${dep}; echo \"$x\" > $out; echo hi > $dev"]; outputs = ["out" "dev"]; __contentAddressed = true; outputHashMode = "recursive"; outputHashAlgo = "sha256"; };
}
