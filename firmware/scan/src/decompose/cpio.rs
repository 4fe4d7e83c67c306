//! cpio archives in the four formats still met: odc (`070707`, ASCII octal), newc and crc (`070701`,
//! `070702`, ASCII hex) and the old binary format in either byte order. Members are slices of the input,
//! so nothing is copied or inflated here; every length is checked against what is left of the input.

/// The old binary format's magic number, read as a 16-bit word in the archive's byte order.
const BINARY_MAGIC: u16 = 0o070707;

/// Mode bits of a regular file (`S_IFREG`) under the file-type mask (`S_IFMT`).
const S_IFMT: u64 = 0o170000;
const S_IFREG: u64 = 0o100000;

/// The name of the entry that ends every cpio archive.
const TRAILER: &[u8] = b"TRAILER!!!";

/// The header layout of one archive; all entries of an archive share it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    /// POSIX.1 portable format: 76-byte header of octal fields, no padding.
    Odc,
    /// SVR4 format (`070701`, and `070702` with a checksum): 110-byte header of hex fields, 4-byte alignment.
    Newc,
    /// The PDP-11 era binary format: 26-byte header of 16-bit words, 2-byte alignment.
    Binary { little_endian: bool },
}

impl Format {
    fn of(data: &[u8]) -> Option<Format> {
        if data.starts_with(b"070707") {
            Some(Format::Odc)
        } else if data.starts_with(b"070701") || data.starts_with(b"070702") {
            Some(Format::Newc)
        } else if data.len() >= 2 && u16::from_le_bytes([data[0], data[1]]) == BINARY_MAGIC {
            Some(Format::Binary {
                little_endian: true,
            })
        } else if data.len() >= 2 && u16::from_be_bytes([data[0], data[1]]) == BINARY_MAGIC {
            Some(Format::Binary {
                little_endian: false,
            })
        } else {
            None
        }
    }
}

/// Whether `data` starts with a complete, well-formed cpio header (any of the four formats). Stricter than
/// the magic alone: a text that happens to start with `070707` is not an archive.
pub(crate) fn looks_like_cpio(data: &[u8]) -> bool {
    let Some(header) = Format::of(data).and_then(|format| parse_header(data, format).ok()) else {
        return false;
    };
    // The name must be there and end with its NUL.
    header
        .header_len
        .checked_add(header.name_size)
        .and_then(|end| data.get(..end))
        .is_some_and(|h| h.ends_with(b"\0"))
}

/// One entry of the archive.
pub(super) struct Entry<'a> {
    /// The stored path, without its terminating NUL.
    pub(super) name: &'a [u8],
    /// Whether this is a regular file (directories, links, devices and fifos are not).
    pub(super) is_file: bool,
    /// The entry's content, a slice of the archive.
    pub(super) data: &'a [u8],
}

/// Why an archive could not be read past some point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum CpioError {
    /// The header at `offset` has no valid magic or a non-numeric field.
    BadHeader { offset: usize },
    /// The entry at `offset` claims more bytes than the archive has.
    Truncated { offset: usize },
}

impl std::fmt::Display for CpioError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CpioError::BadHeader { offset } => write!(f, "bad cpio header at offset {offset}"),
            CpioError::Truncated { offset } => {
                write!(
                    f,
                    "cpio entry at offset {offset} runs past the end of the archive"
                )
            }
        }
    }
}

/// The entries of the archive in `data`, in order, up to the trailer. After an error the iterator ends.
pub(super) fn entries(data: &[u8]) -> Entries<'_> {
    Entries {
        format: Format::of(data),
        data,
        offset: 0,
        done: false,
    }
}

/// Iterator over the entries of one archive.
pub(super) struct Entries<'a> {
    format: Option<Format>,
    data: &'a [u8],
    offset: usize,
    done: bool,
}

impl<'a> Iterator for Entries<'a> {
    type Item = Result<Entry<'a>, CpioError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let result = self.read_entry();
        match &result {
            Ok(None) | Err(_) => self.done = true,
            Ok(Some(_)) => {}
        }
        result.transpose()
    }
}

