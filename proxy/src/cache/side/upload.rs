//! `PUT /<hash>.ls` and `PUT /log/<drv>`: the body, decoded from its `Content-Encoding`, stored
//! unless the file is there already (nothing stored is overwritten), within
//! [`TRANSFER_LIMIT`](super::TRANSFER_LIMIT), `--max-upload-size` as sent and
//! [`MAX_SIDE_FILE`] decoded.

use futures::StreamExt;
use nixcache_formats::content_encoding::ContentEncoding;
use nixcache_protocol::SideFile;

use super::{side_transfer, Problem, MAX_SIDE_FILE, TRANSFER_LIMIT};
use crate::{
    cache::{decode, Cache, Stored, UploadError},
    storage::BlobKey,
};

impl Cache {
    pub async fn upload_side_file<S>(
        &self,
        file: &SideFile,
        encoding: ContentEncoding,
        body: S,
        max_upload_size: u64,
    ) -> Result<Stored, UploadError>
    where
        S: futures::Stream<Item = Result<bytes::Bytes, axum::Error>> + Send + 'static,
    {
        let key = BlobKey::for_side_file(file);
        if self.db.get_side_file(key.as_str()).await?.is_some() {
            return Ok(Stored::Exists);
        }
        let _permit = side_transfer(&self.side_uploads).await?;
        let body = Box::pin(body.map(|c| c.map_err(std::io::Error::other)));
        // Two taps: what went wrong with the body as sent, and once decoded.
        let (sent_problem, body) = Problem::tap(decode::limited(body, max_upload_size));
        let (problem, body) = Problem::tap(decode::decoded(encoding, body, MAX_SIDE_FILE));
        let stored = tokio::time::timeout(TRANSFER_LIMIT, self.storage.put_stream(&key, body)).await;
        let size = match stored {
            Ok(Ok(size)) => size,
            Ok(Err(err)) => {
                let sent_too_large =
                    matches!(sent_problem.take(), Some((std::io::ErrorKind::FileTooLarge, _)));
                return Err(match problem.take() {
                    _ if sent_too_large => UploadError::TooLarge {
                        limit: max_upload_size,
                    },
                    Some((std::io::ErrorKind::FileTooLarge, _)) => UploadError::TooLargeDecoded {
                        what: file.kind(),
                        limit: MAX_SIDE_FILE,
                    },
                    Some((_, reason)) => UploadError::Invalid(format!("{file}: {reason}")),
                    None => err.into(),
                });
            }
            Err(_) => {
                return Err(UploadError::TimedOut {
                    after: TRANSFER_LIMIT,
                })
            }
        };
        self.record_side_file(&key, size, true).await?;
        self.side_negative.remove(&key);
        Ok(Stored::Created)
    }
}
