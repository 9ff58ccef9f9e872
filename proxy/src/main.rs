use std::{process::ExitCode, time::Duration};

use clap::Parser;
use nixcache::{
    cli::{Cli, Command, LogFormat},
    config, db, failure, keys, telemetry,
};

/// How long the exit waits for blocking work still running (a large upload's digest, cut off
/// by the shutdown): dropping the runtime would wait for it to the end.
const BLOCKING_EXIT_WAIT: Duration = Duration::from_secs(1);

fn main() -> ExitCode {
    match run_to_end() {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            eprintln!("error: {}", failure::one_line(&err));
            ExitCode::FAILURE
        }
    }
}

/// The process's exit status when it ran to its end (`fsck` says with it what it found).
fn run_to_end() -> anyhow::Result<u8> {
    // A config file's settings become flags first, so clap checks them like flags.
    let cli = Cli::parse_from(config::expand_args(std::env::args_os().collect())?);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let result = runtime.block_on(run(cli.command));
    runtime.shutdown_timeout(BLOCKING_EXIT_WAIT);
    result
}

/// Runs the command; the exit status it ends with (`fsck` says with it what it found).
async fn run(command: Command) -> anyhow::Result<u8> {
    let done = match command {
        Command::Serve(args) => {
            let telemetry = telemetry::init(args.log_format);
            let result = nixcache::app::serve(*args).await;
            telemetry.shutdown();
            result
        }
        Command::Migrate(args) => {
            let _telemetry = telemetry::init(args.log_format);
            let url = &args.database_url.0;
            println!("{}", db::migrate::report(url, &db::migrate::run(url).await?));
            Ok(())
        }
        Command::Gc(args) => {
            let _telemetry = telemetry::init(args.log_format);
            let report = nixcache::app::collect_garbage(&args).await?;
            println!("{report}");
            Ok(())
        }
        Command::Fsck(args) => {
            let _telemetry = telemetry::init(args.log_format);
            let report = nixcache::app::fsck(&args).await?;
            println!("{report}");
            return Ok(report.outcome().exit_code());
        }
        Command::Warm(args) => warm(&args).await,
        Command::Pin(args) => {
            let _telemetry = telemetry::init(LogFormat::Text);
            let (out, status) = nixcache::app::pin(&args.action).await?;
            println!("{out}");
            return Ok(status);
        }
        Command::Keygen(args) => {
            let _telemetry = telemetry::init(LogFormat::Text);
            let key = nixcache_protocol::SigningKey::generate(&args.name)?;
            keys::write_key_pair(&key, &args.secret_key_file, &args.public_key_file)?;
            println!("{}", key.public_key());
            Ok(())
        }
    };
    done.map(|()| 0)
}

async fn warm(args: &nixcache::cli::WarmArgs) -> anyhow::Result<()> {
    let _telemetry = telemetry::init(LogFormat::Text);
    let report = nixcache::warm::run(&args.options()?).await?;
    println!("{report}");
    anyhow::ensure!(
        report.complete(),
        "{} paths missing, {} requests failed",
        report.missing.len(),
        report.failed.len()
    );
    Ok(())
}
