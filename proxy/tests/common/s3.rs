//! `--storage s3` on a test s3s-fs: the credential variables and the serve flags.

use nixcache::testutil::s3::{S3sFs, ACCESS_KEY, SECRET_KEY};

/// Points the standard AWS chain at the test credentials: no profile, no instance metadata
/// probes. Process-wide, so a test binary using it holds one test (or one server).
pub fn use_test_credentials() {
    std::env::set_var("AWS_ACCESS_KEY_ID", ACCESS_KEY);
    std::env::set_var("AWS_SECRET_ACCESS_KEY", SECRET_KEY);
    std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
    std::env::set_var("AWS_CONFIG_FILE", "/nonexistent");
    std::env::set_var("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent");
}

/// `serve` flags for NARs in `bucket` on `server`, under `prefix`.
pub fn serve_flags(server: &S3sFs, bucket: &str, prefix: &str) -> Vec<String> {
    let endpoint = server.endpoint();
    let pairs = [
        ("--storage", "s3"),
        ("--s3-bucket", bucket),
        ("--s3-endpoint", &endpoint),
        ("--s3-region", "us-east-1"),
        ("--s3-prefix", prefix),
    ];
    let mut args: Vec<String> = pairs
        .iter()
        .flat_map(|(f, v)| [f.to_string(), v.to_string()])
        .collect();
    args.push("--s3-path-style".into());
    args
}

/// Where s3s-fs keeps the object of NAR file `name` stored under `prefix`.
pub fn object_path(server: &S3sFs, bucket: &str, prefix: &str, name: &str) -> std::path::PathBuf {
    server.data_dir().join(bucket).join(prefix).join("nar").join(name)
}
