//! SZDD, the MS-DOS/Windows 3 `COMPRESS.EXE` format (`EXPAND.EXE` undoes it; files named `SETUP.EX_`):
//! a 14-byte header and an LZSS stream with a 4 KiB window. Decoded as a reader, so the caller's bounded
//! read decides how much output is allowed.

use std::io::{self, Read};

/// The 8-byte magic every SZDD file starts with.
pub(crate) const MAGIC: &[u8] = b"SZDD\x88\xf0\x27\x33";

/// Header: magic, compression mode (`A`), the last character of the original name, original size.
const HEADER_LEN: usize = 14;

const WINDOW: usize = 4096;

/// What the header says about the compressed file.
pub(super) struct Header {
    /// The character `COMPRESS /R` replaced with `_` at the end of the file name (0 when not stored).
    pub(super) missing_char: u8,
    /// The original size; decoding stops there.
    pub(super) size: u32,
}

/// Reads the header, or None if `data` is not an SZDD file.
pub(super) fn header(data: &[u8]) -> Option<Header> {
    let h = data.get(..HEADER_LEN)?;
    if !h.starts_with(MAGIC) || h[8] != b'A' {
        return None;
    }
    Some(Header {
        missing_char: h[9],
        size: u32::from_le_bytes([h[10], h[11], h[12], h[13]]),
    })
}

/// The decoded content of an SZDD file. Ends at the size the header states; input that ends first is an
/// `UnexpectedEof` error after the bytes decoded so far.
pub(super) struct SzddReader<'a> {
    input: &'a [u8],
    at: usize,
    window: Box<[u8; WINDOW]>,
    /// Where the next output byte goes in the window.
    position: usize,
    /// Output still expected, from the header.
    remaining: u64,
    /// The current control byte, shifted as its flags are used, and how many flags are left in it.
    control: u8,
    flags_left: u8,
    /// A back-reference being copied: where from in the window, and how many bytes are left.
    copy: Option<(usize, usize)>,
}

impl<'a> SzddReader<'a> {
    /// A reader over `data` (the whole file, header included); None if it is not an SZDD file.
    pub(super) fn new(data: &'a [u8]) -> Option<Self> {
        let header = header(data)?;
        Some(SzddReader {
            input: data,
            at: HEADER_LEN,
            // The window starts filled with spaces and the first byte goes 16 bytes before its end.
            window: Box::new([b' '; WINDOW]),
            position: WINDOW - 16,
            remaining: u64::from(header.size),
            control: 0,
            flags_left: 0,
            copy: None,
        })
    }

    fn emit(&mut self, byte: u8) -> u8 {
        self.window[self.position] = byte;
        self.position = (self.position + 1) % WINDOW;
        self.remaining -= 1;
        byte
    }

    fn next_input(&mut self) -> Option<u8> {
        let byte = *self.input.get(self.at)?;
        self.at += 1;
        Some(byte)
    }

    /// The next output byte, or None at the end of the input.
    fn next_byte(&mut self) -> Option<u8> {
        loop {
            if let Some((from, left)) = self.copy {
                let byte = self.window[from];
                self.copy = (left > 1).then_some(((from + 1) % WINDOW, left - 1));
                return Some(self.emit(byte));
            }
            if self.flags_left == 0 {
                self.control = self.next_input()?;
                self.flags_left = 8;
            }
            let literal = self.control & 1 == 1;
            self.control >>= 1;
            self.flags_left -= 1;
            if literal {
                let byte = self.next_input()?;
                return Some(self.emit(byte));
            }
            let (low, high) = (self.next_input()?, self.next_input()?);
            let from = usize::from(low) | (usize::from(high & 0xf0) << 4);
            let length = usize::from(high & 0x0f) + 3;
            self.copy = Some((from, length));
        }
    }
}

