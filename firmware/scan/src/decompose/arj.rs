//! ARJ archives: a main header, then per file a local header (signature 0x60 0xEA, a basic header
//! with its CRC, extended headers) and the compressed data. Methods 1 to 3 are the same
//! LZ77 + Huffman scheme as LHA's `-lh7-` (a 26,624-byte window inside its 64 KiB one, the same
//! code tables), so they are decoded with the `delharc` crate; method 0 is stored; method 4
//! ("fastest") is not decoded. Every size in a header is checked against the bytes present.

use std::io::Read;

use delharc::decode::{Decoder, Lh7Decoder};

/// The signature in front of every ARJ header.
pub(crate) const MAGIC: [u8; 2] = [0x60, 0xea];
/// Largest basic header ARJ writes.
const MAX_BASIC_HEADER: usize = 2600;

/// Bit of the ARJ flags: the file is encrypted ("garbled").
const GARBLED: u8 = 0x01;

/// How a member is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Method {
    Stored,
    /// Methods 1–3: LZ77 + Huffman.
    Compressed,
    /// Method 4 or an unknown number: not decoded.
    Unsupported(u8),
}

/// One file of an ARJ archive.
#[derive(Debug)]
pub(super) struct ArjFile<'a> {
    /// The stored path, `/`-separated.
    pub name: String,
    pub method: Method,
    /// Whether the file is encrypted.
    pub garbled: bool,
    /// The size once extracted, as declared.
    pub size: u32,
    /// The CRC-32 of the extracted file, as declared.
    pub crc: u32,
    /// The compressed bytes.
    pub data: &'a [u8],
}

/// The files of an ARJ archive, and why listing stopped early if it did.
#[derive(Debug)]
pub(super) struct ArjContent<'a> {
    pub files: Vec<ArjFile<'a>>,
    pub damage: Option<&'static str>,
}

/// Whether `bytes` starts like an ARJ archive: the signature and a basic header of sane size.
pub(crate) fn looks_like_arj(bytes: &[u8]) -> bool {
    bytes.len() > 10
        && bytes.starts_with(&MAGIC)
        && (1..=MAX_BASIC_HEADER).contains(&usize::from(u16::from_le_bytes([bytes[2], bytes[3]])))
}

/// A header read from `data` at `at`: its basic header bytes, and where what follows it starts.
/// Ok(None) at the end-of-archive marker (a basic header size of 0).
fn header(data: &[u8], at: usize) -> Result<Option<(&[u8], usize)>, &'static str> {
    const CUT: &str = "ARJ header is cut short";
    if data.get(at..at + 2) != Some(&MAGIC[..]) {
        return Err("ARJ header signature is missing");
    }
    let size = data.get(at + 2..at + 4).ok_or(CUT)?;
    let size = usize::from(u16::from_le_bytes([size[0], size[1]]));
    if size == 0 {
        return Ok(None);
    }
    if size > MAX_BASIC_HEADER {
        return Err("ARJ header is larger than ARJ writes");
    }
    let basic = data.get(at + 4..at + 4 + size).ok_or(CUT)?;
    let mut next = at + 4 + size + 4;
    // Extended headers: a 16-bit size (0 ends them), the data, a CRC.
    loop {
        let ext = data.get(next..next + 2).ok_or(CUT)?;
        let ext = usize::from(u16::from_le_bytes([ext[0], ext[1]]));
        next += 2;
        if ext == 0 {
            break;
        }
        next += ext + 4;
        if next > data.len() {
            return Err(CUT);
        }
    }
    Ok(Some((basic, next)))
}

/// Lists the files of an ARJ archive, at most `max`.
pub(super) fn files(data: &[u8], max: usize) -> ArjContent<'_> {
    let mut content = ArjContent {
        files: Vec::new(),
        damage: None,
    };
    // The main header describes the archive, not a file.
    let mut at = match header(data, 0) {
        Ok(Some((_, next))) => next,
        Ok(None) => return content,
        Err(reason) => {
            content.damage = Some(reason);
            return content;
        }
    };
    while content.files.len() < max {
        let (basic, next) = match header(data, at) {
            Ok(Some(found)) => found,
            Ok(None) => break,
            Err(reason) => {
                content.damage = Some(reason);
                break;
            }
        };
        let field = |offset: usize| {
            basic
                .get(offset..offset + 4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        };
        let (Some(compressed), Some(size), Some(crc), Some(&first_size)) =
            (field(12), field(16), field(20), basic.first())
        else {
            content.damage = Some("ARJ file header is cut short");
            break;
        };
        let Some(stored) = data.get(next..next + compressed as usize) else {
            content.damage = Some("ARJ file data is cut short");
            break;
        };
        at = next + compressed as usize;
        let (flags, method, file_type) = (basic[4], basic[5], basic[6]);
        // Only binary and text files hold data; directories, labels and chapters do not.
        if file_type > 1 {
            continue;
        }
        let name = basic
            .get(usize::from(first_size)..)
            .map(|rest| rest.split(|&b| b == 0).next().unwrap_or_default())
            .map(|raw| String::from_utf8_lossy(raw).replace('\\', "/"))
            .unwrap_or_default();
        content.files.push(ArjFile {
            name,
            method: match method {
                0 => Method::Stored,
                1..=3 => Method::Compressed,
                other => Method::Unsupported(other),
            },
            garbled: flags & GARBLED != 0,
            size,
            crc,
            data: stored,
        });
    }
    content
}

