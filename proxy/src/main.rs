use clap::Parser;
use nixcache::{
    cli::{Cli, Command, LogFormat},
    config, db, keys, telemetry,
};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // A config file's settings become flags first, so clap checks them like flags.
    let cli = Cli::parse_from(config::expand_args(std::env::args_os().collect())?);
    match cli.command {
        Command::Serve(args) => {
            let telemetry = telemetry::init(args.log_format);
            let result = nixcache::app::serve(*args).await;
            telemetry.shutdown();
            if result.is_ok() {
                // Drained: blocking work still running (a large upload's digest) must not
                // hold the exit, as dropping the runtime would.
                std::process::exit(0);
            }
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
        Command::Keygen(args) => {
            let _telemetry = telemetry::init(LogFormat::Text);
            let key = nixcache_protocol::SigningKey::generate(&args.name)?;
            keys::write_key_pair(&key, &args.secret_key_file, &args.public_key_file)?;
            println!("{}", key.public_key());
            Ok(())
        }
    }
}
