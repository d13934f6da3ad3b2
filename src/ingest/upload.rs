//! An upload's content as a byte stream: the file as uploaded, or — when it
//! starts with the gzip magic bytes, whatever its name — decompressed as a
//! stream. A ratio limit stops a gzip bomb after at most a megabyte more
//! than the ratio allows, long before it is spent. An OpenPGP message
//! (spec §12: armoured or binary, whatever its name) is decrypted as a
//! stream first (`crate::openpgp`), its output within the same ratio (PGP's
//! own compression), with gzip inside it decompressed the same way.
//! Knows nothing about CSV.

use crate::openpgp::{self, MessageError, Opening, Outcome};
use flate2::bufread::MultiGzDecoder;
use std::io::{self, BufRead, BufReader, Read};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// What makes a stream of upload bytes unusable as content.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ContentError {
    /// Starts like gzip but does not decompress.
    #[error("the file starts like gzip but cannot be decompressed ({0}); upload a CSV file or a gzip-compressed one")]
    NotGzip(String),
    /// Decompresses to more than the ratio allows.
    #[error(
        "the file decompresses to more than {ratio} times its compressed size, the limit for compressed uploads \
         (a gzip bomb, or data far more repetitive than customer records)"
    )]
    TooCompressed { ratio: u64 },
    /// An OpenPGP message that cannot be used (spec §12).
    #[error("{0}")]
    Pgp(MessageError),
}

impl ContentError {
    /// The content error an io error carries, if it is one.
    pub fn of(e: &io::Error) -> Option<&ContentError> {
        e.get_ref().and_then(|inner| inner.downcast_ref::<ContentError>())
    }
}

/// How much decompressed content may exceed `ratio` × compressed bytes
/// (the header of a tiny file is all there is to compare at the start).
const RATIO_SLACK_BYTES: u64 = 1024 * 1024;

/// The gzip magic bytes.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Counts the bytes read from what it wraps, for anyone holding the counter.
struct Counted<R> {
    inner: R,
    count: Arc<AtomicU64>,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// Decompresses, within the ratio limit.
struct Gunzip<R: BufRead> {
    decoder: MultiGzDecoder<R>,
    compressed: Arc<AtomicU64>,
    decompressed: u64,
    max_ratio: u64,
}

impl<R: BufRead> Read for Gunzip<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // What the decoder says of the data; the file's own read errors pass.
        let n = self.decoder.read(buf).map_err(|e| match e.kind() {
            io::ErrorKind::InvalidInput | io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof => {
                io::Error::other(ContentError::NotGzip(e.to_string()))
            }
            _ => e,
        })?;
        self.decompressed += n as u64;
        let allowed = self.compressed.load(Ordering::Relaxed).saturating_mul(self.max_ratio) + RATIO_SLACK_BYTES;
        if self.decompressed > allowed {
            return Err(io::Error::other(ContentError::TooCompressed { ratio: self.max_ratio }));
        }
        Ok(n)
    }
}

/// Decrypted bytes, within the ratio limit against the bytes of the
/// upload read (PGP's own compression); the message's errors become
/// content errors.
struct Decrypted<R> {
    inner: R,
    compressed: Arc<AtomicU64>,
    produced: u64,
    max_ratio: u64,
}

impl<R: Read> Read for Decrypted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf).map_err(|e| match MessageError::of(&e) {
            Some(problem) => io::Error::other(ContentError::Pgp(problem.clone())),
            None => e,
        })?;
        self.produced += n as u64;
        let allowed = self.compressed.load(Ordering::Relaxed).saturating_mul(self.max_ratio) + RATIO_SLACK_BYTES;
        if self.produced > allowed {
            return Err(io::Error::other(ContentError::TooCompressed { ratio: self.max_ratio }));
        }
        Ok(n)
    }
}

/// Reads until the buffer is full or the stream ends: a gzip member ends a
/// read early, and the CSV reader looks at its first buffer whole (a BOM, the
/// header's delimiter) however the members were cut.
struct Filling<R> {
    inner: R,
    pending: Option<io::Error>,
}

impl<R: Read> Read for Filling<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(e) = self.pending.take() {
            return Err(e);
        }
        let mut filled = 0;
        while filled < buf.len() {
            match self.inner.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if filled > 0 => {
                    // Given back with the next read, after what was read.
                    self.pending = Some(e);
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(filled)
    }
}

/// An upload opened for reading its content.
pub struct Content<'a> {
    pub reader: Box<dyn Read + Send + 'a>,
    /// Bytes of the upload read so far (compressed bytes for a gzip upload).
    pub consumed: Arc<AtomicU64>,
    pub compressed: bool,
    /// For an OpenPGP upload: what its message told once read to the end.
    pub pgp: Option<Arc<Mutex<Outcome>>>,
}

