//! An S3 bucket (AWS, MinIO, Ceph, Garage, s3s-fs, ...): objects at `<prefix>nar/<key>`.
//!
//! Credentials come from the standard AWS chain (env, profile, web identity for IRSA, ECS,
//! IMDS) and are never logged. Reads stream the object; writes stream too, as one PutObject
//! for small objects and a multipart upload otherwise (`upload.rs`). S3 makes an object
//! visible only once its upload completes, which gives the trait's all-or-nothing rule.

mod list;
mod read;
mod upload;

use std::{fmt, io, time::Duration};

use async_trait::async_trait;
use aws_sdk_s3::{
    config::{timeout::TimeoutConfig, BehaviorVersion, Credentials, Region},
    error::SdkError,
    operation::get_object::GetObjectOutput,
    presigning::PresigningConfig,
    Client,
};
use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};

use super::{BlobKey, BlobRead, BlobStore, ByteRange, ByteStream, StorageError};
pub use read::ReadAhead;

/// The region used when neither the flag nor the AWS chain names one.
const DEFAULT_REGION: &str = "us-east-1";

/// Where the bucket is and how to address it.
#[derive(Clone, Default)]
pub struct S3Config {
    pub bucket: String,
    /// A custom endpoint such as `http://minio:9000`; AWS itself when `None`.
    pub endpoint: Option<String>,
    /// `None` asks the AWS chain (env, profile, IMDS), else `us-east-1`.
    pub region: Option<String>,
    /// `https://host/bucket/key` instead of `https://bucket.host/key`; most self-hosted servers need it.
    pub path_style: bool,
    /// Prepended to every object name, e.g. `nixcache/`; a missing trailing `/` is added.
    pub prefix: String,
    /// Fixed credentials instead of the AWS chain; set by tests, never from flags.
    pub credentials: Option<Credentials>,
    /// The defaults, except in tests.
    pub timeouts: S3Timeouts,
    /// Ranged GETs in flight per large read.
    pub read_ahead: ReadAhead,
}

/// Bounds on S3 requests, so that a hung or unreachable server fails requests (503) instead of
/// holding them. Without them the SDK waits forever for a server that accepts connections but
/// never answers (it sets only a connect timeout).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct S3Timeouts {
    /// TCP and TLS connect.
    pub connect: Duration,
    /// One attempt of a request without a large body (HEAD, GET, DELETE, ...), until the
    /// response headers. The SDK makes up to three attempts.
    pub attempt: Duration,
    /// All attempts of such a request together.
    pub operation: Duration,
    /// One attempt of a request that sends a part (PutObject, UploadPart) or that S3 may take
    /// long to answer (CompleteMultipartUpload); all attempts get three times this.
    pub upload_attempt: Duration,
    /// Longest pause while reading an object's body.
    pub body_idle: Duration,
}

impl Default for S3Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(5),
            attempt: Duration::from_secs(10),
            operation: Duration::from_secs(30),
            // An 8 MiB part, four at a time, at 1 MiB/s takes about 32 s.
            upload_attempt: Duration::from_secs(300),
            body_idle: Duration::from_secs(30),
        }
    }
}

impl S3Timeouts {
    fn for_requests(&self) -> TimeoutConfig {
        TimeoutConfig::builder()
            .connect_timeout(self.connect)
            .operation_attempt_timeout(self.attempt)
            .operation_timeout(self.operation)
            .build()
    }

    fn for_uploads(&self) -> TimeoutConfig {
        TimeoutConfig::builder()
            .connect_timeout(self.connect)
            .operation_attempt_timeout(self.upload_attempt)
            .operation_timeout(self.upload_attempt * 3)
            .build()
    }
}

impl fmt::Debug for S3Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Config")
            .field("bucket", &self.bucket)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("path_style", &self.path_style)
            .field("prefix", &self.prefix)
            .field("credentials", &self.credentials.as_ref().map(|_| "***"))
            .field("timeouts", &self.timeouts)
            .field("read_ahead", &self.read_ahead)
            .finish()
    }
}

impl S3Config {
    /// `prefix` as stored: no leading `/`, one trailing `/` unless empty.
    fn normalized_prefix(&self) -> String {
        let trimmed = self.prefix.trim_matches('/');
        if trimmed.is_empty() {
            String::new()
        } else {
            format!("{trimmed}/")
        }
    }

    /// The endpoint as named in messages.
    fn endpoint_label(&self) -> String {
        self.endpoint.clone().unwrap_or_else(|| "AWS S3".into())
    }
}

#[derive(Clone)]
pub struct S3Store {
    client: Client,
    bucket: String,
    /// `<prefix>nar/`: the object name of a key is this plus the key.
    key_prefix: String,
    endpoint: String,
    timeouts: S3Timeouts,
    read_ahead: ReadAhead,
}

