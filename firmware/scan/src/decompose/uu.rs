//! uuencoded files inside text: `begin MODE NAME` … `end` blocks, as old mailers and some malware
//! droppers still send them (as `Content-Transfer-Encoding: x-uuencode` or inline in a text body).
//! mail-parser does not decode them, so without this a uuencoded executable would be scanned as
//! harmless text.

/// One decoded `begin … end` block.
pub(super) struct UuFile {
    /// The file name from the `begin` line.
    pub name: String,
    /// The decoded bytes.
    pub bytes: Vec<u8>,
}

/// Finds and decodes every uuencoded block in `data`, at most `max_files`.
pub(super) fn find(data: &[u8], max_files: usize) -> Vec<UuFile> {
    let mut files = Vec::new();
    let mut lines = data
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    while files.len() < max_files {
        let Some(line) = lines.next() else { break };
        let Some(name) = begin_line(line) else {
            continue;
        };
        let mut bytes = Vec::new();
        let mut decoded_lines = 0usize;
        for line in lines.by_ref() {
            if line == b"end" || line.is_empty() {
                break;
            }
            let n = ((line[0].wrapping_sub(b' ')) & 63) as usize;
            if n == 0 {
                // The "`" (or space) line of length zero ends the data; what follows it is the
                // `end` line, which a truncated file may have lost part of ("e"), and must not be
                // decoded as data or the file's bytes (and hash) change.
                break;
            }
            decode_line(&line[1..], n, &mut bytes);
            decoded_lines += 1;
        }
        if decoded_lines > 0 {
            files.push(UuFile { name, bytes });
        }
    }
    files
}

/// `begin 644 name` → `name`; anything else → None.
fn begin_line(line: &[u8]) -> Option<String> {
    let rest = line.strip_prefix(b"begin ")?;
    let text = std::str::from_utf8(rest).ok()?;
    let (mode, name) = text.split_once(' ')?;
    let octal = (3..=4).contains(&mode.len()) && mode.bytes().all(|b| (b'0'..=b'7').contains(&b));
    let name = name.trim();
    (octal && !name.is_empty()).then(|| name.to_string())
}

/// Decodes the characters of one line (after its length character) into at most `n` bytes.
fn decode_line(chars: &[u8], n: usize, out: &mut Vec<u8>) {
    let value = |i: usize| (chars.get(i).copied().unwrap_or(b' ').wrapping_sub(b' ')) & 63;
    let mut produced = 0;
    let mut i = 0;
    while produced < n {
        let (a, b, c, d) = (value(i), value(i + 1), value(i + 2), value(i + 3));
        for byte in [a << 2 | b >> 4, (b & 15) << 4 | c >> 2, (c & 3) << 6 | d] {
            if produced < n {
                out.push(byte);
                produced += 1;
            }
        }
        i += 4;
    }
}

/// A plain uuencoder for the tests (the `uuencode` utility's format).
#[cfg(test)]
pub(super) fn encode(name: &str, data: &[u8]) -> String {
    let ch = |v: u8| if v == 0 { '`' } else { (v + b' ') as char };
    let mut out = format!("begin 644 {name}\n");
    for chunk in data.chunks(45) {
        out.push(ch(chunk.len() as u8));
        for group in chunk.chunks(3) {
            let b = [
                group[0],
                *group.get(1).unwrap_or(&0),
                *group.get(2).unwrap_or(&0),
            ];
            for v in [
                b[0] >> 2,
                (b[0] & 3) << 4 | b[1] >> 4,
                (b[1] & 15) << 2 | b[2] >> 6,
                b[2] & 63,
            ] {
                out.push(ch(v));
            }
        }
        out.push('\n');
    }
    out.push_str("`\nend\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_uuencoded_block_decodes_to_the_original_bytes_and_name() {
        let data: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        let text = format!(
            "Hello,\r\nsee below.\r\n\r\n{}\r\nBye\r\n",
            encode("tool.exe", &data).replace('\n', "\r\n")
        );
        let files = find(text.as_bytes(), 10);
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].name, "tool.exe");
        assert_eq!(files[0].bytes, data);
    }

    #[test]
    fn a_truncated_end_line_after_the_zero_length_line_adds_no_bytes() {
        let data = b"MZ and some more bytes of a small program".to_vec();
        let text = encode("clam.exe", &data).replace("`\nend\n", "`\ne");
        let files = find(text.as_bytes(), 10);
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].bytes, data);
    }

    #[test]
    fn text_that_merely_mentions_begin_is_not_decoded() {
        assert!(find(b"begin the meeting at 10\nend\n", 10).is_empty());
        assert!(
            find(b"begin 999 x\nM\nend\n", 10).is_empty(),
            "mode must be octal"
        );
    }
}