impl Read for SzddReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut written = 0;
        while written < buf.len() && self.remaining > 0 {
            match self.next_byte() {
                Some(byte) => {
                    buf[written] = byte;
                    written += 1;
                }
                None if written > 0 => break,
                None => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!(
                            "SZDD data ends {} bytes short of the stated size",
                            self.remaining
                        ),
                    ));
                }
            }
        }
        Ok(written)
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// An SZDD file of `content`: literals only, except runs of a repeated byte, which become
    /// back-references, so both kinds of token are exercised.
    pub(in crate::decompose) fn szdd_of(content: &[u8], missing_char: u8) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.push(b'A');
        out.push(missing_char);
        out.extend_from_slice(&(content.len() as u32).to_le_bytes());
        let mut tokens: Vec<Vec<u8>> = Vec::new();
        let mut flags = Vec::new();
        let mut i = 0;
        let mut position = WINDOW - 16;
        while i < content.len() {
            let run = content[i..]
                .iter()
                .take_while(|&&b| b == content[i])
                .count();
            if i > 0 && content[i - 1] == content[i] && run >= 3 {
                // Copy from the previous byte: an overlapping back-reference repeats it.
                let length = run.min(18);
                let from = (position + WINDOW - 1) % WINDOW;
                tokens.push(vec![
                    from as u8,
                    ((from >> 4) as u8 & 0xf0) | (length - 3) as u8,
                ]);
                flags.push(false);
                i += length;
                position = (position + length) % WINDOW;
            } else {
                tokens.push(vec![content[i]]);
                flags.push(true);
                i += 1;
                position = (position + 1) % WINDOW;
            }
        }
        for (chunk, flag_chunk) in tokens.chunks(8).zip(flags.chunks(8)) {
            let control = flag_chunk
                .iter()
                .enumerate()
                .fold(0u8, |c, (n, &literal)| c | (u8::from(literal) << n));
            out.push(control);
            for token in chunk {
                out.extend_from_slice(token);
            }
        }
        out
    }

    fn expand(data: &[u8]) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        SzddReader::new(data).expect("szdd").read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn literals_and_back_references_expand_to_the_original() {
        let content =
            b"MZ\x90\x00\x00\x00\x00\x00\x00\x00 some text aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa end";
        let file = szdd_of(content, b'E');
        assert_eq!(header(&file).map(|h| h.missing_char), Some(b'E'));
        assert_eq!(expand(&file).unwrap(), content);
    }

    #[test]
    fn references_before_any_output_read_the_initial_spaces() {
        // One control byte saying "reference", then offset 0, length 3.
        let mut file = MAGIC.to_vec();
        file.extend_from_slice(b"A\0\x03\0\0\0\x00\x00\x00");
        assert_eq!(expand(&file).unwrap(), b"   ");
    }

    #[test]
    fn truncated_or_garbled_input_never_panics_and_stops_at_the_stated_size() {
        let file = szdd_of(&[7u8; 300], 0);
        for cut in HEADER_LEN..file.len() {
            let mut out = Vec::new();
            let result = SzddReader::new(&file[..cut]).unwrap().read_to_end(&mut out);
            assert!(result.is_err() || out.len() == 300);
            assert!(out.len() <= 300);
        }
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..500 {
            let mut garbled = file.clone();
            for _ in 0..6 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let at = HEADER_LEN + (seed as usize) % (garbled.len() - HEADER_LEN);
                garbled[at] = (seed >> 40) as u8;
            }
            let mut out = Vec::new();
            let _ = SzddReader::new(&garbled).unwrap().read_to_end(&mut out);
            assert!(out.len() <= 300);
        }
        assert!(SzddReader::new(&file[..HEADER_LEN - 1]).is_none());
    }

    #[test]
    fn clamav_test_file_expands_to_clam_exe() {
        let dir = std::path::Path::new("/usr/share/clamav-testfiles");
        let Ok(clam) = std::fs::read(dir.join("clam.exe")) else {
            eprintln!(
                "skipped: {} not installed (apt-get install clamav-testfiles)",
                dir.display()
            );
            return;
        };
        let file = std::fs::read(dir.join("clam.exe.szdd")).expect("clam.exe.szdd");
        assert_eq!(expand(&file).unwrap(), clam);
    }
}
