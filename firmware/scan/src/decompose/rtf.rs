//! Objects embedded in RTF: the hex digits of each `\objdata` group, decoded. What they hold (an
//! OLE1 object, usually a packaged file or an OLE2 document) is read by the `ole` module.

/// The decoded `\objdata` of every embedded object in `rtf`, at most `max`, in document order.
/// Hex digits are read up to the end of the group; white space, control words and nested groups
/// in between are skipped (writers fold the data into lines; malware pads it with control words).
/// A dangling half byte at the end is dropped.
pub(super) fn objects(rtf: &[u8], max: usize) -> Vec<Vec<u8>> {
    const KEYWORD: &[u8] = b"\\objdata";
    let mut found = Vec::new();
    let mut from = 0;
    while found.len() < max {
        let Some(at) = memchr::memmem::find(&rtf[from..], KEYWORD) else {
            break;
        };
        let mut i = from + at + KEYWORD.len();
        // `\objdataX` would be another control word.
        if rtf.get(i).is_some_and(u8::is_ascii_alphabetic) {
            from = i;
            continue;
        }
        let mut out = Vec::new();
        let mut high: Option<u8> = None;
        let mut depth = 0usize;
        while let Some(&b) = rtf.get(i) {
            i += 1;
            match b {
                b'{' => depth += 1,
                b'}' if depth == 0 => break,
                b'}' => depth -= 1,
                b'\\' => i = skip_control(rtf, i),
                _ if depth > 0 => {}
                _ => {
                    let Some(nibble) = hex_value(b) else { continue };
                    match high.take() {
                        Some(h) => out.push(h << 4 | nibble),
                        None => high = Some(nibble),
                    }
                }
            }
        }
        from = i;
        if !out.is_empty() {
            found.push(out);
        }
    }
    found
}

/// The index after the control word or symbol that starts at `i` (just after its backslash):
/// letters, an optional signed number, and one optional space; or a single other character.
fn skip_control(rtf: &[u8], mut i: usize) -> usize {
    let letters = rtf[i.min(rtf.len())..]
        .iter()
        .take_while(|b| b.is_ascii_alphabetic())
        .count();
    if letters == 0 {
        // A control symbol (`\*`, `\'hh`, `\{`): the symbol, and for `\'` its two hex digits.
        return match rtf.get(i) {
            Some(b'\'') => (i + 3).min(rtf.len()),
            Some(_) => i + 1,
            None => i,
        };
    }
    i += letters;
    if rtf.get(i) == Some(&b'-') {
        i += 1;
    }
    i += rtf[i.min(rtf.len())..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .count();
    if rtf.get(i) == Some(&b' ') {
        i += 1;
    }
    i
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An RTF document with `object` embedded as `\objdata` hex, folded every 64 digits.
    pub(crate) fn rtf_with_object(object: &[u8]) -> Vec<u8> {
        let hex: String = object.iter().map(|b| format!("{b:02x}")).collect();
        let folded: Vec<&str> = hex
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        format!(
            "{{\\rtf1\\ansi{{\\fonttbl{{\\f0 Times;}}}}\\pard Hello\\par\r\n\
             {{\\object\\objemb\\objw1\\objh1{{\\*\\objclass Package}}{{\\*\\objdata \r\n{}\r\n}}}}\\par}}",
            folded.join("\r\n")
        )
        .into_bytes()
    }

    #[test]
    fn objdata_hex_is_decoded_across_lines_and_control_words() {
        let rtf = rtf_with_object(b"\x01\x05\x00\x00MZ\xff");
        assert_eq!(objects(&rtf, 10), vec![b"\x01\x05\x00\x00MZ\xff".to_vec()]);
        let padded = b"{\\*\\objdata 01\\par 05{\\*\\junk ff}0 0\r\n4d}";
        assert_eq!(objects(padded, 10), vec![b"\x01\x05\x00\x4d".to_vec()]);
    }

    #[test]
    fn truncated_or_empty_objdata_yields_what_is_there() {
        let rtf = rtf_with_object(b"abcdef");
        for cut in 0..rtf.len() {
            for object in objects(&rtf[..cut], 10) {
                assert!(b"abcdef".starts_with(&object));
            }
        }
        assert!(objects(b"{\\objdata}", 10).is_empty());
        assert!(objects(b"{\\objdatax 4142}", 10).is_empty());
        assert!(objects(b"\\objdata\\", 10).is_empty());
    }
}
