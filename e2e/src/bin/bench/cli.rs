//! The bench's command line: [`parse_args`] turns it into the run's [`Settings`].

use std::time::Duration;

use clap::builder::{PossibleValuesParser, RangedU64ValueParser};
use clap::{Parser, ValueEnum};
use nixcache_e2e::bench::soak::{SoakSettings, DEFAULT_MINUTES};
use nixcache_e2e::bench::{Settings, PARTS};
use nixcache_e2e::cluster::Backend;
use nixcache_e2e::fixtures::{BIG_MIB, MAX_BIG_MIB};

/// The command line.
#[derive(Debug, Parser)]
#[command(
    name = "bench",
    about = "Runs nixcache and nginx side by side on the same fixture cache and prints a markdown comparison",
    after_help = "env: NIXCACHE_BIN=<path> uses that nixcache instead of building it \
                  (cargo build --release -p nixcache)"
)]
struct Cli {
    /// 3 s load runs instead of 10 s.
    #[arg(long)]
    quick: bool,

    /// Runs per figure; figures are median (min–max).
    #[arg(long, value_name = "N", default_value_t = 3,
          value_parser = RangedU64ValueParser::<usize>::new().range(1..=99))]
    runs: usize,

    /// Some of the parts, comma-separated [default: all but soak].
    #[arg(long, value_name = "PART,...", value_delimiter = ',',
          value_parser = PossibleValuesParser::new(PARTS))]
    only: Vec<String>,

    /// Size in MiB of the fixture's big (incompressible) NAR; another size is another fixture,
    /// built once (xz up to 256 MiB, zstd above; 1024 MiB: 2 GiB of disk, and 1 GiB more per
    /// nixcache data dir and nginx cache while they run).
    #[arg(long, value_name = "N", default_value_t = BIG_MIB,
          value_parser = clap::value_parser!(u64).range(1..=MAX_BIG_MIB))]
    big_mib: u64,

    /// What nixcache stores into.
    #[arg(long, value_name = "B", value_enum, default_value_t = BackendArg::Local)]
    backend: BackendArg,

    /// Length of the soak in minutes.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MINUTES,
          value_parser = clap::value_parser!(u64).range(1..=1440))]
    soak_minutes: u64,

    /// Seconds between the soak's samples [default: a sixtieth of the soak, at least 10].
    #[arg(long, value_name = "S", value_parser = clap::value_parser!(u64).range(1..))]
    soak_interval: Option<u64>,
}

/// `--backend`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum BackendArg {
    /// SQLite and a directory.
    #[value(name = "local")]
    Local,
    /// A fresh PostgreSQL database and s3s-fs bucket for every nixcache started.
    #[value(name = "postgres-s3")]
    PostgresS3,
    /// A fresh MySQL database and s3s-fs bucket for every nixcache started.
    #[value(name = "mysql-s3")]
    MysqlS3,
}

impl From<BackendArg> for Backend {
    fn from(arg: BackendArg) -> Backend {
        match arg {
            BackendArg::Local => Backend::SharedDir,
            BackendArg::PostgresS3 => Backend::PostgresS3,
            BackendArg::MysqlS3 => Backend::MySqlS3,
        }
    }
}

impl Cli {
    /// The run's settings; `args` is the command line as typed (without the program name).
    fn into_settings(self, args: &[String]) -> Settings {
        let mut command = String::from("cargo run --release -p nixcache-e2e --bin bench --");
        for a in args {
            command.push(' ');
            command.push_str(a);
        }
        Settings {
            quick: self.quick,
            runs: self.runs,
            duration: Duration::from_secs(if self.quick { 3 } else { 10 }),
            command,
            only: self.only,
            big_mib: self.big_mib,
            backend: self.backend.into(),
            soak: SoakSettings {
                minutes: self.soak_minutes,
                interval: self.soak_interval.map(Duration::from_secs),
            },
        }
    }
}

/// The settings `args` (the command line without the program name) ask for; `Err` for a usage
/// error, and for `--help` (which [`clap::Error::print`] prints to stdout).
pub fn parse_args(args: &[String]) -> Result<Settings, clap::Error> {
    let cli = Cli::try_parse_from(std::iter::once("bench").chain(args.iter().map(String::as_str)))?;
    Ok(cli.into_settings(args))
}

#[cfg(test)]
mod tests {
    use clap::error::ErrorKind;
    use clap::CommandFactory;

    use super::*;

    fn parse(line: &str) -> Result<Settings, clap::Error> {
        let args: Vec<String> = line.split_whitespace().map(String::from).collect();
        parse_args(&args)
    }

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn a_representative_command_line() -> Result<(), clap::Error> {
        let line = "--quick --runs 5 --only replicas,gc --only soak --big-mib 1024 --backend postgres-s3 \
                    --soak-minutes 30 --soak-interval 15";
        let s = parse(line)?;
        assert!(s.quick);
        assert_eq!(s.runs, 5);
        assert_eq!(s.duration, Duration::from_secs(3));
        assert_eq!(s.only, ["replicas", "gc", "soak"]);
        assert_eq!(s.big_mib, 1024);
        assert_eq!(s.backend, Backend::PostgresS3);
        assert_eq!(s.soak.minutes, 30);
        assert_eq!(s.soak.interval, Some(Duration::from_secs(15)));
        let typed = line.split_whitespace().collect::<Vec<_>>().join(" ");
        assert_eq!(
            s.command,
            format!("cargo run --release -p nixcache-e2e --bin bench -- {typed}")
        );
        Ok(())
    }

    #[test]
    fn defaults() -> Result<(), clap::Error> {
        let s = parse("")?;
        assert!(!s.quick);
        assert_eq!(s.runs, 3);
        assert_eq!(s.duration, Duration::from_secs(10));
        assert!(s.only.is_empty());
        assert_eq!(s.big_mib, BIG_MIB);
        assert_eq!(s.backend, Backend::SharedDir);
        assert_eq!(s.soak.minutes, SoakSettings::default().minutes);
        assert_eq!(s.soak.interval, None);
        assert_eq!(s.command, "cargo run --release -p nixcache-e2e --bin bench --");
        assert!(parse("--backend mysql-s3")?.backend == Backend::MySqlS3);
        Ok(())
    }

    #[test]
    fn the_readmes_bench_commands_parse() -> Result<(), clap::Error> {
        let readme = include_str!("../../../../README.md");
        let marker = "--bin bench --";
        let lines: Vec<&str> = readme
            .lines()
            .filter_map(|l| Some(l.split_once(marker)?.1))
            .map(|rest| rest.split('#').next().unwrap_or_default())
            .collect();
        assert!(lines.len() >= 6, "{lines:?}");
        for line in lines {
            parse(line)?;
        }
        Ok(())
    }

    #[test]
    fn wrong_values_and_help_are_not_settings() {
        for line in [
            "--runs 0",
            "--runs 100",
            "--only nar,nope",
            "--big-mib 0",
            "--backend s3",
            "--soak-minutes 1441",
            "--soak-interval 0",
            "--frobnicate",
        ] {
            assert!(parse(line).is_err(), "{line}");
        }
        let help = parse("--runs 2 --help").err().map(|e| e.kind());
        assert_eq!(help, Some(ErrorKind::DisplayHelp));
    }
}
