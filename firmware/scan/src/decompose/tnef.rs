//! TNEF (`winmail.dat`, `application/ms-tnef`): the attachments Outlook wraps for rich-text mail.
//! A TNEF stream is a signature, a key, then attributes (level, id, length, data, checksum); each
//! attachment starts with `attRendData` and carries its bytes in `attAttachData` and its name in
//! `attAttachTitle` or, when long, `attAttachTransportFilename`. Lengths are untrusted: an
//! attribute that runs past the end stops the parse with what was found so far.

/// The first four bytes of every TNEF stream (0x223E9F78, little-endian).
pub(crate) const MAGIC: &[u8] = &[0x78, 0x9f, 0x3e, 0x22];

/// `attRendData`: starts the attributes of a new attachment.
const ATT_REND_DATA: u32 = 0x0006_9002;
/// `attAttachData`: the attachment's bytes.
const ATT_ATTACH_DATA: u32 = 0x0006_800f;
/// `attAttachTitle`: the attachment's short (8.3) name.
const ATT_ATTACH_TITLE: u32 = 0x0001_8010;
/// `attAttachTransportFilename`: the attachment's long name.
const ATT_ATTACH_TRANSPORT_FILENAME: u32 = 0x0006_9001;

/// Attribute level of attachment attributes (message attributes are level 1).
const LEVEL_ATTACHMENT: u8 = 2;

/// One attachment taken out of a TNEF stream.
#[derive(Debug)]
pub(super) struct TnefFile<'a> {
    /// Its long name if given, else its title; None when neither is.
    pub name: Option<String>,
    /// Its bytes.
    pub data: &'a [u8],
}

/// What a TNEF stream held, and whether it was read to its end.
#[derive(Debug)]
pub(super) struct TnefContent<'a> {
    /// Attachments with data, in order, at most the `max` asked for.
    pub files: Vec<TnefFile<'a>>,
    /// Why reading stopped before the end of the stream, if it did.
    pub damage: Option<&'static str>,
}

/// Whether `bytes` starts like a TNEF stream.
pub(crate) fn looks_like_tnef(bytes: &[u8]) -> bool {
    bytes.len() >= 6 && bytes.starts_with(MAGIC)
}

/// Reads the attachments of a TNEF stream, at most `max` of them.
pub(super) fn attachments(data: &[u8], max: usize) -> TnefContent<'_> {
    let mut content = TnefContent {
        files: Vec::new(),
        damage: None,
    };
    if !looks_like_tnef(data) {
        content.damage = Some("no TNEF signature");
        return content;
    }
    // The attachment being read: its name(s) and data so far.
    let mut current: Option<Pending<'_>> = None;
    let mut at = 6;
    while at < data.len() {
        // Writers may pad the stream; a tail too short for an attribute header holds no attribute.
        let Some(header) = data.get(at..at + 9) else {
            break;
        };
        let level = header[0];
        let id = u32::from_le_bytes([header[1], header[2], header[3], header[4]]);
        let len = u32::from_le_bytes([header[5], header[6], header[7], header[8]]) as usize;
        let start = at + 9;
        let Some(value) = start.checked_add(len).and_then(|end| data.get(start..end)) else {
            content.damage = Some("TNEF attribute is longer than the stream");
            break;
        };
        // The value is followed by a 16-bit checksum, which is not checked: a wrong one changes
        // nothing about what the attachment holds.
        at = start + len + 2;
        if level != LEVEL_ATTACHMENT {
            continue;
        }
        match id {
            ATT_REND_DATA => {
                if let Some(done) = current.take() {
                    done.finish(&mut content.files);
                }
                current = Some(Pending::default());
            }
            ATT_ATTACH_DATA => current.get_or_insert_with(Pending::default).data = Some(value),
            ATT_ATTACH_TITLE => current.get_or_insert_with(Pending::default).title = Some(value),
            ATT_ATTACH_TRANSPORT_FILENAME => {
                current.get_or_insert_with(Pending::default).long_name = Some(value);
            }
            _ => {}
        }
        if content.files.len() >= max {
            return content;
        }
    }
    if let Some(done) = current.take() {
        done.finish(&mut content.files);
    }
    content.files.truncate(max);
    content
}

/// The attributes of one attachment seen so far.
#[derive(Default)]
struct Pending<'a> {
    data: Option<&'a [u8]>,
    title: Option<&'a [u8]>,
    long_name: Option<&'a [u8]>,
}

impl<'a> Pending<'a> {
    fn finish(self, files: &mut Vec<TnefFile<'a>>) {
        let Some(data) = self.data else { return };
        let name = [self.long_name, self.title]
            .into_iter()
            .flatten()
            .map(|raw| {
                let raw = raw.split(|&b| b == 0).next().unwrap_or_default();
                String::from_utf8_lossy(raw).trim().to_owned()
            })
            .find(|name| !name.is_empty());
        files.push(TnefFile { name, data });
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn attribute(out: &mut Vec<u8>, level: u8, id: u32, value: &[u8]) {
        out.push(level);
        out.extend_from_slice(&id.to_le_bytes());
        out.extend_from_slice(&(value.len() as u32).to_le_bytes());
        out.extend_from_slice(value);
        let checksum = value
            .iter()
            .fold(0u16, |s, &b| s.wrapping_add(u16::from(b)));
        out.extend_from_slice(&checksum.to_le_bytes());
    }

    /// A TNEF stream with a message subject and the given attachments (name, bytes).
    pub(crate) fn tnef_of(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&0x01afu16.to_le_bytes());
        attribute(&mut out, 1, 0x0001_8004, b"Subject\0");
        for (name, data) in files {
            attribute(&mut out, 2, ATT_REND_DATA, &[1, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
            attribute(&mut out, 2, ATT_ATTACH_DATA, data);
            attribute(
                &mut out,
                2,
                ATT_ATTACH_TITLE,
                format!("{name}\0").as_bytes(),
            );
        }
        out
    }

    #[test]
    fn attachments_come_out_with_their_titles() {
        let tnef = tnef_of(&[("a.exe", b"MZ one"), ("b.txt", b"two")]);
        let content = attachments(&tnef, 10);
        assert_eq!(content.damage, None);
        let got: Vec<(Option<&str>, &[u8])> = content
            .files
            .iter()
            .map(|f| (f.name.as_deref(), f.data))
            .collect();
        assert_eq!(
            got,
            [
                (Some("a.exe"), &b"MZ one"[..]),
                (Some("b.txt"), &b"two"[..])
            ]
        );
        assert_eq!(attachments(&tnef, 1).files.len(), 1);
    }

    #[test]
    fn a_truncated_stream_keeps_what_was_complete_and_says_it_is_damaged() {
        let tnef = tnef_of(&[("a.exe", b"MZ one"), ("b.txt", b"two")]);
        for cut in 6..tnef.len() {
            let content = attachments(&tnef[..cut], 10);
            assert!(content.files.len() <= 2);
            for file in &content.files {
                assert!(file.data == b"MZ one" || file.data == b"two");
            }
        }
        // Cut inside the second attachment's title: its data is complete and kept, unnamed.
        let cut = attachments(&tnef[..tnef.len() - 8], 10);
        assert!(cut.damage.is_some());
        assert_eq!(cut.files.len(), 2);
        assert_eq!(cut.files[1].name, None);
        assert!(attachments(b"not tnef", 10).damage.is_some());
    }
}