impl S3Store {
    /// Builds the client; does not contact the bucket (call `ping` for that).
    pub async fn connect(config: &S3Config) -> Result<Self, StorageError> {
        if config.bucket.trim().is_empty() {
            return Err(StorageError::Backend {
                context: "configuring S3".into(),
                error: "no bucket given".into(),
            });
        }
        Ok(Self {
            client: build_client(config).await,
            bucket: config.bucket.clone(),
            key_prefix: format!("{}nar/", config.normalized_prefix()),
            endpoint: config.endpoint_label(),
            timeouts: config.timeouts,
            read_ahead: config.read_ahead.clone(),
        })
    }

    /// Per-request settings for requests that carry a part, or that S3 may take long to answer.
    fn upload_config(&self) -> aws_sdk_s3::config::Builder {
        aws_sdk_s3::config::Builder::new().timeout_config(self.timeouts.for_uploads())
    }

    fn object_name(&self, key: &BlobKey) -> String {
        format!("{}{key}", self.key_prefix)
    }

    /// The 416 path: S3 says only that the range is bad, so ask for the size.
    async fn bad_range(&self, key: &BlobKey, range: ByteRange) -> StorageError {
        match self.stat(key).await {
            Ok(Some(size)) => StorageError::BadRange {
                key: key.to_string(),
                start: range.start,
                end: range.end,
                size,
            },
            Ok(None) => StorageError::NotFound(key.to_string()),
            Err(e) => e,
        }
    }
}

/// An SDK client using rustls on ring (as reqwest does), the AWS credential chain unless fixed
/// credentials are given, and the region from the config, the chain or `us-east-1`.
pub(crate) async fn build_client(config: &S3Config) -> Client {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https();
    let mut loader = aws_config::defaults(BehaviorVersion::latest()).http_client(http);
    if let Some(region) = &config.region {
        loader = loader.region(Region::new(region.clone()));
    }
    if let Some(credentials) = &config.credentials {
        loader = loader.credentials_provider(credentials.clone());
    }
    let shared = loader.load().await;
    let mut builder = aws_sdk_s3::config::Builder::from(&shared)
        .force_path_style(config.path_style)
        .timeout_config(config.timeouts.for_requests());
    if shared.region().is_none() {
        builder = builder.region(Region::from_static(DEFAULT_REGION));
    }
    if let Some(endpoint) = &config.endpoint {
        builder = builder.endpoint_url(endpoint);
    }
    Client::from_conf(builder.build())
}

/// The HTTP status of a failed request, when the server answered at all.
fn status<E>(err: &SdkError<E, aws_sdk_s3::config::http::HttpResponse>) -> Option<u16> {
    err.raw_response().map(|r| r.status().as_u16())
}

fn backend<E>(
    context: impl Into<String>,
    err: SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
) -> StorageError
where
    E: std::error::Error + Send + Sync + 'static,
{
    StorageError::Backend {
        context: context.into(),
        error: Box::new(err),
    }
}

/// `bytes START-END/TOTAL` from a Content-Range header.
fn parse_content_range(value: &str) -> Option<(u64, u64, u64)> {
    let (span, total) = value.strip_prefix("bytes ")?.split_once('/')?;
    let (start, end) = span.split_once('-')?;
    Some((start.parse().ok()?, end.parse().ok()?, total.parse().ok()?))
}

/// The object's total size from a GetObject answer, checking a ranged answer covers the range.
fn served_size(key: &BlobKey, range: Option<ByteRange>, out: &GetObjectOutput) -> Result<u64, StorageError> {
    let Some(r) = range else {
        return Ok(out.content_length().unwrap_or(0).max(0) as u64);
    };
    match out.content_range().and_then(parse_content_range) {
        Some((start, end, total)) if (start, end) == (r.start, r.end) => Ok(total),
        // S3 shortens a range that runs past the end; the trait refuses it instead.
        Some((_, _, total)) => Err(StorageError::BadRange {
            key: key.to_string(),
            start: r.start,
            end: r.end,
            size: total,
        }),
        None => Err(StorageError::Backend {
            context: format!("reading {key}"),
            error: "a ranged read came back without a valid Content-Range".into(),
        }),
    }
}

