//! BinHex 4.0 (`.hqx`), the classic Mac encoding for mail: a text line announcing it, then between two
//! colons a 6-bit encoding of a run-length encoded stream holding a header, the data fork and the resource
//! fork. Decoded as a reader, so the caller's bounded read decides how much output is allowed.

use std::io::{self, Read};

/// The line every BinHex 4.0 file starts with (after optional blank space).
const ANNOUNCEMENT: &[u8] = b"(This file must be converted with BinHex";

/// The 64 characters of the encoding, in value order.
const ALPHABET: &[u8; 64] = b"!\"#$%&'()*+,-012345689@ABCDEFGHIJKLMNPQRSTUVXYZ[`abcdefhijklmpqr";

/// The run-length marker: `0x90 n` repeats the previous byte to `n` copies in all; `0x90 0` is a literal 0x90.
const RUN_MARKER: u8 = 0x90;

/// Whether `data` starts (after blank space) with the BinHex 4.0 announcement line.
pub(crate) fn looks_like_binhex(data: &[u8]) -> bool {
    let start = data
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(data.len());
    data[start..].starts_with(ANNOUNCEMENT)
}

/// The value of an encoding character, None for characters outside the alphabet.
fn value_of(c: u8) -> Option<u8> {
    ALPHABET.iter().position(|&a| a == c).map(|v| v as u8)
}

/// The decoded byte stream (header, forks and their CRCs), run-length decoding included.
pub(super) struct BinHexReader<'a> {
    /// The encoded characters, from just after the opening colon.
    text: &'a [u8],
    at: usize,
    /// Bits decoded from characters but not yet made into bytes.
    bits: u32,
    bit_count: u32,
    /// The last byte produced, what a run repeats, and how many repeats are still owed.
    last: u8,
    repeats: u32,
    /// The closing colon (or the end of the text) was reached.
    ended: bool,
}

impl<'a> BinHexReader<'a> {
    /// A reader over the encoded data in `data`; None if the announcement or the opening colon is missing.
    pub(super) fn new(data: &'a [u8]) -> Option<Self> {
        if !looks_like_binhex(data) {
            return None;
        }
        let announced = memchr::memmem::find(data, ANNOUNCEMENT)?;
        // The encoded data starts at the first colon that begins a line after the announcement.
        let rest = &data[announced..];
        let line_end = rest.iter().position(|&b| b == b'\n' || b == b'\r')?;
        let after = &rest[line_end..];
        let colon = after.iter().position(|&b| b == b':')?;
        Some(BinHexReader {
            text: &after[colon + 1..],
            at: 0,
            bits: 0,
            bit_count: 0,
            last: 0,
            repeats: 0,
            ended: false,
        })
    }

    /// The next byte of the 6-bit decoding, before run-length decoding.
    fn next_raw(&mut self) -> io::Result<Option<u8>> {
        while self.bit_count < 8 {
            if self.ended {
                return Ok(None);
            }
            let Some(&c) = self.text.get(self.at) else {
                self.ended = true;
                continue;
            };
            self.at += 1;
            if c == b':' {
                self.ended = true;
                continue;
            }
            if c.is_ascii_whitespace() {
                continue;
            }
            let value = value_of(c).ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("character {:?} is not BinHex", char::from(c)),
                )
            })?;
            self.bits = (self.bits << 6) | u32::from(value);
            self.bit_count += 6;
        }
        self.bit_count -= 8;
        let byte = (self.bits >> self.bit_count) as u8;
        self.bits &= (1 << self.bit_count) - 1;
        Ok(Some(byte))
    }

    /// The next byte of the decoded stream.
    fn next_byte(&mut self) -> io::Result<Option<u8>> {
        // A loop, not recursion: hostile input can chain any number of empty runs.
        loop {
            if self.repeats > 0 {
                self.repeats -= 1;
                return Ok(Some(self.last));
            }
            let Some(byte) = self.next_raw()? else {
                return Ok(None);
            };
            if byte != RUN_MARKER {
                self.last = byte;
                return Ok(Some(byte));
            }
            match self.next_raw()? {
                None => return Ok(None),
                Some(0) => {
                    self.last = RUN_MARKER;
                    return Ok(Some(RUN_MARKER));
                }
                // The previous byte was already produced once; a count of 1 repeats nothing.
                Some(count) => self.repeats = u32::from(count) - 1,
            }
        }
    }

    /// Reads the header in front of the forks.
    pub(super) fn read_header(&mut self) -> io::Result<Header> {
        let mut length = [0u8; 1];
        self.read_exact(&mut length)?;
        let mut name = vec![0u8; usize::from(length[0])];
        self.read_exact(&mut name)?;
        // version (1), type (4), creator (4), flags (2), data length (4), resource length (4), CRC (2).
        let mut rest = [0u8; 21];
        self.read_exact(&mut rest)?;
        Ok(Header {
            name,
            data_length: u32::from_be_bytes([rest[11], rest[12], rest[13], rest[14]]),
            resource_length: u32::from_be_bytes([rest[15], rest[16], rest[17], rest[18]]),
        })
    }

    /// Skips the 2-byte CRC that follows each fork.
    pub(super) fn skip_crc(&mut self) -> io::Result<()> {
        let mut crc = [0u8; 2];
        self.read_exact(&mut crc)
    }
}

