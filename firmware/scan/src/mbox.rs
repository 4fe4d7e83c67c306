//! Mailbox files (mbox): many messages in one file, each starting with a `From ` line.
//!
//! Admins scan saved mailboxes with `portcullis scan`; the MIME parser reads only the first
//! message of such a file, so the file is cut into its messages first.

/// The messages of an mbox file (each without its `From ` separator line), or `None` when
/// `data` does not start like one. A new message starts at a `From ` line that follows an empty
/// line (or starts the file), as in the mboxo and mboxrd formats; `>From ` quoting in bodies is
/// left as it is (it does not matter for scanning).
pub fn split_mbox(data: &[u8]) -> Option<Vec<&[u8]>> {
    if !data.starts_with(b"From ") {
        return None;
    }
    let mut messages = Vec::new();
    let mut start: Option<usize> = None;
    let mut offset = 0;
    let mut previous_blank = true;
    while offset < data.len() {
        let end = data[offset..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(data.len(), |i| offset + i + 1);
        let line = &data[offset..end];
        if previous_blank && line.starts_with(b"From ") {
            if let Some(s) = start {
                messages.push(&data[s..offset]);
            }
            start = Some(end);
        }
        previous_blank = matches!(line, b"\n" | b"\r\n");
        offset = end;
    }
    if let Some(s) = start {
        messages.push(&data[s..]);
    }
    Some(messages)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_mbox_is_cut_at_from_lines_after_blank_lines_only() {
        let mbox = b"From a@example.org Mon Jan  1 00:00:00 2024\nSubject: one\n\nbody\nFrom the start, not a separator\n\nFrom b@example.org Mon Jan  1 00:00:01 2024\nSubject: two\n\nsecond\n";
        let messages = split_mbox(mbox).unwrap();
        assert_eq!(messages.len(), 2);
        assert_eq!(
            messages[0],
            b"Subject: one\n\nbody\nFrom the start, not a separator\n\n"
        );
        assert_eq!(messages[1], b"Subject: two\n\nsecond\n");
    }

    #[test]
    fn a_plain_message_is_no_mbox() {
        assert!(split_mbox(b"Subject: x\r\n\r\nFrom y\r\n").is_none());
    }
}
