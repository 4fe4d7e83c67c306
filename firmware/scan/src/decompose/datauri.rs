//! `data:` URIs with base64 content (RFC 2397) in HTML and text: `<a href="data:application/octet-stream;base64,TVq…">`.
//! A mail reader or browser turns such a link into a file, so what it carries is a file of the
//! message and must be scanned as one, not as a run of letters in the text.

/// Longest media type with parameters accepted between `data:` and `;base64,`; real ones are short.
const MAX_MEDIA_TYPE: usize = 256;

/// Shortest payload (in base64 characters) worth a part: a few bytes are not a file.
const MIN_PAYLOAD: usize = 8;

/// One base64 `data:` URI found in text.
pub(super) struct DataUri<'a> {
    /// The declared media type (`application/octet-stream`), lower case; empty when left out.
    pub media_type: String,
    /// The base64 payload as it stands in the text (may contain white space from line folding).
    pub payload: &'a [u8],
}

impl DataUri<'_> {
    /// The decoded payload; white space and any character outside the base64 alphabet are
    /// skipped, missing padding is tolerated, as browsers do.
    pub fn decode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.payload.len() / 4 * 3 + 3);
        let (mut acc, mut bits) = (0u32, 0u32);
        for &c in self.payload {
            let value = match c {
                b'A'..=b'Z' => c - b'A',
                b'a'..=b'z' => c - b'a' + 26,
                b'0'..=b'9' => c - b'0' + 52,
                b'+' | b'-' => 62,
                b'/' | b'_' => 63,
                b'=' => break,
                _ => continue,
            };
            acc = (acc << 6) | u32::from(value);
            bits += 6;
            if bits >= 8 {
                bits -= 8;
                out.push((acc >> bits) as u8);
                acc &= (1 << bits) - 1;
            }
        }
        out
    }
}

/// Whether `text` may hold a base64 data URI: a cheap test before [`find`].
pub(super) fn may_contain(text: &[u8]) -> bool {
    memchr_ci(text, b"data:").is_some() && memchr_ci(text, b";base64,").is_some()
}

/// Every base64 `data:` URI in `text`, at most `max` of them, in order.
pub(super) fn find(text: &[u8], max: usize) -> Vec<DataUri<'_>> {
    let mut found = Vec::new();
    let mut from = 0;
    while found.len() < max {
        let Some(at) = memchr_ci(&text[from..], b"data:") else {
            break;
        };
        let start = from + at + b"data:".len();
        from = start;
        // `data:` inside a longer word (`metadata:`) is no URI scheme.
        if from - b"data:".len() > 0 && text[from - b"data:".len() - 1].is_ascii_alphanumeric() {
            continue;
        }
        let header_end = text[start..]
            .iter()
            .take(MAX_MEDIA_TYPE + b";base64".len() + 1)
            .position(|&b| b == b',' || !is_header_byte(b));
        let Some(header_len) = header_end else {
            continue;
        };
        if text[start + header_len] != b',' {
            continue;
        }
        let header = &text[start..start + header_len];
        let lower = header.to_ascii_lowercase();
        let Some(media) = lower.strip_suffix(b";base64") else {
            continue;
        };
        let payload_start = start + header_len + 1;
        let payload_len = text[payload_start..]
            .iter()
            .position(|&b| !is_payload_byte(b))
            .unwrap_or(text.len() - payload_start);
        from = payload_start + payload_len;
        let payload = &text[payload_start..from];
        if payload.iter().filter(|b| !b.is_ascii_whitespace()).count() < MIN_PAYLOAD {
            continue;
        }
        let media_type =
            String::from_utf8_lossy(media.split(|&b| b == b';').next().unwrap_or(b"")).into_owned();
        found.push(DataUri {
            media_type,
            payload,
        });
    }
    found
}

/// A character of a media type and its parameters (`text/plain;charset=utf-8`).
fn is_header_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"/;=+-._!#$&^%".contains(&b)
}

