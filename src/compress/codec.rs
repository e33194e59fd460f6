//! Streaming encoders and decoders over in-memory buffers, one chunk at a time.
//!
//! The synchronous `Write` encoders of flate2, brotli and zstd (the codecs async-compression
//! itself wraps) are used directly: a body adapter works chunk by chunk inside `poll_frame` and
//! must decide itself when to flush, which an `AsyncRead` pipeline would hide.

use std::io::{self, Write};

use bytes::Bytes;

use super::negotiate::Encoding;

/// Compression levels per algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Levels {
    /// gzip level, 1–9.
    pub gzip: u32,
    /// Brotli quality, 0–11.
    pub brotli: u32,
    /// zstd level, 1–19.
    pub zstd: i32,
}

impl Default for Levels {
    /// Fast levels: compression on the proxy should cost little CPU per byte.
    fn default() -> Self {
        Levels {
            gzip: 1,
            brotli: 4,
            zstd: 3,
        }
    }
}

/// Either direction of a content coding.
pub enum Codec {
    /// gzip compression.
    GzipEncode(flate2::write::GzEncoder<Vec<u8>>),
    /// Brotli compression.
    BrotliEncode(Box<brotli::CompressorWriter<Vec<u8>>>),
    /// zstd compression.
    ZstdEncode(zstd::stream::write::Encoder<'static, Vec<u8>>),
    /// gzip decompression.
    GzipDecode(flate2::write::GzDecoder<Vec<u8>>),
    /// Brotli decompression.
    BrotliDecode(Box<brotli::DecompressorWriter<Vec<u8>>>),
    /// zstd decompression.
    ZstdDecode(zstd::stream::write::Decoder<'static, Vec<u8>>),
}

impl Codec {
    /// A compressor for `encoding` at `levels`.
    pub fn encoder(encoding: Encoding, levels: Levels) -> io::Result<Codec> {
        Ok(match encoding {
            Encoding::Gzip => Codec::GzipEncode(flate2::write::GzEncoder::new(
                Vec::new(),
                flate2::Compression::new(levels.gzip.min(9)),
            )),
            Encoding::Brotli => Codec::BrotliEncode(Box::new(brotli::CompressorWriter::new(
                Vec::new(),
                16 * 1024,
                levels.brotli.min(11),
                22,
            ))),
            Encoding::Zstd => {
                Codec::ZstdEncode(zstd::stream::write::Encoder::new(Vec::new(), levels.zstd)?)
            }
        })
    }

    /// A gzip compressor; unlike zstd's, it cannot fail to start.
    pub fn gzip_encoder(level: u32) -> Codec {
        Codec::GzipEncode(flate2::write::GzEncoder::new(
            Vec::new(),
            flate2::Compression::new(level.min(9)),
        ))
    }

    /// A decompressor for `encoding`.
    pub fn decoder(encoding: Encoding) -> io::Result<Codec> {
        Ok(match encoding {
            Encoding::Gzip => Codec::GzipDecode(flate2::write::GzDecoder::new(Vec::new())),
            Encoding::Brotli => Codec::BrotliDecode(Box::new(brotli::DecompressorWriter::new(
                Vec::new(),
                16 * 1024,
            ))),
            Encoding::Zstd => Codec::ZstdDecode(zstd::stream::write::Decoder::new(Vec::new())?),
        })
    }

    fn writer(&mut self) -> &mut dyn Write {
        match self {
            Codec::GzipEncode(w) => w,
            Codec::BrotliEncode(w) => w.as_mut(),
            Codec::ZstdEncode(w) => w,
            Codec::GzipDecode(w) => w,
            Codec::BrotliDecode(w) => w.as_mut(),
            Codec::ZstdDecode(w) => w,
        }
    }

    fn output(&mut self) -> &mut Vec<u8> {
        match self {
            Codec::GzipEncode(w) => w.get_mut(),
            Codec::BrotliEncode(w) => w.get_mut(),
            Codec::ZstdEncode(w) => w.get_mut(),
            Codec::GzipDecode(w) => w.get_mut(),
            Codec::BrotliDecode(w) => w.get_mut(),
            Codec::ZstdDecode(w) => w.get_mut(),
        }
    }

    /// Feeds `input`; output accumulates until [`Codec::take`].
    pub fn write(&mut self, input: &[u8]) -> io::Result<()> {
        self.writer().write_all(input)
    }

    /// Flushes so everything fed so far can be decoded by the receiver now.
    pub fn flush(&mut self) -> io::Result<()> {
        self.writer().flush()
    }

    /// Bytes of output waiting to be taken.
    pub fn pending(&mut self) -> usize {
        self.output().len()
    }

    /// Takes the output produced so far.
    pub fn take(&mut self) -> Bytes {
        Bytes::from(std::mem::take(self.output()))
    }

    /// Ends the stream and returns the remaining output.
    pub fn finish(self) -> io::Result<Bytes> {
        let rest = match self {
            Codec::GzipEncode(w) => w.finish()?,
            Codec::BrotliEncode(w) => w.into_inner(),
            Codec::ZstdEncode(w) => w.finish()?,
            Codec::GzipDecode(w) => w.finish()?,
            Codec::BrotliDecode(w) => w.into_inner().map_err(|_| {
                io::Error::new(io::ErrorKind::InvalidData, "truncated brotli stream")
            })?,
            Codec::ZstdDecode(mut w) => {
                w.flush()?;
                w.into_inner()
            }
        };
        Ok(Bytes::from(rest))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(encoding: Encoding, data: &[u8], chunk: usize) -> Vec<u8> {
        let mut encoder = Codec::encoder(encoding, Levels::default()).unwrap();
        let mut compressed = Vec::new();
        for piece in data.chunks(chunk) {
            encoder.write(piece).unwrap();
            encoder.flush().unwrap();
            compressed.extend_from_slice(&encoder.take());
        }
        compressed.extend_from_slice(&encoder.finish().unwrap());
        assert!(
            compressed.len() < data.len(),
            "{encoding} should shrink repetitive data"
        );
        let mut decoder = Codec::decoder(encoding).unwrap();
        let mut out = Vec::new();
        for piece in compressed.chunks(1000) {
            decoder.write(piece).unwrap();
            out.extend_from_slice(&decoder.take());
        }
        out.extend_from_slice(&decoder.finish().unwrap());
        out
    }

    #[test]
    fn every_coding_round_trips_chunk_by_chunk() {
        let data: Vec<u8> = (0..200_000u32)
            .flat_map(|i| format!("{{\"n\":{}}},", i % 977).into_bytes())
            .collect();
        for encoding in [Encoding::Gzip, Encoding::Brotli, Encoding::Zstd] {
            assert_eq!(round_trip(encoding, &data, 16 * 1024), data, "{encoding}");
        }
    }

    #[test]
    fn a_flush_makes_everything_so_far_decodable() {
        for encoding in [Encoding::Gzip, Encoding::Brotli, Encoding::Zstd] {
            let mut encoder = Codec::encoder(encoding, Levels::default()).unwrap();
            encoder.write(b"hello, streaming world").unwrap();
            encoder.flush().unwrap();
            let first = encoder.take();
            let mut decoder = Codec::decoder(encoding).unwrap();
            decoder.write(&first).unwrap();
            decoder.flush().unwrap();
            assert_eq!(&decoder.take()[..], b"hello, streaming world", "{encoding}");
        }
    }

    #[test]
    fn garbage_input_is_an_error_not_a_panic() {
        for encoding in [Encoding::Gzip, Encoding::Brotli, Encoding::Zstd] {
            let mut decoder = Codec::decoder(encoding).unwrap();
            let result = decoder
                .write(b"this is not compressed at all")
                .and_then(|_| decoder.finish().map(|_| ()));
            assert!(result.is_err(), "{encoding}");
        }
    }
}
