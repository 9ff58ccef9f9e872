//! HTTP `Content-Encoding`s of the files a cache serves beside NARs (listings, logs, narinfos):
//! what upstreams send (cache.nixos.org sends `br` whatever was asked) and what Nix 2.32+
//! uploads with `ls-compression`, `log-compression` or `narinfo-compression`, and their decoders.

use std::io::{self, Read};

/// Memory the xz decoder may use (as for NARs).
const XZ_MEMORY_LIMIT: u64 = 256 << 20;

/// An encoding this cache can decode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ContentEncoding {
    Identity,
    Br,
    Gzip,
    Zstd,
    /// Not an HTTP encoding, but what Nix sends for `log-compression=xz`.
    Xz,
    /// Likewise, for `bzip2`.
    Bzip2,
}

/// A `Content-Encoding` this cache cannot decode (or several, stacked).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unsupported Content-Encoding {0:?} (expected br, gzip, zstd, xz or bzip2)")]
pub struct UnsupportedEncoding(pub String);

impl ContentEncoding {
    /// Parses a `Content-Encoding` header value; no header is [`Self::Identity`].
    pub fn parse(value: Option<&str>) -> Result<Self, UnsupportedEncoding> {
        let Some(value) = value else {
            return Ok(Self::Identity);
        };
        Ok(match value.trim().to_ascii_lowercase().as_str() {
            "" | "identity" | "none" => Self::Identity,
            "br" => Self::Br,
            "gzip" | "x-gzip" => Self::Gzip,
            "zstd" => Self::Zstd,
            "xz" | "x-xz" => Self::Xz,
            "bzip2" | "x-bzip2" => Self::Bzip2,
            _ => return Err(UnsupportedEncoding(value.to_owned())),
        })
    }

    /// The header value; `""` for identity.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Identity => "",
            Self::Br => "br",
            Self::Gzip => "gzip",
            Self::Zstd => "zstd",
            Self::Xz => "xz",
            Self::Bzip2 => "bzip2",
        }
    }

    /// Reads `input` decoded. Corrupt input fails the read (`InvalidData` or the decoder's kind).
    pub fn decoder<'a>(self, input: impl Read + 'a) -> io::Result<Box<dyn Read + 'a>> {
        Ok(match self {
            Self::Identity => Box::new(input),
            Self::Br => Box::new(brotli_decompressor::Decompressor::new(input, 64 << 10)),
            Self::Gzip => Box::new(flate2::read::MultiGzDecoder::new(input)),
            Self::Zstd => Box::new(zstd::stream::read::Decoder::new(input)?),
            Self::Xz => {
                let stream = liblzma::stream::Stream::new_stream_decoder(
                    XZ_MEMORY_LIMIT,
                    liblzma::stream::CONCATENATED,
                )
                .map_err(io::Error::other)?;
                Box::new(liblzma::read::XzDecoder::new_stream(input, stream))
            }
            Self::Bzip2 => Box::new(bzip2::read::MultiBzDecoder::new(input)),
        })
    }
}

/// Decodes `input` whole, failing past `limit` decoded bytes (small documents: narinfos).
pub fn decode_limited(encoding: ContentEncoding, input: &[u8], limit: usize) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let read = encoding
        .decoder(input)?
        .take(limit as u64 + 1)
        .read_to_end(&mut out)?;
    if read > limit {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("decodes to more than {limit} bytes"),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::io::Write;

    use super::*;

    const TEXT: &[u8] = b"{\"version\":1,\"root\":{\"type\":\"regular\",\"size\":5,\"narOffset\":96}}\n";

    fn encoded(encoding: ContentEncoding) -> Vec<u8> {
        match encoding {
            ContentEncoding::Identity => TEXT.to_vec(),
            // A brotli stream written by hand: one uncompressed meta-block of TEXT (RFC 7932 9.2).
            ContentEncoding::Br => brotli_uncompressed(TEXT),
            ContentEncoding::Gzip => {
                let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                enc.write_all(TEXT).unwrap();
                enc.finish().unwrap()
            }
            ContentEncoding::Zstd => zstd::encode_all(TEXT, 3).unwrap(),
            ContentEncoding::Xz => {
                let mut enc = liblzma::write::XzEncoder::new(Vec::new(), 6);
                enc.write_all(TEXT).unwrap();
                enc.finish().unwrap()
            }
            ContentEncoding::Bzip2 => {
                let mut enc = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::default());
                enc.write_all(TEXT).unwrap();
                enc.finish().unwrap()
            }
        }
    }

    /// WBITS=16 (one `0` bit), then an uncompressed meta-block (ISLAST=0, MNIBBLES=4, MLEN-1,
    /// ISUNCOMPRESSED=1) padded to a byte, the bytes, and an empty last meta-block.
    fn brotli_uncompressed(data: &[u8]) -> Vec<u8> {
        let mut bits: Vec<bool> = vec![false, false, false, false];
        let mlen = data.len() - 1;
        bits.extend((0..16).map(|i| mlen >> i & 1 == 1));
        bits.push(true);
        while bits.len() % 8 != 0 {
            bits.push(false);
        }
        let mut out: Vec<u8> = bits
            .chunks(8)
            .map(|byte| {
                byte.iter()
                    .enumerate()
                    .fold(0u8, |acc, (i, &b)| acc | (u8::from(b) << i))
            })
            .collect();
        out.extend_from_slice(data);
        out.push(0b0000_0011); // ISLAST=1, ISLASTEMPTY=1
        out
    }

    #[test]
    fn every_encoding_decodes_to_the_text() {
        use ContentEncoding::*;
        for encoding in [Identity, Br, Gzip, Zstd, Xz, Bzip2] {
            let body = encoded(encoding);
            assert_eq!(
                decode_limited(encoding, &body, 1 << 20).unwrap(),
                TEXT,
                "{encoding:?}"
            );
            assert_eq!(ContentEncoding::parse(Some(encoding.as_str())), Ok(encoding));
            if encoding != Identity {
                assert!(
                    decode_limited(encoding, &body[..body.len() / 2], 1 << 20).is_err(),
                    "{encoding:?}"
                );
            }
        }
    }

    #[test]
    fn headers_parse() {
        assert_eq!(ContentEncoding::parse(None), Ok(ContentEncoding::Identity));
        assert_eq!(ContentEncoding::parse(Some(" BR ")), Ok(ContentEncoding::Br));
        assert_eq!(ContentEncoding::parse(Some("x-gzip")), Ok(ContentEncoding::Gzip));
        for bad in ["deflate", "gzip, br", "compress", "br;q=1"] {
            assert!(ContentEncoding::parse(Some(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn decoding_stops_at_the_limit() {
        let big = zstd::encode_all(&vec![b'a'; 1 << 20][..], 19).unwrap();
        assert!(big.len() < 1 << 10);
        let err = decode_limited(ContentEncoding::Zstd, &big, 1 << 16).unwrap_err();
        assert!(err.to_string().contains("more than 65536 bytes"), "{err}");
    }
}