/// A character of a base64 payload as written in HTML: the alphabet (standard and URL-safe),
/// padding, and the white space of folded lines.
fn is_payload_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"+/-_=".contains(&b) || matches!(b, b'\r' | b'\n' | b' ' | b'\t')
}

/// The position of `needle` (lower-case ASCII) in `haystack`, ignoring ASCII case.
/// Where `needle` first occurs in `haystack`, ASCII case ignored. Only the positions of the
/// needle's last byte (either case) are compared, found with memchr: text is scanned at
/// memchr's speed instead of a comparison at every byte. (The needles here end in punctuation,
/// which is rare in text.)
fn memchr_ci(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    let (&last, _) = needle.split_last()?;
    let before = needle.len() - 1;
    memchr::memchr2_iter(
        last.to_ascii_lowercase(),
        last.to_ascii_uppercase(),
        haystack,
    )
    .filter(|&end| end >= before)
    .map(|end| end - before)
    .find(|&start| haystack[start..start + needle.len()].eq_ignore_ascii_case(needle))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_base64_data_uri_in_a_link_decodes_to_its_bytes() {
        let html =
            b"<a href=\"data:application/octet-stream;base64,TVpQAAIAAAAEAA8A//8AAA==\">t</a>";
        assert!(may_contain(html));
        let uris = find(html, 10);
        assert_eq!(uris.len(), 1);
        assert_eq!(uris[0].media_type, "application/octet-stream");
        assert_eq!(
            uris[0].decode(),
            b"MZP\x00\x02\x00\x00\x00\x04\x00\x0f\x00\xff\xff\x00\x00"
        );
    }

    #[test]
    fn folded_unpadded_and_upper_case_uris_are_found() {
        let text = b"x DATA:TEXT/PLAIN;Base64,SGVsbG8s\r\n IHdvcmxk y";
        let uris = find(text, 10);
        assert_eq!(uris.len(), 1);
        assert_eq!(uris[0].decode(), b"Hello, world");
    }

    #[test]
    fn non_base64_tiny_and_truncated_uris_yield_nothing() {
        assert!(find(b"<img src=\"data:text/plain,hello%20world\">", 10).is_empty());
        assert!(find(b"data:image/png;base64,AAA=", 10).is_empty());
        assert!(find(b"metadata:x;base64,QUFBQUFBQUFBQUFB", 10).is_empty());
        assert!(find(b"data:", 10).is_empty());
        assert!(find(b"data:application/octet-stream;base64", 10).is_empty());
        let long_type = format!("data:{};base64,QUFBQUFBQUFBQUFB", "a".repeat(1000));
        assert!(find(long_type.as_bytes(), 10).is_empty());
    }

    #[test]
    fn at_most_max_uris_are_returned() {
        let text = "data:;base64,QUFBQUFBQUFB ".repeat(50);
        assert_eq!(find(text.as_bytes(), 7).len(), 7);
    }

    #[test]
    fn memchr_ci_finds_what_a_comparison_at_every_byte_finds() {
        fn naive(haystack: &[u8], needle: &[u8]) -> Option<usize> {
            haystack
                .windows(needle.len())
                .position(|w| w.eq_ignore_ascii_case(needle))
        }
        // A small alphabet, so matches, near misses and overlaps are frequent.
        let alphabet = b"dDaAtT:;bBsSeE64,x";
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..3000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let len = (seed % 40) as usize;
            let haystack: Vec<u8> = (0..len)
                .map(|i| alphabet[((seed >> (i % 50)) as usize + i * 7) % alphabet.len()])
                .collect();
            for needle in [&b"data:"[..], b";base64,", b"Ta", b"x"] {
                assert_eq!(
                    memchr_ci(&haystack, needle),
                    naive(&haystack, needle),
                    "{:?} in {:?}",
                    String::from_utf8_lossy(needle),
                    String::from_utf8_lossy(&haystack)
                );
            }
        }
    }
}
