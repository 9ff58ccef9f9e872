//! `--config FILE` (or `NIXCACHE_CONFIG`): the same keys as the flags, without the dashes in
//! front (`database-url = "postgres://…"`, `upstream = ["https://…"]`, `s3-path-style = true`),
//! in TOML or YAML (by the file's extension). Precedence: flag > env > file > default. The file's
//! values are turned into flags for the keys that neither a flag nor an env var set, so clap
//! checks them exactly as it checks flags. An unknown key is an error naming it.

use std::{ffi::OsString, path::Path};

use anyhow::{bail, Context};
use clap::{ArgAction, CommandFactory};
use nixcache_formats::settings::{self, Setting, Syntax};

use crate::cli::Cli;

/// `argv` with the config file's settings appended as flags (unchanged without a config file).
pub fn expand_args(argv: Vec<OsString>) -> anyhow::Result<Vec<OsString>> {
    let Some(sub) = argv.get(1).and_then(|s| s.to_str()).map(str::to_owned) else {
        return Ok(argv);
    };
    let command = Cli::command();
    // Only commands that take `--config` read one (`migrate` takes its URL alone).
    let Some(args) = command
        .find_subcommand(&sub)
        .filter(|c| c.get_arguments().any(|a| a.get_long() == Some("config")))
    else {
        return Ok(argv);
    };
    let Some(path) = config_path(&argv) else {
        return Ok(argv);
    };
    let mut out = argv.clone();
    for (key, value) in read(Path::new(&path))? {
        let Some(arg) = args.get_arguments().find(|a| a.get_long() == Some(key.as_str())) else {
            // One file serves every command: `gc` skips what only `serve` takes, and so on.
            if known_elsewhere(&command, &key) {
                continue;
            }
            bail!("unknown key `{key}` in the config file {path} (the keys are `nixcache {sub} --help`'s flags)");
        };
        if key == "config" {
            bail!("the config file {path} cannot name another config file");
        }
        let given_as_flag = argv
            .iter()
            .filter_map(|a| a.to_str())
            .any(|a| a == format!("--{key}") || a.starts_with(&format!("--{key}=")));
        let given_in_env = arg.get_env().is_some_and(|name| std::env::var_os(name).is_some());
        if given_as_flag || given_in_env {
            continue;
        }
        let flag = format!("--{key}");
        match (value, arg.get_action()) {
            (Setting::Bool(true), ArgAction::SetTrue) => out.push(flag.into()),
            (Setting::Bool(false), ArgAction::SetTrue) => {}
            (_, ArgAction::SetTrue) => bail!("`{key}` in {path} must be true or false"),
            (Setting::One(v), _) => out.extend([flag.into(), v.into()]),
            (Setting::Bool(b), _) => out.extend([flag.into(), b.to_string().into()]),
            (Setting::Many(vs), _) => {
                for v in vs {
                    out.extend([OsString::from(&flag), v.into()]);
                }
            }
        }
    }
    Ok(out)
}

/// Whether another command that reads a config file has the flag `key`.
fn known_elsewhere(command: &clap::Command, key: &str) -> bool {
    command.get_subcommands().any(|c| {
        let flags: Vec<_> = c.get_arguments().filter_map(|a| a.get_long()).collect();
        flags.contains(&"config") && flags.contains(&key)
    })
}

/// `--config FILE`, `--config=FILE`, else `NIXCACHE_CONFIG`.
fn config_path(argv: &[OsString]) -> Option<String> {
    let mut it = argv.iter().filter_map(|a| a.to_str());
    while let Some(arg) = it.next() {
        if arg == "--config" {
            return it.next().map(str::to_owned);
        }
        if let Some(path) = arg.strip_prefix("--config=") {
            return Some(path.to_owned());
        }
    }
    std::env::var("NIXCACHE_CONFIG").ok().filter(|p| !p.is_empty())
}

fn read(path: &Path) -> anyhow::Result<Vec<(String, Setting)>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the config file {}", path.display()))?;
    settings::parse(&text, Syntax::of(path))
        .with_context(|| format!("parsing the config file {}", path.display()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use clap::Parser;

    use super::*;
    use crate::cli::Command;

    fn serve_with(file: &str, name: &str, flags: &[&str]) -> anyhow::Result<crate::cli::ServeArgs> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join(name);
        std::fs::write(&path, file)?;
        let mut argv: Vec<OsString> = vec!["nixcache".into(), "serve".into(), "--config".into(), path.into()];
        argv.extend(flags.iter().map(OsString::from));
        let Command::Serve(args) = Cli::try_parse_from(expand_args(argv)?)?.command else {
            unreachable!()
        };
        Ok(*args)
    }

    #[test]
    fn toml_keys_are_the_flags_and_flags_win() {
        let file = "listen = \"127.0.0.1:9000\"\npriority = 30\nupstream = [\"http://a\", \"http://b\"]\n\
                    s3-path-style = true\nlease-ttl = \"3s\"\n";
        let args = serve_with(file, "c.toml", &["--priority", "20"]).unwrap();
        assert_eq!(args.listen.to_string(), "127.0.0.1:9000");
        assert_eq!(args.priority, 20, "a flag wins over the file");
        assert_eq!(args.upstreams, ["http://a", "http://b"]);
        assert!(args.backend.storage.s3_path_style);
        assert_eq!(args.lease_ttl, std::time::Duration::from_secs(3));
    }

    #[test]
    fn yaml_works_and_unknown_keys_are_named() {
        let args = serve_with("negative-ttl: 5s\nupstream:\n  - http://c\n", "c.yaml", &[]).unwrap();
        assert_eq!(args.negative_ttl, std::time::Duration::from_secs(5));
        assert_eq!(args.upstreams, ["http://c"]);
        let err = serve_with("listne = \"x\"\n", "c.toml", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown key `listne`"), "{err}");
        let err = serve_with("s3-path-style = \"yes\"\n", "c.toml", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("true or false"), "{err}");
        // A bad value is refused by clap, as for a flag.
        assert!(serve_with("listen = \"nowhere\"\n", "c.toml", &[]).is_err());
    }

    #[test]
    fn gc_reads_the_serve_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:9\"\nmax-size = \"5G\"\ndata-dir = \"/srv/nix\"\n",
        )
        .unwrap();
        let argv: Vec<OsString> = ["nixcache", "gc", "--config"]
            .iter()
            .map(OsString::from)
            .chain([path.into()])
            .collect();
        let Command::Gc(args) = Cli::try_parse_from(expand_args(argv).unwrap()).unwrap().command else {
            unreachable!()
        };
        assert_eq!(
            (args.max_size, args.backend.data_dir.to_str()),
            (5 << 30, Some("/srv/nix"))
        );
    }

    #[test]
    fn env_wins_over_the_file() {
        // The only test touching this variable.
        std::env::set_var("NIXCACHE_MEMORY_CACHE_TTL", "7s");
        let args = serve_with("memory-cache-ttl = \"9s\"\n", "c.toml", &[]).unwrap();
        std::env::remove_var("NIXCACHE_MEMORY_CACHE_TTL");
        assert_eq!(args.memory_cache_ttl, std::time::Duration::from_secs(7));
    }
}