/// The SDK's body as our stream: chunks as they arrive, nothing buffered beyond them. A pause
/// longer than `idle` while waiting for the server fails the stream (the SDK has no such bound).
fn into_stream(body: aws_sdk_s3::primitives::ByteStream, idle: Duration) -> ByteStream {
    Box::pin(futures::stream::unfold(Some(body), move |body| async move {
        let mut body = body?;
        match tokio::time::timeout(idle, body.try_next()).await {
            Ok(Ok(Some(bytes))) => Some((Ok(bytes), Some(body))),
            Ok(Ok(None)) => None,
            Ok(Err(e)) => Some((Err(io::Error::other(e)), None)),
            Err(_) => {
                let msg = format!("S3 sent no data for {idle:?} while streaming an object");
                Some((Err(io::Error::new(io::ErrorKind::TimedOut, msg)), None))
            }
        }
    }))
}

#[async_trait]
impl BlobStore for S3Store {
    async fn stat(&self, key: &BlobKey) -> Result<Option<u64>, StorageError> {
        let head = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(self.object_name(key))
            .send()
            .await;
        match head {
            Ok(out) => Ok(Some(out.content_length().unwrap_or(0).max(0) as u64)),
            Err(e) if status(&e) == Some(404) => Ok(None),
            Err(e) => Err(backend(format!("looking up {key}"), e)),
        }
    }

    async fn get(&self, key: &BlobKey, range: Option<ByteRange>) -> Result<BlobRead, StorageError> {
        let Some(r) = range else {
            return self.get_whole(key).await;
        };
        if r.start > r.end {
            return Err(self.bad_range(key, r).await);
        }
        if !self.read_ahead.splits(r.end - r.start + 1) {
            let (size, body) = self.get_range(key, r).await?;
            return Ok(BlobRead { size, body });
        }
        let first = ByteRange {
            start: r.start,
            end: r.start + self.read_ahead.part_size - 1,
        };
        let (size, head) = self.get_range(key, first).await?;
        if r.end >= size {
            return Err(StorageError::BadRange {
                key: key.to_string(),
                start: r.start,
                end: r.end,
                size,
            });
        }
        let body = self.read_in_parts(key, r, head);
        Ok(BlobRead { size, body })
    }

    async fn put_stream(&self, key: &BlobKey, body: ByteStream) -> Result<u64, StorageError> {
        upload::put_stream(self, key, body).await
    }

    async fn put_file(&self, key: &BlobKey, staged: &std::path::Path) -> Result<(), StorageError> {
        upload::put_file(self, key, staged).await?;
        if let Err(err) = tokio::fs::remove_file(staged).await {
            tracing::warn!(nar = %key, error = %err, "could not remove the uploaded temp file");
        }
        Ok(())
    }

    async fn delete(&self, key: &BlobKey) -> Result<bool, StorageError> {
        // DeleteObject succeeds for absent objects too, so ask first.
        if self.stat(key).await?.is_none() {
            return Ok(false);
        }
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(self.object_name(key))
            .send()
            .await
            .map_err(|e| backend(format!("deleting {key}"), e))?;
        Ok(true)
    }

    fn list(&self) -> crate::storage::Listing {
        list::list(self)
    }

    /// Signed with the store's credentials for this one GET of a NAR; a Range header is not
    /// part of the signature, so ranged reads work through it.
    async fn presigned_get(&self, key: &BlobKey, expires: Duration) -> Result<Option<String>, StorageError> {
        let config = PresigningConfig::expires_in(expires).map_err(|e| StorageError::Backend {
            context: format!("presigning a URL for {key}"),
            error: Box::new(e),
        })?;
        let request = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.object_name(key))
            // Some servers (s3s-fs) keep the `aws-chunked` of a checksummed upload as the
            // object's Content-Encoding, which Nix and curl refuse. `none` is what both take as
            // "not encoded" (`identity` would make Nix 2.8 look for a compression).
            .response_content_encoding("none")
            .response_content_type(nixcache_protocol::MIME_NAR)
            .presigned(config)
            .await
            .map_err(|e| backend(format!("presigning a URL for {key}"), e))?;
        Ok(Some(request.uri().to_owned()))
    }

    async fn ping(&self) -> Result<(), StorageError> {
        let result = self.client.head_bucket().bucket(&self.bucket).send().await;
        let Err(err) = result else { return Ok(()) };
        // HeadBucket errors have no body, so the status is all there is to explain.
        let why = match status(&err) {
            Some(404) => "the bucket does not exist (HTTP 404)".to_owned(),
            Some(301) => "the bucket is in another region; set --s3-region (HTTP 301)".to_owned(),
            Some(code @ (400 | 403)) => {
                format!("access denied; check the AWS credentials and the bucket policy (HTTP {code})")
            }
            Some(code) => format!("the server refused the request (HTTP {code})"),
            None => "the server could not be reached".to_owned(),
        };
        Err(backend(
            format!("checking bucket {} at {}: {why}", self.bucket, self.endpoint),
            err,
        ))
    }
}

#[cfg(test)]
mod tests;