/// Opens `raw` (the upload's bytes) for reading its content; an OpenPGP
/// message is detected by its first bytes and decrypted with `pgp`'s keys
/// (a plain upload is refused when `pgp` requires encryption); gzip is
/// detected by its magic bytes and decompressed within `max_ratio`.
pub fn open<'a>(raw: impl Read + Send + 'a, max_ratio: u64, pgp: &Arc<Opening>) -> io::Result<Content<'a>> {
    let consumed = Arc::new(AtomicU64::new(0));
    let mut buffered = BufReader::with_capacity(64 * 1024, Counted { inner: raw, count: consumed.clone() });
    let max_ratio = max_ratio.max(1);
    if openpgp::looks_like_message(buffered.fill_buf()?) {
        let (plain, outcome) =
            openpgp::open(buffered, pgp.clone()).map_err(|e| io::Error::other(ContentError::Pgp(e)))?;
        let decrypted = Decrypted { inner: plain, compressed: consumed.clone(), produced: 0, max_ratio };
        let mut inner = BufReader::with_capacity(64 * 1024, decrypted);
        let compressed = inner.fill_buf()?.starts_with(&GZIP_MAGIC);
        let reader: Box<dyn Read + Send + 'a> = if compressed {
            Box::new(Filling {
                inner: Gunzip {
                    decoder: MultiGzDecoder::new(inner),
                    compressed: consumed.clone(),
                    decompressed: 0,
                    max_ratio,
                },
                pending: None,
            })
        } else {
            Box::new(Filling { inner, pending: None })
        };
        return Ok(Content { reader, consumed, compressed, pgp: Some(outcome) });
    }
    if pgp.require_encryption {
        return Err(io::Error::other(ContentError::Pgp(MessageError::EncryptionRequired)));
    }
    if pgp.require_signature {
        return Err(io::Error::other(ContentError::Pgp(MessageError::SignatureRequired)));
    }
    let compressed = buffered.fill_buf()?.starts_with(&GZIP_MAGIC);
    let reader: Box<dyn Read + Send + 'a> = if compressed {
        Box::new(Filling {
            inner: Gunzip {
                decoder: MultiGzDecoder::new(buffered),
                compressed: consumed.clone(),
                decompressed: 0,
                max_ratio,
            },
            pending: None,
        })
    } else {
        Box::new(buffered)
    };
    Ok(Content { reader, consumed, compressed, pgp: None })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(bytes).unwrap();
        encoder.finish().unwrap()
    }

    fn read_all(raw: &[u8], ratio: u64) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        open(raw, ratio, &Arc::new(Opening::none()))?.reader.read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn plain_content_passes_unchanged_and_gzip_is_decompressed() {
        let csv = b"ref,address\nA1,+15555550001\n";
        assert_eq!(read_all(csv, 100).unwrap(), csv);
        let compressed = gzip(csv);
        assert!(open(&compressed[..], 100, &Arc::new(Opening::none())).unwrap().compressed);
        assert_eq!(read_all(&gzip(csv), 100).unwrap(), csv);
    }

    #[test]
    fn concatenated_gzip_members_are_one_stream() {
        let mut both = gzip(b"ref,address\n");
        both.extend(gzip(b"A1,+15555550001\n"));
        assert_eq!(read_all(&both, 100).unwrap(), b"ref,address\nA1,+15555550001\n");
    }

    #[test]
    fn members_cut_inside_the_bom_or_the_header_read_as_one_stream() {
        let mut cut = gzip(b"\xEF\xBB");
        cut.extend(gzip(b"\xBFref;addr"));
        cut.extend(gzip(b"ess\nA1;+15555550001\n"));
        let mut first = vec![0; 64 * 1024];
        let n = open(&cut[..], 100, &Arc::new(Opening::none())).unwrap().reader.read(&mut first).unwrap();
        assert_eq!(&first[..n], b"\xEF\xBB\xBFref;address\nA1;+15555550001\n", "one read gives it all");
    }

    #[test]
    fn a_gzip_bomb_stops_within_the_slack_of_the_ratio() {
        let bomb = gzip(&vec![b'a'; 64 * 1024 * 1024]);
        assert!(bomb.len() < 200 * 1024, "{}", bomb.len());
        let mut content = open(&bomb[..], 10, &Arc::new(Opening::none())).unwrap();
        let mut buf = vec![0; 64 * 1024];
        let mut total = 0u64;
        let error = loop {
            match content.reader.read(&mut buf) {
                Ok(0) => panic!("the bomb decompressed whole"),
                Ok(n) => total += n as u64,
                Err(e) => break e,
            }
        };
        assert_eq!(ContentError::of(&error), Some(&ContentError::TooCompressed { ratio: 10 }));
        assert!(total <= 10 * bomb.len() as u64 + RATIO_SLACK_BYTES, "{total}");
    }

    #[test]
    fn a_corrupt_or_truncated_gzip_is_named_as_such() {
        let mut broken = gzip(&b"ref,address\nA1,+15555550001\n".repeat(1000));
        broken.truncate(broken.len() / 2);
        let e = read_all(&broken, 100).unwrap_err();
        assert!(matches!(ContentError::of(&e), Some(ContentError::NotGzip(_))), "{e}");
        let mut garbage = GZIP_MAGIC.to_vec();
        garbage.extend(b"not really gzip at all");
        let e = read_all(&garbage, 100).unwrap_err();
        assert!(matches!(ContentError::of(&e), Some(ContentError::NotGzip(_))), "{e}");
    }

    /// A new-format OpenPGP packet: tag, a five-octet length, the body.
    fn packet(tag: u8, declared: u32, body: &[u8]) -> Vec<u8> {
        let mut out = vec![0xC0 | tag, 0xFF];
        out.extend(declared.to_be_bytes());
        out.extend(body);
        out
    }

    fn literal(data: &[u8]) -> Vec<u8> {
        let mut body = vec![b'b', 0, 0, 0, 0, 0];
        body.extend(data);
        packet(11, body.len() as u32, &body)
    }

    fn compressed(inner: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(inner).unwrap();
        let mut body = vec![1u8];
        body.extend(encoder.finish().unwrap());
        packet(8, body.len() as u32, &body)
    }

    fn pgp_error(raw: &[u8]) -> Option<ContentError> {
        let e = read_all(raw, 100).err()?;
        ContentError::of(&e).cloned()
    }

    fn decrypt_failed(e: Option<ContentError>) -> bool {
        matches!(e, Some(ContentError::Pgp(MessageError::DecryptFailed(_))))
    }

    #[test]
    fn an_unencrypted_literal_message_reads_and_a_cut_one_fails() {
        let csv = b"ref,address\nA1,+15555550001\n";
        assert_eq!(read_all(&literal(csv), 100).unwrap(), csv);
        assert_eq!(read_all(&compressed(&literal(csv)), 100).unwrap(), csv);
        // A literal packet that claims 1 GB on a 1 KB file ends early: refused.
        let claims_a_gigabyte = packet(11, 1 << 30, &[b'b'; 1024]);
        assert!(decrypt_failed(pgp_error(&claims_a_gigabyte)));
    }

    #[test]
    fn compression_nested_deeper_than_twice_is_refused_and_a_pgp_bomb_stops_at_the_ratio() {
        let csv = b"ref,address\nA1,+15555550001\n";
        let twice = compressed(&compressed(&literal(csv)));
        assert_eq!(read_all(&twice, 100).unwrap(), csv);
        let thrice = compressed(&twice);
        assert!(decrypt_failed(pgp_error(&thrice)), "{:?}", pgp_error(&thrice));
        let bomb = compressed(&literal(&vec![b'\n'; 64 * 1024 * 1024]));
        assert!(bomb.len() < 256 * 1024);
        assert_eq!(pgp_error(&bomb), Some(ContentError::TooCompressed { ratio: 100 }));
    }

    #[test]
    fn an_armour_header_of_ten_megabytes_is_refused() {
        let mut armoured = b"-----BEGIN PGP MESSAGE-----\nComment: ".to_vec();
        armoured.extend(vec![b'a'; 10 * 1024 * 1024]);
        armoured.extend(b"\n\nowAA\n-----END PGP MESSAGE-----\n");
        assert!(decrypt_failed(pgp_error(&armoured)), "{:?}", pgp_error(&armoured));
    }

    #[test]
    fn a_plain_csv_is_refused_only_when_the_account_requires_encryption() {
        let csv = b"ref,address\nA1,+15555550001\n";
        let strict = Arc::new(Opening { require_encryption: true, ..Opening::none() });
        let e = open(&csv[..], 100, &strict).err().unwrap();
        assert_eq!(ContentError::of(&e), Some(&ContentError::Pgp(MessageError::EncryptionRequired)));
        let signed = Arc::new(Opening { require_signature: true, ..Opening::none() });
        let e = open(&csv[..], 100, &signed).err().unwrap();
        assert_eq!(ContentError::of(&e), Some(&ContentError::Pgp(MessageError::SignatureRequired)));
        assert_eq!(read_all(csv, 100).unwrap(), csv);
    }
}
