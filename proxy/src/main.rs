use clap::Parser;
use nixcache::{
    cli::{Cli, Command, LogFormat},
    keys, telemetry,
};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => {
            telemetry::init(args.log_format);
            nixcache::app::serve(*args).await
        }
        Command::Keygen(args) => {
            telemetry::init(LogFormat::Text);
            let key = nixcache_protocol::SigningKey::generate(&args.name)?;
            keys::write_key_pair(&key, &args.secret_key_file, &args.public_key_file)?;
            println!("{}", key.public_key());
            Ok(())
        }
    }
}
