//! Decoding of message content as it arrives, for both DATA (dot-terminated) and BDAT (counted chunks).
//!
//! The decoder is the single place that decides where a message ends, so it is also where SMTP smuggling is
//! stopped: the only end of data is `CRLF . CRLF`, and any CR not followed by LF or LF not preceded by CR is
//! reported as [`Scan::BareLineBreak`] instead of being guessed at.

/// How the message content is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// DATA: ends at `CRLF . CRLF`, leading dots are unstuffed (RFC 5321 §4.5.2).
    DotTerminated,
    /// BDAT: the length is given by the command; dots have no special meaning (RFC 3030).
    Chunked,
}

/// What the decoder found in the bytes it was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scan {
    /// All input was consumed and the message goes on.
    NeedMore,
    /// The `CRLF . CRLF` terminator was consumed (DATA only).
    EndOfData,
    /// A CR not followed by LF or an LF not preceded by CR: the session must be closed.
    BareLineBreak,
}

/// Where in a line the decoder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LinePosition {
    /// At the start of a line (also the start of the message).
    LineStart,
    /// A dot at the start of a line was seen and dropped; the next byte decides between unstuffing and the end.
    Dot,
    /// A line consisting of a dot and CR: only LF may follow, and it ends the message.
    DotCr,
    /// Inside a line.
    InLine,
    /// A CR was seen; only LF may follow.
    Cr,
}

/// Incremental decoder: feed it bytes as they are read, it appends the message bytes to an output buffer.
#[derive(Debug)]
pub(crate) struct BodyDecoder {
    framing: Framing,
    position: LinePosition,
    line_length: usize,
    max_line_length: usize,
    overlong: bool,
}

impl BodyDecoder {
    pub(crate) fn new(framing: Framing, max_line_length: usize) -> BodyDecoder {
        BodyDecoder {
            framing,
            position: LinePosition::LineStart,
            line_length: 0,
            max_line_length,
            overlong: false,
        }
    }

    /// Some line (counted in received bytes including CRLF) was longer than the limit.
    pub(crate) fn overlong(&self) -> bool {
        self.overlong
    }

    fn count(&mut self, bytes: usize) {
        self.line_length += bytes;
        if self.line_length > self.max_line_length {
            self.overlong = true;
        }
    }

    /// Decodes `input`, appending message bytes to `out`. Returns how many input bytes were consumed (everything,
    /// unless the message ended or a bare line break was found) and what was found.
    pub(crate) fn decode(&mut self, input: &[u8], out: &mut Vec<u8>) -> (usize, Scan) {
        // The message is about as long as its input: grow the output once, not line by line.
        out.reserve(input.len());
        let mut i = 0;
        while i < input.len() {
            let byte = input[i];
            match self.position {
                LinePosition::LineStart | LinePosition::InLine => {
                    if self.position == LinePosition::LineStart
                        && self.framing == Framing::DotTerminated
                        && byte == b'.'
                    {
                        self.count(1);
                        self.position = LinePosition::Dot;
                        i += 1;
                        continue;
                    }
                    let run = memchr::memchr2(b'\r', b'\n', &input[i..]).unwrap_or(input.len() - i);
                    if input.get(i + run..i + run + 2) == Some(b"\r\n") {
                        // The common case: the rest of the line and its CRLF, in one step.
                        out.extend_from_slice(&input[i..i + run + 2]);
                        self.count(run + 2);
                        self.line_length = 0;
                        self.position = LinePosition::LineStart;
                        i += run + 2;
                    } else if run > 0 {
                        out.extend_from_slice(&input[i..i + run]);
                        self.count(run);
                        self.position = LinePosition::InLine;
                        i += run;
                    } else if byte == b'\r' {
                        self.count(1);
                        self.position = LinePosition::Cr;
                        i += 1;
                    } else {
                        return (i, Scan::BareLineBreak);
                    }
                }
                LinePosition::Dot => match byte {
                    b'\r' => {
                        self.count(1);
                        self.position = LinePosition::DotCr;
                        i += 1;
                    }
                    b'\n' => return (i, Scan::BareLineBreak),
                    // The stuffed dot is dropped; the byte after it is ordinary line content.
                    _ => self.position = LinePosition::InLine,
                },
                LinePosition::DotCr => {
                    return if byte == b'\n' {
                        (i + 1, Scan::EndOfData)
                    } else {
                        (i, Scan::BareLineBreak)
                    };
                }
                LinePosition::Cr => {
                    if byte != b'\n' {
                        return (i, Scan::BareLineBreak);
                    }
                    out.extend_from_slice(b"\r\n");
                    self.count(1);
                    self.line_length = 0;
                    self.position = LinePosition::LineStart;
                    i += 1;
                }
            }
        }
        (input.len(), Scan::NeedMore)
    }

