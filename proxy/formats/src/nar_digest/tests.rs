#![allow(clippy::unwrap_used)]
use std::io::Write;

use super::*;

/// `data` as xz, with the dictionary size its block header declares set to `dict_byte` (the
/// LZMA2 property byte: 36 is 1 GiB). The data itself is tiny, so it decodes with any dictionary;
/// only a decoder that honours a memory limit refuses it.
fn xz_declaring_dictionary(data: &[u8], dict_byte: u8) -> Vec<u8> {
    let mut encoder = liblzma::write::XzEncoder::new(Vec::new(), 6);
    encoder.write_all(data).unwrap();
    let mut xz = encoder.finish().unwrap();
    // Stream header (12 bytes), then the block header: its size byte, flags, then the filter
    // flags (LZMA2 id 0x21, properties size 1, the dictionary byte), padding and a CRC32.
    let header_len = (usize::from(xz[12]) + 1) * 4;
    let header = 12..12 + header_len;
    let filter = xz[header.clone()]
        .windows(2)
        .position(|w| w == [0x21, 0x01])
        .unwrap();
    xz[12 + filter + 2] = dict_byte;
    let crc = crc32(&xz[12..12 + header_len - 4]);
    xz[12 + header_len - 4..12 + header_len].copy_from_slice(&crc.to_le_bytes());
    xz
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for byte in bytes {
        crc ^= u32::from(*byte);
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0xEDB8_8320 & (!(crc & 1)).wrapping_add(1));
        }
    }
    !crc
}

#[test]
fn an_xz_file_may_not_choose_how_much_memory_its_decoder_takes() {
    let data = b"a NAR, small";
    // A modest dictionary (64 MiB, as xz -9) decodes.
    let fine = xz_declaring_dictionary(data, 28);
    let (_, size) = decode(&mut fine.as_slice(), &Compression::Xz, 1 << 20, None).unwrap();
    assert_eq!(size, data.len() as u64);
    // 1 GiB is refused before it is allocated.
    let greedy = xz_declaring_dictionary(data, 36);
    let err = decode(&mut greedy.as_slice(), &Compression::Xz, 1 << 20, None).unwrap_err();
    assert!(err.to_string().contains("xz decoding failed"), "{err}");
}
