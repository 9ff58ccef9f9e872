//! nixbase32 both ways: the input encoded must decode back to it; the input read as text must,
//! if it decodes, encode back to exactly that text (padding bits are checked, so every byte string
//! has one text form). `decode_fixed` agrees with `decode`, and `is_valid` with the
//! invalid-character error.

#![no_main]

use libfuzzer_sys::fuzz_target;
use nixcache_protocol::nixbase32::{self, DecodeError};

fuzz_target!(|data: &[u8]| {
    let text = nixbase32::encode(data);
    assert_eq!(text.len(), nixbase32::encoded_len(data.len()));
    assert!(nixbase32::is_valid(&text));
    assert_eq!(nixbase32::decode(&text).as_deref(), Ok(data));

    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let decoded = nixbase32::decode(text);
    match &decoded {
        Ok(bytes) => {
            assert_eq!(nixbase32::encode(bytes), text);
            assert_eq!(nixbase32::encoded_len(bytes.len()), text.len());
            assert!(nixbase32::is_valid(text));
        }
        Err(DecodeError::InvalidChar { ch, position }) => {
            assert!(!nixbase32::is_valid(text));
            assert_eq!(text[*position..].chars().next(), Some(*ch));
        }
        Err(DecodeError::InvalidLength { length }) => assert_eq!(*length, text.len()),
        Err(DecodeError::NonZeroPadding) => assert!(nixbase32::is_valid(text)),
    }
    if let Ok(bytes) = nixbase32::decode_fixed::<20>(text) {
        assert_eq!(decoded.as_deref(), Ok(&bytes[..]));
    }
    if let Ok(bytes) = nixbase32::decode_fixed::<32>(text) {
        assert_eq!(decoded.as_deref(), Ok(&bytes[..]));
    }
    if let Ok(bytes) = &decoded {
        match bytes.len() {
            20 => assert!(nixbase32::decode_fixed::<20>(text).is_ok()),
            32 => assert!(nixbase32::decode_fixed::<32>(text).is_ok()),
            _ => {}
        }
    }
});