    /// Ends chunked content after the LAST chunk. A trailing CR is a bare CR (`Err`); an unterminated last line
    /// gets its CRLF appended so the stored message always ends with a line break and can be relayed with DATA.
    pub(crate) fn finish_chunked(&mut self, out: &mut Vec<u8>) -> Result<(), Scan> {
        match self.position {
            LinePosition::Cr | LinePosition::Dot | LinePosition::DotCr => Err(Scan::BareLineBreak),
            LinePosition::InLine => {
                out.extend_from_slice(b"\r\n");
                self.position = LinePosition::LineStart;
                Ok(())
            }
            LinePosition::LineStart => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(framing: Framing, input: &[u8]) -> (Vec<u8>, usize, Scan) {
        let mut decoder = BodyDecoder::new(framing, 1000);
        let mut out = Vec::new();
        let (used, scan) = decoder.decode(input, &mut out);
        (out, used, scan)
    }

    #[test]
    fn dot_terminated_body_ends_only_at_crlf_dot_crlf() {
        let (out, used, scan) = decode_all(
            Framing::DotTerminated,
            b"Subject: x\r\n\r\nhello\r\n.\r\nQUIT\r\n",
        );
        assert_eq!(out, b"Subject: x\r\n\r\nhello\r\n");
        assert_eq!(scan, Scan::EndOfData);
        assert_eq!(used, 24);
    }

    #[test]
    fn empty_body_ends_at_first_dot_line() {
        let (out, used, scan) = decode_all(Framing::DotTerminated, b".\r\n");
        assert!(out.is_empty());
        assert_eq!((used, scan), (3, Scan::EndOfData));
    }

    #[test]
    fn leading_dots_are_unstuffed() {
        let (out, _, scan) = decode_all(Framing::DotTerminated, b"..hidden\r\n...\r\n.x\r\n.\r\n");
        assert_eq!(out, b".hidden\r\n..\r\nx\r\n");
        assert_eq!(scan, Scan::EndOfData);
    }

    #[test]
    fn every_smuggling_variant_is_a_bare_line_break() {
        for variant in [
            &b"a\n.\nMAIL"[..],
            b"a\n.\r\nMAIL",
            b"a\r.\rMAIL",
            b"a\r\n.\rMAIL",
            b"a\r\n.\nMAIL",
            b"a\n.\rMAIL",
            b"a\r\n.\r\0\nMAIL",
            b"a\r\0\n.\r\n",
            b"a\nb\r\n.\r\n",
            b"\n",
            b"\r\r\n",
        ] {
            let (_, _, scan) = decode_all(Framing::DotTerminated, variant);
            assert_eq!(
                scan,
                Scan::BareLineBreak,
                "{:?}",
                String::from_utf8_lossy(variant)
            );
        }
    }

    #[test]
    fn nul_before_dot_does_not_end_data() {
        let (out, _, scan) = decode_all(Framing::DotTerminated, b"a\r\n\0.\r\nMAIL FROM:<x@y>\r\n");
        assert_eq!(scan, Scan::NeedMore);
        assert_eq!(out, b"a\r\n\0.\r\nMAIL FROM:<x@y>\r\n");
    }

    #[test]
    fn terminator_split_across_reads_is_found() {
        let mut decoder = BodyDecoder::new(Framing::DotTerminated, 1000);
        let mut out = Vec::new();
        let input = b"line\r\n.\r\n";
        for (n, byte) in input.iter().enumerate() {
            let (used, scan) = decoder.decode(std::slice::from_ref(byte), &mut out);
            assert_eq!(used, 1);
            let expected = if n + 1 == input.len() {
                Scan::EndOfData
            } else {
                Scan::NeedMore
            };
            assert_eq!(scan, expected);
        }
        assert_eq!(out, b"line\r\n");
    }

    #[test]
    fn chunked_content_keeps_dots_and_rejects_bare_lf() {
        let (out, used, scan) = decode_all(Framing::Chunked, b".\r\n..x\r\n");
        assert_eq!(
            (out.as_slice(), used, scan),
            (&b".\r\n..x\r\n"[..], 8, Scan::NeedMore)
        );
        assert_eq!(decode_all(Framing::Chunked, b"a\nb").2, Scan::BareLineBreak);
    }

    #[test]
    fn chunked_crlf_may_span_chunks_but_a_final_cr_is_bare() {
        let mut decoder = BodyDecoder::new(Framing::Chunked, 1000);
        let mut out = Vec::new();
        assert_eq!(decoder.decode(b"a\r", &mut out).1, Scan::NeedMore);
        assert_eq!(decoder.decode(b"\nb\r", &mut out).1, Scan::NeedMore);
        assert_eq!(decoder.finish_chunked(&mut out), Err(Scan::BareLineBreak));
    }

    #[test]
    fn chunked_unterminated_last_line_gets_crlf() {
        let mut decoder = BodyDecoder::new(Framing::Chunked, 1000);
        let mut out = Vec::new();
        decoder.decode(b"last line", &mut out);
        decoder.finish_chunked(&mut out).unwrap();
        assert_eq!(out, b"last line\r\n");
    }

    #[test]
    fn any_split_of_the_input_decodes_the_same() {
        let input: &[u8] =
            b"Subject: x\r\n\r\n..stuffed\r\nplain line\r\n.\r\n\r\nlong line here\r\n.\r\n";
        let whole = decode_all(Framing::DotTerminated, input);
        assert_eq!(
            whole.0,
            b"Subject: x\r\n\r\n.stuffed\r\nplain line\r\n".to_vec()
        );
        for at in 0..=input.len() {
            let mut decoder = BodyDecoder::new(Framing::DotTerminated, 12);
            let mut out = Vec::new();
            let (used, scan) = decoder.decode(&input[..at], &mut out);
            let (used, scan) = if scan == Scan::NeedMore {
                let (more, scan) = decoder.decode(&input[at..], &mut out);
                (used + more, scan)
            } else {
                (used, scan)
            };
            assert_eq!(
                (&out, used, scan),
                (&whole.0, whole.1, whole.2),
                "split at {at}"
            );
            assert!(!decoder.overlong(), "split at {at}");
        }
        // Byte by byte, a line one byte over the limit (CRLF included) is flagged.
        let mut decoder = BodyDecoder::new(Framing::DotTerminated, 12);
        let mut out = Vec::new();
        for byte in b"0123456789a\r\n" {
            decoder.decode(std::slice::from_ref(byte), &mut out);
        }
        assert!(decoder.overlong());
        assert_eq!(out, b"0123456789a\r\n");
    }

    #[test]
    fn line_longer_than_limit_is_flagged_including_crlf() {
        let mut decoder = BodyDecoder::new(Framing::DotTerminated, 6);
        let mut out = Vec::new();
        decoder.decode(b"abcd\r\n", &mut out);
        assert!(!decoder.overlong());
        decoder.decode(b"abcde\r\n", &mut out);
        assert!(decoder.overlong());
    }
}
