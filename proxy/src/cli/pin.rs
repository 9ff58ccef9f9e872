//! `nixcache pin add|rm|ls`: pins in the metadata database, which every replica and GC run reads.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use nixcache_protocol::{StorePath, StorePathHash};

use super::{backend::database_url, gc::parse_store_path, DatabaseUrl};

#[derive(Debug, Clone, Args)]
pub struct PinArgs {
    #[command(subcommand)]
    pub action: PinAction,
}

#[derive(Debug, Clone, Subcommand)]
pub enum PinAction {
    /// Pin store paths: GC never evicts them (with --closure, nor anything they reference).
    /// They need not be cached yet.
    Add {
        #[arg(required = true, value_name = "STORE-PATH", value_parser = parse_store_path)]
        paths: Vec<StorePath>,
        /// Hold each path's closure too, as far as the cache holds it (read anew by every GC run).
        #[arg(long)]
        closure: bool,
        #[command(flatten)]
        database: PinDatabaseArgs,
    },
    /// Unpin store paths (or hashes); exits non-zero when one was not pinned.
    Rm {
        #[arg(required = true, value_name = "STORE-PATH", value_parser = parse_path_or_hash)]
        paths: Vec<StorePathHash>,
        #[command(flatten)]
        database: PinDatabaseArgs,
    },
    /// List the pins with what the cache holds of each.
    Ls {
        #[command(flatten)]
        database: PinDatabaseArgs,
    },
}

impl PinAction {
    pub fn database(&self) -> &PinDatabaseArgs {
        match self {
            Self::Add { database, .. } | Self::Rm { database, .. } | Self::Ls { database } => database,
        }
    }
}

/// The database pins are kept in.
#[derive(Debug, Clone, Args)]
pub struct PinDatabaseArgs {
    /// Data dir of a single-machine cache (its SQLite database is the default).
    #[arg(long, env = "NIXCACHE_DATA_DIR", default_value = "./nixcache-data")]
    pub data_dir: PathBuf,

    /// Metadata database: sqlite://PATH, postgres://… or mysql://… (mariadb://…)
    /// [default: sqlite://<data-dir>/db.sqlite].
    #[arg(long, env = "NIXCACHE_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<DatabaseUrl>,
}

impl PinDatabaseArgs {
    pub fn database_url(&self) -> String {
        database_url(&self.data_dir, self.database_url.as_ref())
    }
}

/// `/nix/store/<hash>-<name>`, `<hash>-<name>` or `<hash>`.
fn parse_path_or_hash(s: &str) -> Result<StorePathHash, String> {
    let s = s.trim();
    let base = s
        .strip_prefix(nixcache_protocol::STORE_DIR)
        .and_then(|r| r.strip_prefix('/'))
        .unwrap_or(s);
    let hash = base.split_once('-').map_or(base, |(hash, _)| hash);
    StorePathHash::parse(hash).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn paths_or_hashes_name_a_pin() {
        let hash = "7h7qgvs4kgzsn8a6rb274saxyqh4jxlz";
        for s in [
            format!("/nix/store/{hash}-hello-2.12"),
            format!("{hash}-hello"),
            hash.to_string(),
        ] {
            assert_eq!(parse_path_or_hash(&s).unwrap().to_string(), hash);
        }
        assert!(parse_path_or_hash("/nix/store/short-x").is_err());
        assert!(parse_path_or_hash("").is_err());
    }
}
