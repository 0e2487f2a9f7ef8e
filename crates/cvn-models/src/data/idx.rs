//! The IDX format of (Fashion-)MNIST: a big-endian header `[0, 0, type, ndim]`, `ndim` big-endian
//! u32 dimensions, then the data. Only unsigned bytes (type 0x08) occur in these data sets. Files may
//! be gzip-compressed; compression is recognised by its magic bytes, not the file name.
//!
//! Sizes are checked before anything is allocated from them: the dimensions' product with checked
//! arithmetic, against [`MAX_IDX_BYTES`] and against the bytes actually present; a gzip stream is
//! inflated only as far as its header says the file reaches, so a small file cannot inflate into
//! gigabytes.

use std::io::Read;
use std::path::Path;

use flate2::read::GzDecoder;

use crate::error::{data_err, Result};

/// The contents of one IDX file of unsigned bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxArray {
    pub dims: Vec<usize>,
    pub data: Vec<u8>,
}

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
/// The largest IDX file (header and data, after decompression) accepted: 16 times Fashion-MNIST's
/// training images.
pub const MAX_IDX_BYTES: usize = 1 << 30;
const TYPE_U8: u8 = 0x08;

/// Reads an IDX file (gzip or plain) from disk.
pub fn read_idx(path: &Path) -> Result<IdxArray> {
    let bytes = std::fs::read(path).or_else(|e| data_err(path.display(), format!("cannot read: {e}")))?;
    parse_idx(&bytes, &path.display().to_string())
}

/// Parses IDX bytes (gzip or plain); `name` identifies the source in errors.
pub fn parse_idx(bytes: &[u8], name: &str) -> Result<IdxArray> {
    if !bytes.starts_with(&GZIP_MAGIC) {
        return parse_plain(bytes, name);
    }
    let gzip_err = |e: std::io::Error| data_err(name, format!("corrupt gzip stream: {e}"));
    let mut decoder = GzDecoder::new(bytes);
    // The fixed header, then the dimensions, then exactly the data they announce (plus one byte to
    // notice trailing data): never more than the header's size, itself bounded.
    let mut out = Vec::new();
    let got = read_up_to(&mut decoder, &mut out, 4).or_else(gzip_err)?;
    if got == 4 {
        let ndim = out[3] as usize;
        read_up_to(&mut decoder, &mut out, 4 + 4 * ndim).or_else(gzip_err)?;
        if let Ok((_, expected)) = header(&out, name) {
            read_up_to(&mut decoder, &mut out, expected + 1).or_else(gzip_err)?;
        }
    }
    parse_plain(&out, name)
}

/// Extends `out` with bytes from `reader` until it holds `len` bytes or the stream ends; returns
/// the length reached.
fn read_up_to(reader: &mut impl Read, out: &mut Vec<u8>, len: usize) -> std::io::Result<usize> {
    if out.len() < len {
        let start = out.len();
        reader.take((len - start) as u64).read_to_end(out)?;
    } else {
        out.truncate(len);
    }
    Ok(out.len())
}

/// The dimensions an IDX header announces and the file's total length they imply, checked
/// against [`MAX_IDX_BYTES`] with checked arithmetic (`bytes` holds at least the header).
fn header(bytes: &[u8], name: &str) -> Result<(Vec<usize>, usize)> {
    let Some(&[zero0, zero1, kind, ndim]) = bytes.first_chunk::<4>() else {
        return data_err(name, format!("{} bytes is too short for an IDX header", bytes.len()));
    };
    if zero0 != 0 || zero1 != 0 || kind != TYPE_U8 || ndim == 0 {
        return data_err(
            name,
            format!(
                "bad IDX magic number {:02x}{:02x}{:02x}{:02x}: expected 000008NN \
                 (unsigned bytes, NN >= 1 dimensions)",
                zero0, zero1, kind, ndim
            ),
        );
    }
    let header_len = 4 + 4 * ndim as usize;
    if bytes.len() < header_len {
        return data_err(name, format!("the header announces {ndim} dimensions but the file ends first"));
    }
    let dims: Vec<usize> = bytes[4..header_len].chunks_exact(4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize).collect();
    let data = dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
    match data.and_then(|d| d.checked_add(header_len)) {
        Some(total) if total <= MAX_IDX_BYTES => Ok((dims, total)),
        _ => data_err(name, format!("dimensions {dims:?} announce more than the {MAX_IDX_BYTES} bytes an IDX file may hold")),
    }
}

