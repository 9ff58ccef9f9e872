//! Test data: pseudo-random NARs, their compressed files and signed narinfos.

use std::io::Write;

use bytes::Bytes;
use nixcache_protocol::{Compression, NarFile, NarInfo, Sha256Hash, SigningKey, StorePath, StorePathHash};

/// splitmix64: deterministic pseudo-random bytes without a dependency.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            out.extend_from_slice(&self.next_u64().to_le_bytes());
        }
        out.truncate(len);
        out
    }
}

/// Incompressible bytes.
pub fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    Rng::new(seed).bytes(len)
}

/// A NAR-sized blob: a random head and a repetitive, compressible tail.
pub fn sample_nar(seed: u64, len: usize) -> Vec<u8> {
    let mut data = random_bytes(seed, len / 4);
    let line = format!("nix archive test payload {seed}\n");
    while data.len() < len {
        data.extend_from_slice(line.as_bytes());
    }
    data.truncate(len);
    data
}

/// Compresses `data` like a binary cache would store it.
pub fn compress(compression: &Compression, data: &[u8]) -> Vec<u8> {
    match compression {
        Compression::None => data.to_vec(),
        Compression::Xz => {
            let mut enc = liblzma::write::XzEncoder::new(Vec::new(), 1);
            enc.write_all(data).unwrap();
            enc.finish().unwrap()
        }
        Compression::Zstd => zstd::encode_all(data, 1).unwrap(),
        Compression::Bzip2 => {
            let mut enc = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
            enc.write_all(data).unwrap();
            enc.finish().unwrap()
        }
        Compression::Other(name) => panic!("cannot compress with {name}"),
    }
}

/// A store path whose hash is derived from its name (distinct names, distinct hashes).
pub fn store_path(name: &str) -> StorePath {
    let digest = Sha256Hash::digest(format!("store path {name}").as_bytes());
    let mut hash = [0u8; 20];
    hash.copy_from_slice(&digest.0[..20]);
    StorePath::new(StorePathHash(hash), name).unwrap()
}

/// One store path as an upstream cache holds it.
#[derive(Clone, Debug)]
pub struct Entry {
    pub store_path: StorePath,
    /// The uncompressed NAR.
    pub nar: Vec<u8>,
    /// The file served at `info.url`.
    pub file: Bytes,
    /// The narinfo as the upstream serves it (signed).
    pub info: NarInfo,
}

impl Entry {
    /// A correct, signed entry with one reference and a deriver.
    pub fn new(name: &str, nar: Vec<u8>, compression: Compression, key: &SigningKey) -> Self {
        let path = store_path(name);
        let file = Bytes::from(compress(&compression, &nar));
        let file_hash = Sha256Hash::digest(&file);
        let nar_file = NarFile {
            hash: file_hash,
            compression: compression.clone(),
        };
        let mut info = NarInfo {
            store_path: path.clone(),
            url: nar_file.url(),
            compression,
            file_hash: Some(file_hash),
            file_size: Some(file.len() as u64),
            nar_hash: Sha256Hash::digest(&nar),
            nar_size: nar.len() as u64,
            references: vec![store_path(&format!("{name}-dep"))],
            deriver: Some(store_path(&format!("{name}.drv"))),
            sigs: Vec::new(),
            ca: None,
        };
        info.add_signature(key);
        Self {
            store_path: path,
            nar,
            file,
            info,
        }
    }

    /// The same path with another deriver, signed by `key` only.
    pub fn with_deriver(mut self, deriver: &str, key: &SigningKey) -> Self {
        self.info.deriver = Some(store_path(deriver));
        self.info.sigs.clear();
        self.info.add_signature(key);
        self
    }

    /// Claims the NarHash of other bytes, correctly signed by `key`.
    pub fn with_wrong_nar_hash(mut self, key: &SigningKey) -> Self {
        self.info.nar_hash = Sha256Hash::digest(b"some other NAR");
        self.info.sigs.clear();
        self.info.add_signature(key);
        self
    }

    /// Moves the NAR to another upstream URL (not covered by signatures).
    pub fn with_url(mut self, url: &str) -> Self {
        self.info.url = url.to_owned();
        self
    }

    /// The 32-character store path hash.
    pub fn hash(&self) -> String {
        self.store_path.hash().to_string()
    }

    pub fn narinfo_path(&self) -> String {
        format!("/{}.narinfo", self.hash())
    }

    /// The NAR's path on the upstream.
    pub fn upstream_nar_path(&self) -> String {
        format!("/{}", self.info.url)
    }

    /// The file name under which a cache serves this NAR: `<FileHash>.nar<ext>`.
    pub fn file_name(&self) -> String {
        NarFile {
            hash: self.info.file_hash.unwrap(),
            compression: self.info.compression.clone(),
        }
        .file_name()
    }

    pub fn narinfo_text(&self) -> String {
        self.info.to_string()
    }
}
