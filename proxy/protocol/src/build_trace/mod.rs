//! Build traces of content-addressed derivations: which store path an output of a derivation was
//! built to, signed like a narinfo. Nix asks a binary cache for them in one of two layouts, with
//! no fallback from one to the other:
//!
//! - `realisations/sha256:<hex>!<output>.doi` (Nix 2.4 to 2.34; 2.32+ sends the `!` as `%21`),
//!   keyed by the derivation's hash modulo, a JSON object `{dependentRealisations, id, outPath,
//!   signatures}` whose signatures cover the object without `signatures`;
//! - `build-trace-v2/<drv base name>/<output>.doi` (Nix 2.35+), keyed by the resolved
//!   derivation's path, a JSON object `{outPath, signatures}` whose signatures cover
//!   `{"key":{"drvPath","outputName"},"value":{"outPath"}}`.
//!
//! Fingerprints are JSON with sorted keys and no spaces, as nlohmann's `dump()` prints them.
//! Nix clients do not check these signatures themselves; a cache in between is the only check.

mod canonical_json;
mod doc;
mod key;

pub use doc::{BuildTrace, MAX_BUILD_TRACE};
pub use key::{BuildTraceKey, MAX_OUTPUT_NAME};

/// MIME type of build traces.
pub const MIME_BUILD_TRACE: &str = "application/json";

/// Why a path or a document is not a build trace.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BuildTraceError {
    /// Not `realisations/sha256:<hex>!<output>.doi` or `build-trace-v2/<drv>/<output>.doi`.
    #[error("build trace path must be realisations/sha256:<64 hex>!<output>.doi or build-trace-v2/<hash>-<name>.drv/<output>.doi")]
    InvalidPath,
    /// Not JSON of the layout's shape.
    #[error("malformed build trace: {0}")]
    Malformed(String),
    /// The document names another derivation output than its path.
    #[error("build trace is for {found}, not {expected}")]
    WrongId {
        /// The id the path names.
        expected: String,
        /// The id inside the document.
        found: String,
    },
}
