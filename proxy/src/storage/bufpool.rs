//! Reusable read buffers for streaming NARs. Each chunk handed to the HTTP layer is a `Bytes`
//! that returns its buffer to the pool when dropped, so serving a NAR allocates nothing per
//! chunk: no page faults from fresh mappings (glibc maps and unmaps blocks this size), and
//! memory bounded by what is in flight plus the free list.

use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;

/// Size of one read: large enough that per-chunk overhead is small, small enough that many
/// concurrent streams stay within about a MiB each.
pub const CHUNK: usize = 512 * 1024;

/// Free buffers kept for reuse by the shared pool (beyond that they are freed).
const MAX_FREE: usize = 64;

pub struct BufPool {
    free: Mutex<Vec<Vec<u8>>>,
    max_free: usize,
}

impl BufPool {
    pub fn new(max_free: usize) -> Arc<Self> {
        Arc::new(Self {
            free: Mutex::new(Vec::new()),
            max_free,
        })
    }

    /// The process-wide pool.
    pub fn shared() -> &'static Arc<BufPool> {
        static SHARED: OnceLock<Arc<BufPool>> = OnceLock::new();
        SHARED.get_or_init(|| BufPool::new(MAX_FREE))
    }

    /// A buffer of `CHUNK` bytes, reused when possible.
    pub fn take(&self) -> Vec<u8> {
        let reused = self.free.lock().ok().and_then(|mut free| free.pop());
        reused.unwrap_or_else(|| vec![0u8; CHUNK])
    }

    /// The first `len` bytes of `buf` as `Bytes`; the buffer comes back here when dropped.
    pub fn freeze(self: &Arc<Self>, buf: Vec<u8>, len: usize) -> Bytes {
        Bytes::from_owner(Pooled {
            buf,
            len,
            pool: Arc::clone(self),
        })
    }

    fn give_back(&self, buf: Vec<u8>) {
        if buf.len() != CHUNK {
            return;
        }
        if let Ok(mut free) = self.free.lock() {
            if free.len() < self.max_free {
                free.push(buf);
            }
        }
    }
}

struct Pooled {
    buf: Vec<u8>,
    len: usize,
    pool: Arc<BufPool>,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        self.pool.give_back(std::mem::take(&mut self.buf));
    }
}

/// Reads `len` bytes at `pos` of `file` into a pooled buffer.
pub fn read_at(file: &std::fs::File, pos: u64, len: usize) -> std::io::Result<Bytes> {
    use std::os::unix::fs::FileExt;
    let pool = BufPool::shared();
    let mut buf = pool.take();
    let len = len.min(CHUNK);
    file.read_exact_at(&mut buf[..len], pos)?;
    Ok(pool.freeze(buf, len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_back_only_after_every_clone_is_dropped() {
        let pool = BufPool::new(2);
        let mut buf = pool.take();
        buf[..3].copy_from_slice(b"nar");
        let ptr = buf.as_ptr() as usize;
        let bytes = pool.freeze(buf, 3);
        let clone = bytes.clone();
        drop(bytes);
        assert_eq!(&clone[..], b"nar");
        let other = pool.take();
        assert_ne!(other.as_ptr() as usize, ptr, "handed out while still in use");
        drop(clone);
        let again = pool.take();
        assert_eq!(again.as_ptr() as usize, ptr, "not reused");
    }

    #[test]
    fn the_free_list_is_bounded() {
        let pool = BufPool::new(1);
        let chunks: Vec<Bytes> = (0..3).map(|_| pool.freeze(pool.take(), 1)).collect();
        drop(chunks);
        assert_eq!(pool.free.lock().map(|f| f.len()).unwrap_or(0), 1);
    }
}