impl Read for BinHexReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut written = 0;
        while written < buf.len() {
            match self.next_byte() {
                Ok(Some(byte)) => {
                    buf[written] = byte;
                    written += 1;
                }
                Ok(None) => break,
                Err(e) if written == 0 => return Err(e),
                Err(_) => break,
            }
        }
        Ok(written)
    }
}

/// The BinHex header: the Mac file name and the sizes of the two forks.
pub(super) struct Header {
    pub(super) name: Vec<u8>,
    pub(super) data_length: u32,
    pub(super) resource_length: u32,
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A BinHex 4.0 file holding `data` as the data fork of a file called `name` (CRCs left zero: the
    /// decoder does not check them), with runs of a repeated byte run-length encoded.
    pub(in crate::decompose) fn binhex_of(name: &str, data: &[u8], resource: &[u8]) -> Vec<u8> {
        let mut stream = vec![name.len() as u8];
        stream.extend_from_slice(name.as_bytes());
        stream.push(0);
        stream.extend_from_slice(b"APPLMACS\0\0");
        stream.extend_from_slice(&(data.len() as u32).to_be_bytes());
        stream.extend_from_slice(&(resource.len() as u32).to_be_bytes());
        stream.extend_from_slice(&[0, 0]);
        stream.extend_from_slice(data);
        stream.extend_from_slice(&[0, 0]);
        stream.extend_from_slice(resource);
        stream.extend_from_slice(&[0, 0]);
        let mut rle = Vec::new();
        let mut i = 0;
        while i < stream.len() {
            let byte = stream[i];
            let run = stream[i..]
                .iter()
                .take_while(|&&b| b == byte)
                .count()
                .min(255);
            if byte == RUN_MARKER {
                rle.extend_from_slice(&[RUN_MARKER, 0]);
                i += 1;
            } else if run >= 3 {
                rle.extend_from_slice(&[byte, RUN_MARKER, run as u8]);
                i += run;
            } else {
                rle.push(byte);
                i += 1;
            }
        }
        let mut text = b"(This file must be converted with BinHex 4.0)\r\n\r\n:".to_vec();
        let mut column = 1;
        for chunk in rle.chunks(3) {
            let n = chunk
                .iter()
                .chain([0u8, 0].iter())
                .take(3)
                .fold(0u32, |n, &b| (n << 8) | u32::from(b));
            let chars = [18, 12, 6, 0].map(|shift| ALPHABET[((n >> shift) & 63) as usize]);
            for c in &chars[..chunk.len() + 1] {
                text.push(*c);
                column += 1;
                if column == 64 {
                    text.extend_from_slice(b"\r\n");
                    column = 0;
                }
            }
        }
        text.extend_from_slice(b":\r\n");
        text
    }

    fn forks(text: &[u8]) -> io::Result<(Vec<u8>, Vec<u8>, Vec<u8>)> {
        let mut reader = BinHexReader::new(text).expect("binhex");
        let header = reader.read_header()?;
        let mut data = Vec::new();
        (&mut reader)
            .take(u64::from(header.data_length))
            .read_to_end(&mut data)?;
        reader.skip_crc()?;
        let mut resource = Vec::new();
        (&mut reader)
            .take(u64::from(header.resource_length))
            .read_to_end(&mut resource)?;
        Ok((header.name, data, resource))
    }

    #[test]
    fn forks_and_name_are_decoded_with_runs_and_literal_markers() {
        let mut data = b"MZ".to_vec();
        data.extend_from_slice(&[0u8; 40]);
        data.extend_from_slice(&[RUN_MARKER, RUN_MARKER, 1, 2, 3, 3, 3, 3]);
        let text = binhex_of("clam.exe", &data, b"rsrc");
        assert!(looks_like_binhex(&text));
        let (name, got, resource) = forks(&text).unwrap();
        assert_eq!(name, b"clam.exe");
        assert_eq!(got, data);
        assert_eq!(resource, b"rsrc");
    }

    #[test]
    fn truncated_or_garbled_text_never_panics() {
        let text = binhex_of("a", &[5u8; 200], b"");
        for cut in 0..text.len() {
            if let Some(mut reader) = BinHexReader::new(&text[..cut]) {
                let mut out = Vec::new();
                let _ = reader.read_to_end(&mut out);
                // The largest run is 255 copies from three encoded bytes.
                assert!(out.len() <= cut * 255);
            }
        }
        let mut seed = 0x1234_5678_9abc_def1u64;
        for _ in 0..1000 {
            let mut garbled = text.clone();
            for _ in 0..4 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let at = 50 + (seed as usize) % (garbled.len() - 50);
                garbled[at] = ALPHABET[(seed >> 40) as usize % 64];
            }
            let _ = forks(&garbled);
        }
        assert!(!looks_like_binhex(b"plain text"));
    }

    #[test]
    fn clamav_test_file_holds_clam_exe() {
        let dir = std::path::Path::new("/usr/share/clamav-testfiles");
        let Ok(clam) = std::fs::read(dir.join("clam.exe")) else {
            eprintln!(
                "skipped: {} not installed (apt-get install clamav-testfiles)",
                dir.display()
            );
            return;
        };
        let text = std::fs::read(dir.join("clam.exe.binhex")).expect("clam.exe.binhex");
        let (_, data, _) = forks(&text).unwrap();
        assert_eq!(data, clam);
    }
}
