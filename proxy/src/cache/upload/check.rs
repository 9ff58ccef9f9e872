//! Whether an uploaded narinfo agrees with its NAR: the file it names, and the facts measured
//! when the NAR was uploaded (or fetched).

use nixcache_protocol::{NarFile, NarInfo, Sha256Hash};

use super::UploadError;
use crate::db::{NarRecord, UploadRecord};

/// The NAR file an uploaded narinfo names: `URL: nar/<file>` with a matching compression.
pub(super) fn nar_file_of(info: &NarInfo) -> Result<NarFile, UploadError> {
    let name = info.url.strip_prefix("nar/").ok_or_else(|| {
        UploadError::Invalid(format!("URL {:?} must be nar/<file> on this cache", info.url))
    })?;
    let file = NarFile::parse(name).map_err(|e| UploadError::Invalid(format!("URL {:?}: {e}", info.url)))?;
    if file.compression != info.compression {
        return Err(UploadError::Invalid(format!(
            "URL {:?} does not match Compression: {}",
            info.url,
            info.compression.as_str()
        )));
    }
    Ok(file)
}

/// A NAR already stored (by an earlier upload, or fetched from an upstream).
pub(super) fn check_against_stored(info: &NarInfo, stored: &NarRecord) -> Result<(), UploadError> {
    let problems = mismatches(info, stored.nar_hash, None, &stored.nar_file, stored.file_size);
    if problems.is_empty() {
        return Ok(());
    }
    Err(UploadError::Conflict(format!(
        "{} does not match the stored nar/{}: {}",
        info.store_path,
        stored.nar_file.file_name(),
        problems.join("; ")
    )))
}

pub(super) fn check_against_upload(info: &NarInfo, upload: &UploadRecord) -> Result<(), UploadError> {
    let nar_size = Some(upload.nar_size);
    let problems = mismatches(
        info,
        upload.nar_hash,
        nar_size,
        &upload.nar_file,
        upload.file_size,
    );
    if problems.is_empty() {
        return Ok(());
    }
    Err(UploadError::Invalid(format!(
        "{} does not match its NAR: {}",
        info.store_path,
        problems.join("; ")
    )))
}

/// Where the narinfo disagrees with the NAR's facts (`nar_size` only when known).
fn mismatches(
    info: &NarInfo,
    nar_hash: Sha256Hash,
    nar_size: Option<u64>,
    file: &NarFile,
    file_size: u64,
) -> Vec<String> {
    let mut problems = Vec::new();
    if info.nar_hash != nar_hash {
        problems.push(format!("NarHash {} but the NAR has {nar_hash}", info.nar_hash));
    }
    if let Some(size) = nar_size.filter(|s| *s != info.nar_size) {
        problems.push(format!("NarSize {} but the NAR has {size}", info.nar_size));
    }
    if let Some(hash) = info.file_hash.filter(|h| *h != file.hash) {
        problems.push(format!("FileHash {hash} but the file is {}", file.hash));
    }
    if let Some(size) = info.file_size.filter(|s| *s != file_size) {
        problems.push(format!("FileSize {size} but the file has {file_size}"));
    }
    problems
}