fn parse_plain(bytes: &[u8], name: &str) -> Result<IdxArray> {
    let (dims, total) = header(bytes, name)?;
    let header_len = 4 + 4 * dims.len();
    let expected = total - header_len;
    let got = bytes.len() - header_len;
    if got != expected {
        return data_err(name, format!("dimensions {dims:?} need {expected} data bytes, the file has {got}"));
    }
    Ok(IdxArray { dims, data: bytes[header_len..].to_vec() })
}

/// IDX bytes for `dims` and `data` (used to write test data and subsets).
pub fn encode_idx(dims: &[usize], data: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, TYPE_U8, dims.len() as u8];
    for &d in dims {
        out.extend_from_slice(&(d as u32).to_be_bytes());
    }
    out.extend_from_slice(data);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::{write::GzEncoder, Compression};
    use std::io::Write;

    #[test]
    fn round_trip_plain_and_gzip() {
        let data: Vec<u8> = (0..24).collect();
        let plain = encode_idx(&[2, 3, 4], &data);
        let expected = IdxArray { dims: vec![2, 3, 4], data: data.clone() };
        assert_eq!(parse_idx(&plain, "plain").unwrap(), expected);
        let mut gz = GzEncoder::new(Vec::new(), Compression::fast());
        gz.write_all(&plain).unwrap();
        assert_eq!(parse_idx(&gz.finish().unwrap(), "gz").unwrap(), expected);
    }

    #[test]
    fn errors_name_the_file_and_the_problem() {
        let err = parse_idx(&[0, 0, 0x0d, 1, 0, 0, 0, 0], "x.idx").unwrap_err().to_string();
        assert!(err.starts_with("x.idx: bad IDX magic number 00000d01"), "{err}");
        let err = parse_idx(&encode_idx(&[5], &[1, 2, 3]), "y.idx").unwrap_err().to_string();
        assert!(err.contains("y.idx") && err.contains("need 5 data bytes, the file has 3"), "{err}");
        let err = parse_idx(&[0, 0, 8, 3, 0, 0], "z.idx").unwrap_err().to_string();
        assert!(err.contains("3 dimensions but the file ends first"), "{err}");
        let err = parse_idx(&[0x1f, 0x8b, 1, 2, 3], "w.gz").unwrap_err().to_string();
        assert!(err.contains("w.gz: corrupt gzip stream"), "{err}");
    }

    #[test]
    fn dimensions_whose_product_overflows_or_exceeds_the_limit_are_refused() {
        // 2^22 · 2^21 · 2^21 = 2^64 wraps to 0 in unchecked arithmetic, matching an empty body.
        let err = parse_idx(&encode_idx(&[4_194_304, 2_097_152, 2_097_152], &[]), "wrap.idx").unwrap_err().to_string();
        assert!(err.contains("wrap.idx") && err.contains("announce more than"), "{err}");
        let err = parse_idx(&encode_idx(&[60_000, 200, 200], &[]), "big.idx").unwrap_err().to_string();
        assert!(err.contains("announce more than"), "{err}");
    }

    #[test]
    fn gzip_inflating_past_its_header_is_not_read_to_the_end() {
        // The header announces 10 bytes; the stream inflates to 64 MiB. Only 11 bytes past the
        // header are ever inflated, and the file is refused for its trailing data.
        let mut body = encode_idx(&[10], &[7; 10]);
        body.resize(64 << 20, 0);
        let mut gz = GzEncoder::new(Vec::new(), Compression::fast());
        gz.write_all(&body).unwrap();
        let err = parse_idx(&gz.finish().unwrap(), "bomb.gz").unwrap_err().to_string();
        assert!(err.contains("bomb.gz") && err.contains("need 10 data bytes, the file has 11"), "{err}");
        // A header that honestly announces 1.5 GB (the stream would inflate to it): refused
        // before anything past the header is inflated.
        let mut gz = GzEncoder::new(Vec::new(), Compression::fast());
        gz.write_all(&encode_idx(&[1_500_000, 1000], &[])).unwrap();
        gz.write_all(&vec![0; 16 << 20]).unwrap();
        let err = parse_idx(&gz.finish().unwrap(), "honest.gz").unwrap_err().to_string();
        assert!(err.contains("honest.gz") && err.contains("announce more than"), "{err}");
    }
}
