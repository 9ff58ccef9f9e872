//! Listing the bucket under the store's prefix, one ListObjectsV2 page (up to 1000 objects) at a
//! time as the listing is read.

use std::time::SystemTime;

use futures::{StreamExt, TryStreamExt};

use super::{backend, S3Store};
use crate::storage::{ListedObject, Listing, StorageError};

/// Where a listing is: the next page's token, or done.
enum Page {
    First,
    Next(String),
    Done,
}

pub(super) fn list(store: &S3Store) -> Listing {
    let (client, bucket, prefix) = (
        store.client.clone(),
        store.bucket.clone(),
        store.key_prefix.clone(),
    );
    let pages = futures::stream::try_unfold(Page::First, move |page| {
        let (client, bucket, prefix) = (client.clone(), bucket.clone(), prefix.clone());
        async move {
            let token = match page {
                Page::Done => return Ok(None),
                Page::First => None,
                Page::Next(token) => Some(token),
            };
            let out = client
                .list_objects_v2()
                .bucket(&bucket)
                .prefix(&prefix)
                .set_continuation_token(token)
                .send()
                .await
                .map_err(|e| backend(format!("listing s3://{bucket}/{prefix}"), e))?;
            let objects: Vec<Result<ListedObject, StorageError>> = out
                .contents()
                .iter()
                .filter_map(|o| {
                    let name = o.key()?.strip_prefix(&prefix)?.to_owned();
                    Some(Ok(ListedObject {
                        name,
                        keyed: true,
                        size: o.size().unwrap_or(0).max(0) as u64,
                        modified: o.last_modified().and_then(|t| SystemTime::try_from(*t).ok()),
                    }))
                })
                .collect();
            let next = match out.next_continuation_token() {
                Some(token) if out.is_truncated() == Some(true) => Page::Next(token.to_owned()),
                _ => Page::Done,
            };
            Ok::<_, StorageError>(Some((futures::stream::iter(objects), next)))
        }
    });
    Box::pin(pages.try_flatten().boxed())
}
