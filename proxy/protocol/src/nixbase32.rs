//! Nix's base-32 encoding ("nixbase32").
//!
//! The alphabet is `0123456789abcdfghijklmnpqrsvwxyz` (no `e`, `o`, `u`, `t`). Unlike RFC 4648,
//! Nix treats the input as one little-endian number and prints its 5-bit digits from the most
//! significant one down, so the *last* input byte determines the *first* characters. `n` bytes
//! encode to `ceil(n * 8 / 5)` characters; the unused high bits of the first character must be
//! zero. This matches `printHash32` / `nix hash to-base32`.

/// The 32 characters of Nix's base-32 alphabet, in digit order.
const ALPHABET: &[u8; 32] = b"0123456789abcdfghijklmnpqrsvwxyz";

/// Why a string is not valid nixbase32.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    /// A character outside the nixbase32 alphabet.
    #[error("invalid nixbase32 character {ch:?} at position {position}")]
    InvalidChar {
        /// The offending character.
        ch: char,
        /// Its byte offset in the input.
        position: usize,
    },
    /// A length that no byte string encodes to (or not the expected one).
    #[error("invalid nixbase32 length {length}")]
    InvalidLength {
        /// The length of the input in characters.
        length: usize,
    },
    /// The unused high bits of the first character are not zero.
    #[error("invalid nixbase32: non-zero padding bits")]
    NonZeroPadding,
}

/// Number of nixbase32 characters that encode `bytes` bytes.
pub const fn encoded_len(bytes: usize) -> usize {
    (bytes * 8).div_ceil(5)
}

/// Value of one alphabet character, or `None` if it is not in the alphabet.
fn digit_of(ch: u8) -> Option<u8> {
    ALPHABET
        .iter()
        .position(|&c| c == ch)
        .and_then(|p| u8::try_from(p).ok())
}

/// True if every character of `s` is in the nixbase32 alphabet (the length is not checked).
pub fn is_valid(s: &str) -> bool {
    s.bytes().all(|b| digit_of(b).is_some())
}

/// Encodes `bytes` the way Nix prints base-32 hashes.
pub fn encode(bytes: &[u8]) -> String {
    let len = encoded_len(bytes.len());
    let mut out = String::with_capacity(len);
    for n in (0..len).rev() {
        let bit = n * 5;
        let (i, j) = (bit / 8, bit % 8);
        let lo = u16::from(bytes.get(i).copied().unwrap_or(0));
        let hi = u16::from(bytes.get(i + 1).copied().unwrap_or(0));
        let digit = ((lo | (hi << 8)) >> j) & 0x1f;
        out.push(char::from(ALPHABET[usize::from(digit)]));
    }
    out
}

/// Decodes a nixbase32 string of any valid length.
///
/// Rejects characters outside the alphabet, lengths no byte string encodes to, and non-zero
/// padding bits.
pub fn decode(s: &str) -> Result<Vec<u8>, DecodeError> {
    check_chars(s)?;
    let n_bytes = s.len() * 5 / 8;
    if encoded_len(n_bytes) != s.len() {
        return Err(DecodeError::InvalidLength { length: s.len() });
    }
    let mut out = vec![0u8; n_bytes];
    decode_into(s.as_bytes(), &mut out)?;
    Ok(out)
}

/// Decodes a nixbase32 string that must encode exactly `N` bytes.
pub fn decode_fixed<const N: usize>(s: &str) -> Result<[u8; N], DecodeError> {
    check_chars(s)?;
    if s.len() != encoded_len(N) {
        return Err(DecodeError::InvalidLength { length: s.len() });
    }
    let mut out = [0u8; N];
    decode_into(s.as_bytes(), &mut out)?;
    Ok(out)
}

fn check_chars(s: &str) -> Result<(), DecodeError> {
    match s
        .char_indices()
        .find(|&(_, ch)| !ch.is_ascii() || digit_of(ch as u8).is_none())
    {
        Some((position, ch)) => Err(DecodeError::InvalidChar { ch, position }),
        None => Ok(()),
    }
}