/// A reader that decodes a compressed (method 1–3) ARJ file of `size` bytes.
pub(super) struct ArjReader<'a> {
    decoder: Lh7Decoder<&'a [u8]>,
    remaining: u64,
}

impl<'a> ArjReader<'a> {
    pub(super) fn new(data: &'a [u8], size: u32) -> Self {
        ArjReader {
            decoder: Lh7Decoder::new(data),
            remaining: u64::from(size),
        }
    }
}

impl Read for ArjReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        // The decoder fills exactly the buffer given; it must never be asked for more than the file holds.
        let n = buf
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        if n == 0 {
            return Ok(0);
        }
        self.decoder
            .fill_buffer(&mut buf[..n])
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))?;
        self.remaining -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn header_bytes(basic: &[u8]) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&(basic.len() as u16).to_le_bytes());
        out.extend_from_slice(basic);
        out.extend_from_slice(&crc32fast::hash(basic).to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        out
    }

    /// An ARJ archive holding `files` (name, bytes) stored (method 0).
    pub(crate) fn arj_of(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut main = vec![30, 11, 1, 2, 0x10, 0, 2, 0];
        main.resize(30, 0);
        main.extend_from_slice(b"test.arj\0\0");
        let mut out = header_bytes(&main);
        for (name, data) in files {
            let mut basic = vec![30, 11, 1, 2, 0x10, 0, 0, 0];
            basic.extend_from_slice(&0u32.to_le_bytes());
            basic.extend_from_slice(&(data.len() as u32).to_le_bytes());
            basic.extend_from_slice(&(data.len() as u32).to_le_bytes());
            basic.extend_from_slice(&crc32fast::hash(data).to_le_bytes());
            basic.resize(30, 0);
            basic.extend_from_slice(name.as_bytes());
            basic.extend_from_slice(b"\0\0");
            out.extend_from_slice(&header_bytes(&basic));
            out.extend_from_slice(data);
        }
        out.extend_from_slice(&[0x60, 0xea, 0, 0]);
        out
    }

    #[test]
    fn stored_files_are_listed_with_their_names_sizes_and_crcs() {
        let arj = arj_of(&[("bin\\a.exe", b"MZ one"), ("b.txt", b"two")]);
        assert!(looks_like_arj(&arj));
        let content = files(&arj, 10);
        assert_eq!(content.damage, None);
        assert_eq!(content.files.len(), 2);
        assert_eq!(content.files[0].name, "bin/a.exe");
        assert_eq!(content.files[0].method, Method::Stored);
        assert_eq!(content.files[0].data, b"MZ one");
        assert_eq!(content.files[0].crc, crc32fast::hash(b"MZ one"));
        assert_eq!(content.files[1].size, 3);
        assert_eq!(files(&arj, 1).files.len(), 1);
    }

    #[test]
    fn a_truncated_archive_is_damaged_not_a_panic() {
        let arj = arj_of(&[("a.exe", b"MZ one"), ("b.txt", b"two")]);
        for cut in 0..arj.len() - 4 {
            let content = files(&arj[..cut], 10);
            assert!(
                content.damage.is_some() || content.files.is_empty(),
                "{cut}"
            );
            assert!(content.files.len() <= 2);
        }
    }

    #[test]
    fn garbage_compressed_data_is_an_error_not_a_panic() {
        let mut out = Vec::new();
        let noise: Vec<u8> = (0..200u32).map(|i| (i * 37 % 251) as u8).collect();
        let result = ArjReader::new(&noise, 5000).read_to_end(&mut out);
        assert!(result.is_err() || out.len() <= 5000);
    }
}
