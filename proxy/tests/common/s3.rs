//! `--storage s3` on a test s3s-fs: the credential variables and the serve flags.

use nixcache_testsupport::s3::{S3sFs, CREDENTIAL_ENV};

/// Points the standard AWS chain at the test credentials. Process-wide, so a test binary using
/// it holds one test (or one server).
fn use_test_credentials() {
    for (name, value) in CREDENTIAL_ENV {
        std::env::set_var(name, value);
    }
}

/// A fresh s3s-fs with a new bucket, the test credentials in the environment, and the `serve`
/// flags for NARs under `prefix` in it; `None` when s3s-fs is missing (and not required).
pub async fn server_with_bucket(prefix: &str) -> Option<(S3sFs, String, Vec<String>)> {
    let server = S3sFs::start().await.unwrap()?;
    let bucket = server.create_bucket().unwrap();
    use_test_credentials();
    let flags = server.serve_args(&bucket, prefix);
    Some((server, bucket, flags))
}

/// Where s3s-fs keeps the object of NAR file `name` stored under `prefix`.
pub fn object_path(server: &S3sFs, bucket: &str, prefix: &str, name: &str) -> std::path::PathBuf {
    server.data_dir().join(bucket).join(prefix).join("nar").join(name)
}
