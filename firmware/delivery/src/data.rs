//! Encoding a message for the DATA command, one chunk at a time.
//!
//! The spool holds the message with CRLF line endings; this encoder adds the transparency dot
//! (RFC 5321 §4.5.2), makes sure the last line ends in CRLF and appends the `.` line. It also turns
//! any stray bare CR or LF into CRLF, so that nothing we send can be read as a different end of data
//! by the receiver (the SMTP smuggling class of bugs) even if a malformed message reached the spool.

/// Streaming DATA encoder; its state carries over chunk boundaries.
#[derive(Debug)]
pub(crate) struct DotStuffer {
    /// The next byte starts a line (true at the very beginning of the message).
    at_line_start: bool,
    /// The previous byte was a CR whose LF has not been seen yet.
    pending_cr: bool,
}

impl DotStuffer {
    pub(crate) fn new() -> DotStuffer {
        DotStuffer {
            at_line_start: true,
            pending_cr: false,
        }
    }

    /// Appends the encoded form of `input` to `out`.
    pub(crate) fn encode(&mut self, input: &[u8], out: &mut Vec<u8>) {
        out.reserve(input.len() + input.len() / 64 + 4);
        let mut rest = input;
        while let Some((&byte, tail)) = rest.split_first() {
            // Inside a line (no CR waiting for its LF) every byte up to the next CR or LF is
            // copied as it is: only line starts and line ends need a look.
            if !self.at_line_start && !self.pending_cr {
                match memchr::memchr2(b'\r', b'\n', rest) {
                    Some(0) => {}
                    Some(n) => {
                        out.extend_from_slice(&rest[..n]);
                        rest = &rest[n..];
                        continue;
                    }
                    None => {
                        out.extend_from_slice(rest);
                        return;
                    }
                }
            }
            rest = tail;
            match byte {
                b'\n' => {
                    out.extend_from_slice(b"\r\n");
                    self.pending_cr = false;
                    self.at_line_start = true;
                }
                b'\r' => {
                    if self.pending_cr {
                        out.extend_from_slice(b"\r\n");
                    }
                    self.pending_cr = true;
                }
                _ => {
                    if self.pending_cr {
                        out.extend_from_slice(b"\r\n");
                        self.pending_cr = false;
                        self.at_line_start = true;
                    }
                    if self.at_line_start && byte == b'.' {
                        out.push(b'.');
                    }
                    out.push(byte);
                    self.at_line_start = false;
                }
            }
        }
    }

    /// Ends the message: completes the last line if needed and appends the terminating `.` line.
    pub(crate) fn finish(self, out: &mut Vec<u8>) {
        if self.pending_cr || !self.at_line_start {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode_whole(input: &[u8]) -> Vec<u8> {
        let mut stuffer = DotStuffer::new();
        let mut out = Vec::new();
        stuffer.encode(input, &mut out);
        stuffer.finish(&mut out);
        out
    }

    fn encode_byte_by_byte(input: &[u8]) -> Vec<u8> {
        let mut stuffer = DotStuffer::new();
        let mut out = Vec::new();
        for b in input {
            stuffer.encode(std::slice::from_ref(b), &mut out);
        }
        stuffer.finish(&mut out);
        out
    }

    #[test]
    fn leading_dots_are_doubled_at_every_line_start() {
        assert_eq!(
            encode_whole(b".a\r\nb.\r\n..c\r\n"),
            b"..a\r\nb.\r\n...c\r\n.\r\n"
        );
    }

    #[test]
    fn message_without_final_crlf_gets_one_before_the_dot_line() {
        assert_eq!(encode_whole(b"a\r\nlast"), b"a\r\nlast\r\n.\r\n");
    }

    #[test]
    fn message_ending_in_crlf_gets_no_extra_blank_line() {
        assert_eq!(encode_whole(b"a\r\n"), b"a\r\n.\r\n");
    }

    #[test]
    fn empty_message_is_just_the_dot_line() {
        assert_eq!(encode_whole(b""), b".\r\n");
    }

    #[test]
    fn bare_lf_and_bare_cr_become_crlf_so_no_smuggled_end_of_data_survives() {
        assert_eq!(
            encode_whole(b"a\n.\nb\r.\rc\r"),
            b"a\r\n..\r\nb\r\n..\r\nc\r\n.\r\n"
        );
    }

    #[test]
    fn chunk_boundaries_do_not_change_the_encoding() {
        let input = b".x\r\n\r\n.\r\n..\r\nbody\rline\nend.\r\n.";
        assert_eq!(encode_whole(input), encode_byte_by_byte(input));
    }

    /// The byte-at-a-time rules the fast path must agree with.
    fn reference(input: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut at_line_start = true;
        let mut pending_cr = false;
        for &byte in input {
            match byte {
                b'\n' => {
                    out.extend_from_slice(b"\r\n");
                    pending_cr = false;
                    at_line_start = true;
                }
                b'\r' => {
                    if pending_cr {
                        out.extend_from_slice(b"\r\n");
                    }
                    pending_cr = true;
                }
                _ => {
                    if pending_cr {
                        out.extend_from_slice(b"\r\n");
                        pending_cr = false;
                        at_line_start = true;
                    }
                    if at_line_start && byte == b'.' {
                        out.push(b'.');
                    }
                    out.push(byte);
                    at_line_start = false;
                }
            }
        }
        let mut stuffer = DotStuffer {
            at_line_start,
            pending_cr,
        };
        stuffer.encode(b"", &mut out);
        stuffer.finish(&mut out);
        out
    }

    #[test]
    fn random_inputs_in_random_chunks_encode_as_byte_by_byte() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let alphabet = b"ab.\r\n";
        for _ in 0..2000 {
            let len = rng.gen_range(0..60);
            let input: Vec<u8> = (0..len)
                .map(|_| alphabet[rng.gen_range(0..alphabet.len())])
                .collect();
            let mut stuffer = DotStuffer::new();
            let mut out = Vec::new();
            let mut rest = &input[..];
            while !rest.is_empty() {
                let n = rng.gen_range(1..=rest.len());
                stuffer.encode(&rest[..n], &mut out);
                rest = &rest[n..];
            }
            stuffer.finish(&mut out);
            assert_eq!(
                out,
                reference(&input),
                "input {:?}",
                String::from_utf8_lossy(&input)
            );
        }
    }
}