/// Decodes ASCII alphabet characters into `out`, whose length must match `s.len()`.
fn decode_into(s: &[u8], out: &mut [u8]) -> Result<(), DecodeError> {
    for (n, &ch) in s.iter().rev().enumerate() {
        let position = s.len() - 1 - n;
        let digit = digit_of(ch).ok_or(DecodeError::InvalidChar {
            ch: char::from(ch),
            position,
        })?;
        let bit = n * 5;
        let (i, j) = (bit / 8, bit % 8);
        let shifted = u16::from(digit) << j;
        let [low, high] = shifted.to_le_bytes();
        or_into(out, i, low)?;
        or_into(out, i + 1, high)?;
    }
    Ok(())
}

/// ORs `bits` into `out[index]`; set bits beyond the end of `out` are non-zero padding.
fn or_into(out: &mut [u8], index: usize, bits: u8) -> Result<(), DecodeError> {
    match out.get_mut(index) {
        Some(byte) => *byte |= bits,
        None if bits != 0 => return Err(DecodeError::NonZeroPadding),
        None => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty() {
        assert_eq!(encode(&[]), "");
        assert_eq!(decode(""), Ok(vec![]));
        assert_eq!(decode_fixed::<0>(""), Ok([]));
        assert!(is_valid(""));
    }

    #[test]
    fn encoded_lengths() {
        assert_eq!(encoded_len(0), 0);
        assert_eq!(encoded_len(1), 2);
        assert_eq!(encoded_len(16), 26);
        assert_eq!(encoded_len(20), 32);
        assert_eq!(encoded_len(32), 52);
        assert_eq!(encoded_len(64), 103);
    }

    #[test]
    fn round_trips_all_small_lengths() {
        for len in 0..=70usize {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 151 + 7) as u8).collect();
            let text = encode(&bytes);
            assert_eq!(text.len(), encoded_len(len));
            assert!(is_valid(&text));
            assert_eq!(decode(&text), Ok(bytes), "length {len}");
        }
    }

    #[test]
    fn one_byte_by_hand() {
        // 0xff = 0b111_11111: high digit 0b111 = 7, low digit 0b11111 = 'z'.
        assert_eq!(encode(&[0xff]), "7z");
        assert_eq!(decode("7z"), Ok(vec![0xff]));
        assert_eq!(decode("8z"), Err(DecodeError::NonZeroPadding));
    }

    #[test]
    fn rejects_invalid_characters() {
        for (s, ch, position) in [
            ("e0", 'e', 0),
            ("0o", 'o', 1),
            ("0U", 'U', 1),
            ("0é", 'é', 1),
            ("/0", '/', 0),
        ] {
            assert_eq!(decode(s), Err(DecodeError::InvalidChar { ch, position }), "{s}");
            assert!(!is_valid(s));
        }
        assert_eq!(
            decode_fixed::<1>("0t"),
            Err(DecodeError::InvalidChar { ch: 't', position: 1 })
        );
    }

    #[test]
    fn rejects_impossible_lengths() {
        for len in [1usize, 3, 6, 9, 11, 14] {
            let s = "0".repeat(len);
            assert_eq!(decode(&s), Err(DecodeError::InvalidLength { length: len }));
        }
        assert_eq!(
            decode_fixed::<20>(&"0".repeat(31)),
            Err(DecodeError::InvalidLength { length: 31 })
        );
        assert_eq!(
            decode_fixed::<20>(&"0".repeat(33)),
            Err(DecodeError::InvalidLength { length: 33 })
        );
        assert_eq!(
            decode_fixed::<32>(&"0".repeat(32)),
            Err(DecodeError::InvalidLength { length: 32 })
        );
    }

    #[test]
    fn rejects_non_zero_padding() {
        // 32 bytes use 256 of 260 bits: the first character may only be '0' or '1'.
        let ok = format!("1{}", "z".repeat(51));
        assert_eq!(decode_fixed::<32>(&ok), Ok([0xff; 32]));
        let bad = format!("2{}", "0".repeat(51));
        assert_eq!(decode_fixed::<32>(&bad), Err(DecodeError::NonZeroPadding));
        assert_eq!(decode(&bad), Err(DecodeError::NonZeroPadding));
        // 20 bytes use all 160 bits: no padding at all.
        assert!(decode_fixed::<20>(&"z".repeat(32)).is_ok());
    }
}