impl<'a> Entries<'a> {
    fn read_entry(&mut self) -> Result<Option<Entry<'a>>, CpioError> {
        let start = self.offset;
        let bad = CpioError::BadHeader { offset: start };
        let truncated = CpioError::Truncated { offset: start };
        // Archives are padded to a block size with NULs after the trailer; an archive without a trailer
        // that ends cleanly on an entry boundary is accepted too.
        let rest = self.data.get(start..).unwrap_or_default();
        if rest.iter().all(|&b| b == 0) {
            return Ok(None);
        }
        let format = self.format.ok_or(bad.clone())?;
        let header = parse_header(rest, format).map_err(|e| match e {
            HeaderError::Short => truncated.clone(),
            HeaderError::Invalid => bad.clone(),
        })?;
        let name_start = start
            .checked_add(header.header_len)
            .ok_or(truncated.clone())?;
        let name_end = name_start
            .checked_add(header.name_size)
            .ok_or(truncated.clone())?;
        let name = self
            .data
            .get(name_start..name_end)
            .ok_or(truncated.clone())?;
        // The stored size counts the terminating NUL.
        let name = name.strip_suffix(b"\0").unwrap_or(name);
        let data_start = align(name_end, format.name_alignment()).ok_or(truncated.clone())?;
        let data_end = data_start
            .checked_add(header.file_size)
            .ok_or(truncated.clone())?;
        let content = self
            .data
            .get(data_start..data_end)
            .ok_or(truncated.clone())?;
        if name == TRAILER {
            return Ok(None);
        }
        self.offset = align(data_end, format.data_alignment()).ok_or(truncated)?;
        Ok(Some(Entry {
            name,
            is_file: header.mode & S_IFMT == S_IFREG,
            data: content,
        }))
    }
}

impl Format {
    /// Where the name ends is rounded up to this (counted from the start of the archive).
    fn name_alignment(self) -> usize {
        match self {
            Format::Odc => 1,
            Format::Newc => 4,
            Format::Binary { .. } => 2,
        }
    }

    /// Where the content ends is rounded up to this.
    fn data_alignment(self) -> usize {
        self.name_alignment()
    }
}

/// `offset` rounded up to a multiple of `alignment`, or None on overflow.
fn align(offset: usize, alignment: usize) -> Option<usize> {
    offset.checked_next_multiple_of(alignment)
}

/// The fields of a header we use.
struct Header {
    header_len: usize,
    mode: u64,
    name_size: usize,
    file_size: usize,
}

enum HeaderError {
    /// Fewer bytes than a header.
    Short,
    /// Wrong magic or a field that is not a number.
    Invalid,
}

fn parse_header(data: &[u8], format: Format) -> Result<Header, HeaderError> {
    let header = match format {
        Format::Odc => {
            let h = data.get(..76).ok_or(HeaderError::Short)?;
            if &h[..6] != b"070707" {
                return Err(HeaderError::Invalid);
            }
            if !h[6..].iter().all(|b| (b'0'..=b'7').contains(b)) {
                return Err(HeaderError::Invalid);
            }
            // magic 6, dev 6, ino 6, mode 6, uid 6, gid 6, nlink 6, rdev 6, mtime 11, namesize 6, filesize 11.
            Header {
                header_len: 76,
                mode: number(&h[18..24], 8)?,
                name_size: size(number(&h[59..65], 8)?)?,
                file_size: size(number(&h[65..76], 8)?)?,
            }
        }
        Format::Newc => {
            let h = data.get(..110).ok_or(HeaderError::Short)?;
            if &h[..6] != b"070701" && &h[..6] != b"070702" {
                return Err(HeaderError::Invalid);
            }
            // magic 6, then 13 fields of 8 hex digits: ino, mode, uid, gid, nlink, mtime, filesize,
            // devmajor, devminor, rdevmajor, rdevminor, namesize, check.
            let field = |n: usize| number(&h[6 + 8 * n..14 + 8 * n], 16);
            for n in 0..13 {
                field(n)?;
            }
            Header {
                header_len: 110,
                mode: field(1)?,
                name_size: size(field(11)?)?,
                file_size: size(field(6)?)?,
            }
        }
        Format::Binary { little_endian } => {
            let h = data.get(..26).ok_or(HeaderError::Short)?;
            let word = |n: usize| {
                let pair = [h[2 * n], h[2 * n + 1]];
                u64::from(if little_endian {
                    u16::from_le_bytes(pair)
                } else {
                    u16::from_be_bytes(pair)
                })
            };
            if word(0) != u64::from(BINARY_MAGIC) {
                return Err(HeaderError::Invalid);
            }
            // magic, dev, ino, mode, uid, gid, nlink, rdev, mtime (2 words), namesize, filesize (2 words,
            // most significant first whatever the byte order).
            Header {
                header_len: 26,
                mode: word(3),
                name_size: size(word(10))?,
                file_size: size((word(11) << 16) | word(12))?,
            }
        }
    };
    // Every entry has a name, at least its NUL.
    if header.name_size == 0 {
        return Err(HeaderError::Invalid);
    }
    Ok(header)
}

