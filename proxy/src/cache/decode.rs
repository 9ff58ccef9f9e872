//! A byte stream decoded from its `Content-Encoding` as it goes, bounded in decoded bytes: the
//! decoders are blocking readers, so they run on a blocking thread fed from the stream.

use std::io::{self, Read};

use bytes::Bytes;
use futures::StreamExt;
use nixcache_formats::content_encoding::ContentEncoding;
use tokio_util::io::{StreamReader, SyncIoBridge};

use crate::storage::ByteStream;

/// Decoded bytes per chunk.
const CHUNK: usize = 64 << 10;
/// Chunks decoded ahead of the consumer.
const AHEAD: usize = 4;

/// `body` decoded from `encoding`; the stream fails once more than `limit` decoded bytes came
/// (or the input is not valid in its encoding). Dropping it ends the input and so the decoding
/// thread.
pub fn decoded(encoding: ContentEncoding, body: ByteStream, limit: u64) -> ByteStream {
    if encoding == ContentEncoding::Identity {
        return limited(body, limit);
    }
    // `None` says the decoder reached the end: a channel closed without it (the thread never
    // ran, at shutdown) is a failure, never a short file taken for a whole one.
    let (tx, rx) = tokio::sync::mpsc::channel::<Option<io::Result<Bytes>>>(AHEAD);
    // The input ends when nobody reads the output any more, so a decoder blocked reading it
    // (a trickling upstream) returns and its thread ends with the consumer.
    let gone = tx.clone();
    let body = body.take_until(Box::pin(async move { gone.closed().await }));
    let reader = SyncIoBridge::new(StreamReader::new(body));
    tokio::task::spawn_blocking(move || {
        let decoding = std::panic::AssertUnwindSafe(|| {
            encoding
                .decoder(reader)
                .and_then(|decoder| pump(decoder.take(limit + 1), limit, &tx))
        });
        // A decoder that panics must fail the stream: ending it would store a truncated file.
        let result = std::panic::catch_unwind(decoding)
            .unwrap_or_else(|_| Err(io::Error::other("the decoder panicked")));
        let last = match result {
            Ok(()) => None,
            Err(err) => {
                let message = format!("{} decoding failed: {err}", encoding.as_str());
                Some(Err(io::Error::new(err.kind(), message)))
            }
        };
        let _ = tx.blocking_send(last);
    });
    Box::pin(futures::stream::unfold(Some(rx), |rx| async move {
        let mut rx = rx?;
        match rx.recv().await {
            Some(Some(chunk)) => Some((chunk, Some(rx))),
            Some(None) => None,
            None => Some((Err(io::Error::other("the decoder stopped before the end")), None)),
        }
    }))
}

/// Sends what `decoder` gives, in chunks, until its end; stops quietly when nobody listens.
fn pump(
    mut decoder: impl Read,
    limit: u64,
    tx: &tokio::sync::mpsc::Sender<Option<io::Result<Bytes>>>,
) -> io::Result<()> {
    let mut total = 0u64;
    loop {
        let mut buf = vec![0; CHUNK];
        let n = decoder.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        total += n as u64;
        if total > limit {
            return Err(too_large(limit, "once decoded"));
        }
        buf.truncate(n);
        if tx.blocking_send(Some(Ok(Bytes::from(buf)))).is_err() {
            return Ok(());
        }
    }
}

fn too_large(limit: u64, what: &str) -> io::Error {
    let limit = crate::units::format_size(limit);
    io::Error::new(io::ErrorKind::FileTooLarge, format!("larger than {limit} {what}"))
}

/// `body`, failing once more than `limit` bytes came.
pub fn limited(body: ByteStream, limit: u64) -> ByteStream {
    let mut total = 0u64;
    Box::pin(body.map(move |chunk| {
        let chunk = chunk?;
        total += chunk.len() as u64;
        if total > limit {
            return Err(too_large(limit, "as sent"));
        }
        Ok(chunk)
    }))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn stream(data: Vec<u8>) -> ByteStream {
        let parts: Vec<io::Result<Bytes>> =
            data.chunks(1000).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
        Box::pin(futures::stream::iter(parts))
    }

    async fn collect(mut body: ByteStream) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(chunk) = body.next().await {
            out.extend_from_slice(&chunk?);
        }
        Ok(out)
    }

    #[tokio::test]
    async fn decodes_and_bounds() {
        let text: Vec<u8> = (0..300_000u32).flat_map(|i| i.to_le_bytes()).collect();
        let zstd = zstd::encode_all(&text[..], 3).unwrap();
        let out = collect(decoded(ContentEncoding::Zstd, stream(zstd.clone()), 2 << 20)).await;
        assert_eq!(out.unwrap(), text);
        let err = collect(decoded(ContentEncoding::Zstd, stream(zstd.clone()), 100_000))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("once decoded"), "{err}");
        let cut = zstd[..zstd.len() / 2].to_vec();
        let err = collect(decoded(ContentEncoding::Zstd, stream(cut), 2 << 20))
            .await
            .unwrap_err();
        assert!(err.to_string().starts_with("zstd decoding failed"), "{err}");
        assert_eq!(
            collect(decoded(ContentEncoding::Identity, stream(text.clone()), 2 << 20))
                .await
                .unwrap(),
            text
        );
        assert!(collect(limited(stream(text), 1000)).await.is_err());
    }

    #[tokio::test]
    async fn dropping_the_output_ends_a_decoder_waiting_for_input() {
        // An upstream that sent a little and then nothing: the decoding thread waits for input.
        let held = std::sync::Arc::new(());
        let guard = std::sync::Arc::clone(&held);
        let first = zstd::encode_all(&b"partial"[..], 3).unwrap();
        let body: ByteStream = Box::pin(
            futures::stream::iter([Ok(Bytes::from(first[..first.len() / 2].to_vec()))])
                .chain(futures::stream::pending())
                .map(move |chunk| {
                    let _ = &guard;
                    chunk
                }),
        );
        let mut out = decoded(ContentEncoding::Zstd, body, 1 << 20);
        let waited = tokio::time::timeout(std::time::Duration::from_millis(100), out.next()).await;
        assert!(waited.is_err(), "nothing can be decoded yet");
        drop(out);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while std::sync::Arc::strong_count(&held) > 1 {
            assert!(std::time::Instant::now() < deadline, "the input is still held");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }
}
