//! Writes the NixCache CustomResourceDefinition to `crds/nixcache.yaml` (or to stdout with `-`).
//!
//! ```sh
//! cargo run -p nixcache-crds --bin crdgen            # rewrites crds/nixcache.yaml
//! cargo run -p nixcache-crds --bin crdgen -- - | kubectl apply -f -
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let yaml = match nixcache_crds::crd_yaml() {
        Ok(yaml) => yaml,
        Err(e) => {
            eprintln!("crdgen: cannot serialise the CRD: {e}");
            return ExitCode::FAILURE;
        }
    };
    if std::env::args().nth(1).as_deref() == Some("-") {
        print!("{yaml}");
        return ExitCode::SUCCESS;
    }
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("nixcache.yaml");
    match std::fs::write(&path, yaml) {
        Ok(()) => {
            eprintln!("crdgen: wrote {}", path.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("crdgen: cannot write {}: {e}", path.display());
            ExitCode::FAILURE
        }
    }
}