/// An ASCII number field in `radix`; every byte must be a digit.
fn number(field: &[u8], radix: u32) -> Result<u64, HeaderError> {
    field.iter().try_fold(0u64, |n, &b| {
        let digit = char::from(b).to_digit(radix).ok_or(HeaderError::Invalid)?;
        n.checked_mul(u64::from(radix))
            .and_then(|n| n.checked_add(u64::from(digit)))
            .ok_or(HeaderError::Invalid)
    })
}

fn size(n: u64) -> Result<usize, HeaderError> {
    usize::try_from(n).map_err(|_| HeaderError::Invalid)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A newc (`070701`) archive of regular files, with a directory first and the trailer last.
    pub(in crate::decompose) fn newc_of(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut entry = |name: &str, mode: u32, data: &[u8]| {
            out.extend_from_slice(b"070701");
            let fields = [
                1,
                mode,
                0,
                0,
                1,
                0,
                data.len() as u32,
                0,
                0,
                0,
                0,
                name.len() as u32 + 1,
                0,
            ];
            for f in fields {
                out.extend_from_slice(format!("{f:08X}").as_bytes());
            }
            out.extend_from_slice(name.as_bytes());
            out.push(0);
            out.resize(out.len().next_multiple_of(4), 0);
            out.extend_from_slice(data);
            out.resize(out.len().next_multiple_of(4), 0);
        };
        entry("dir", 0o040755, b"");
        for (name, data) in files {
            entry(name, 0o100644, data);
        }
        entry("TRAILER!!!", 0, b"");
        out.resize(out.len().next_multiple_of(512), 0);
        out
    }

    /// An odc (`070707`) archive of regular files.
    fn odc_of(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, data, mode) in
            files
                .iter()
                .map(|(n, d)| (*n, *d, 0o100644))
                .chain([("TRAILER!!!", &b""[..], 0)])
        {
            out.extend_from_slice(
                format!(
                    "070707{:06o}{:06o}{:06o}{:06o}{:06o}{:06o}{:06o}{:011o}{:06o}{:011o}",
                    0,
                    1,
                    mode,
                    0,
                    0,
                    1,
                    0,
                    0,
                    name.len() + 1,
                    data.len()
                )
                .as_bytes(),
            );
            out.extend_from_slice(name.as_bytes());
            out.push(0);
            out.extend_from_slice(data);
        }
        out
    }

    /// An old binary archive of regular files in the given byte order.
    fn binary_of(files: &[(&str, &[u8])], little_endian: bool) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, data, mode) in
            files
                .iter()
                .map(|(n, d)| (*n, *d, 0o100644u16))
                .chain([("TRAILER!!!", &b""[..], 0)])
        {
            let size = data.len() as u32;
            let words = [
                BINARY_MAGIC,
                0,
                1,
                mode,
                0,
                0,
                1,
                0,
                0,
                0,
                name.len() as u16 + 1,
                (size >> 16) as u16,
                size as u16,
            ];
            for w in words {
                out.extend_from_slice(&if little_endian {
                    w.to_le_bytes()
                } else {
                    w.to_be_bytes()
                });
            }
            out.extend_from_slice(name.as_bytes());
            out.push(0);
            out.resize(out.len().next_multiple_of(2), 0);
            out.extend_from_slice(data);
            out.resize(out.len().next_multiple_of(2), 0);
        }
        out
    }

    fn files(archive: &[u8]) -> Vec<(String, Vec<u8>)> {
        entries(archive)
            .map(|e| e.expect("entry"))
            .filter(|e| e.is_file)
            .map(|e| {
                (
                    String::from_utf8_lossy(e.name).into_owned(),
                    e.data.to_vec(),
                )
            })
            .collect()
    }

    #[test]
    fn all_four_formats_yield_their_regular_files() {
        let content: &[u8] = b"odd-sized content";
        let want = vec![
            ("a/one.txt".to_owned(), content.to_vec()),
            ("two.bin".to_owned(), vec![1, 2, 3]),
        ];
        let input: &[(&str, &[u8])] = &[("a/one.txt", content), ("two.bin", &[1, 2, 3])];
        for archive in [
            newc_of(input),
            odc_of(input),
            binary_of(input, true),
            binary_of(input, false),
        ] {
            assert!(looks_like_cpio(&archive));
            assert_eq!(files(&archive), want);
        }
    }

    #[test]
    fn truncated_archives_report_an_error_and_never_read_past_the_end() {
        let archive = newc_of(&[("a.txt", b"some content here")]);
        let mut errors = 0;
        for cut in 0..archive.len() {
            let mut seen = 0;
            for entry in entries(&archive[..cut]) {
                match entry {
                    Ok(e) => seen += e.data.len(),
                    Err(_) => errors += 1,
                }
            }
            assert!(seen <= cut);
        }
        assert!(errors > 0);
    }

    #[test]
    fn garbled_headers_never_panic() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for original in [
            newc_of(&[("a", b"xyz")]),
            odc_of(&[("a", b"xyz")]),
            binary_of(&[("a", b"xyz")], true),
            binary_of(&[("a", b"xyz")], false),
        ] {
            for _ in 0..2000 {
                let mut garbled = original.clone();
                for _ in 0..4 {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    let at = (seed as usize) % garbled.len();
                    garbled[at] = (seed >> 32) as u8;
                }
                for entry in entries(&garbled).flatten() {
                    assert!(entry.data.len() <= garbled.len());
                }
            }
        }
        // Huge declared sizes (binary word pairs, 11 octal digits) are errors, not allocations.
        let mut huge = binary_of(&[("a", b"xyz")], true);
        huge[22..26].copy_from_slice(&[0xff, 0xff, 0xff, 0xff]);
        assert!(matches!(
            entries(&huge).next(),
            Some(Err(CpioError::Truncated { .. }))
        ));
    }

    #[test]
    fn text_starting_with_the_magic_digits_is_not_an_archive() {
        assert!(!looks_like_cpio(b"070707 is the number to call"));
        assert!(!looks_like_cpio(b"\xc7\x71"));
    }

    #[test]
    fn clamav_test_archives_hold_clam_exe() {
        let dir = std::path::Path::new("/usr/share/clamav-testfiles");
        let Ok(clam) = std::fs::read(dir.join("clam.exe")) else {
            eprintln!(
                "skipped: {} not installed (apt-get install clamav-testfiles)",
                dir.display()
            );
            return;
        };
        for name in [
            "clam.odc.cpio",
            "clam.newc.cpio",
            "clam.bin-le.cpio",
            "clam.bin-be.cpio",
        ] {
            let archive = std::fs::read(dir.join(name)).expect(name);
            assert!(looks_like_cpio(&archive), "{name}");
            assert_eq!(
                files(&archive),
                [("clam.exe".to_owned(), clam.clone())],
                "{name}"
            );
        }
    }
}
