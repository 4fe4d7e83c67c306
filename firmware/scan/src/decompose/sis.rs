//! Symbian installation files (`.sis`, EPOC releases 3 to 6; not the later SISX format): a
//! header of UIDs, counts and pointers, then file records naming each file and pointing at its
//! data, zlib-compressed unless the header says otherwise. Conditional records (options, if/else)
//! end the listing: the files before them are still read. Every pointer is checked against the file.

/// UID3 of every SIS file of these releases.
const UID3: u32 = 0x1000_0419;
/// UID2 of EPOC release 6 files (release 3 to 5 files use 0x1000006D).
const UID2_ER6: u32 = 0x1000_3a12;
const UID2_ER5: u32 = 0x1000_006d;

/// Header option: the files are stored, not compressed.
const OPTION_NOT_COMPRESSED: u16 = 0x0008;

/// A file of a SIS package.
#[derive(Debug)]
pub(super) struct SisFile<'a> {
    /// The destination name (`!:\system\apps\x.app`), `/`-separated, or the source name.
    pub name: String,
    /// The stored bytes: zlib when `compressed`.
    pub data: &'a [u8],
    pub compressed: bool,
}

/// The files of a SIS package, and why listing stopped early if it did.
#[derive(Debug)]
pub(super) struct SisContent<'a> {
    pub files: Vec<SisFile<'a>>,
    pub damage: Option<&'static str>,
}

fn u16_at(data: &[u8], at: usize) -> Option<u16> {
    data.get(at..at.checked_add(2)?)
        .map(|b| u16::from_le_bytes([b[0], b[1]]))
}

fn u32_at(data: &[u8], at: usize) -> Option<u32> {
    data.get(at..at.checked_add(4)?)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// Whether `bytes` starts like a SIS file of EPOC releases 3 to 6.
pub(crate) fn looks_like_sis(bytes: &[u8]) -> bool {
    matches!(u32_at(bytes, 4), Some(UID2_ER6 | UID2_ER5)) && u32_at(bytes, 8) == Some(UID3)
}

/// A UTF-16 (release 6) or 8-bit string at `pointer`, `len` bytes long.
fn string_at(data: &[u8], pointer: u32, len: u32, unicode: bool) -> Option<String> {
    let start = usize::try_from(pointer).ok()?;
    let raw = data.get(start..start.checked_add(usize::try_from(len).ok()?)?)?;
    Some(if unicode {
        let units: Vec<u16> = raw
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        String::from_utf16_lossy(&units)
    } else {
        String::from_utf8_lossy(raw).into_owned()
    })
}

/// Lists the files of a SIS package, at most `max` (the data of every language of a
/// multi-language file counts as one file each).
pub(super) fn files(data: &[u8], max: usize) -> SisContent<'_> {
    let mut content = SisContent {
        files: Vec::new(),
        damage: None,
    };
    const CUT: &str = "SIS header is cut short";
    let header = (|| {
        let er6 = u32_at(data, 4)? == UID2_ER6;
        let languages = usize::from(u16_at(data, 0x12)?).max(1);
        let count = usize::from(u16_at(data, 0x14)?);
        let options = u16_at(data, 0x24)?;
        let records = u32_at(data, 0x34)? as usize;
        Some((er6, languages, count, options, records))
    })();
    let Some((er6, languages, count, options, mut at)) = header else {
        content.damage = Some(CUT);
        return content;
    };
    if languages > 256 {
        content.damage = Some("SIS header names more languages than exist");
        return content;
    }
    let compressed = options & OPTION_NOT_COMPRESSED == 0;
    for _ in 0..count {
        if content.files.len() >= max {
            break;
        }
        let Some(kind) = u32_at(data, at) else {
            content.damage = Some("SIS file record is cut short");
            break;
        };
        // 0: a simple file, 1: one file per language; options and conditions end the listing.
        let copies = match kind {
            0 => 1,
            1 => languages,
            _ => break,
        };
        let record = (|| {
            let file_type = u32_at(data, at + 4)?;
            let source = (u32_at(data, at + 12)?, u32_at(data, at + 16)?);
            let destination = (u32_at(data, at + 20)?, u32_at(data, at + 24)?);
            let lengths = at + 28;
            let pointers = lengths + 4 * copies;
            let mut stored = Vec::with_capacity(copies);
            for n in 0..copies {
                let len = u32_at(data, lengths + 4 * n)? as usize;
                let pointer = u32_at(data, pointers + 4 * n)? as usize;
                stored.push(data.get(pointer..pointer.checked_add(len)?));
            }
            // Release 6 adds the uncompressed lengths and a MIME type (length, pointer).
            let next = pointers + 4 * copies + if er6 { 4 * copies + 8 } else { 0 };
            Some((file_type, source, destination, stored, next))
        })();
        let Some((file_type, source, destination, stored, next)) = record else {
            content.damage = Some("SIS file record is cut short");
            break;
        };
        at = next;
        // File type 4 ("null") reserves a name for a file the application creates: no data.
        if file_type == 4 {
            continue;
        }
        let name = string_at(data, destination.1, destination.0, er6)
            .filter(|n| !n.is_empty())
            .or_else(|| string_at(data, source.1, source.0, er6))
            .unwrap_or_default()
            .replace('\\', "/");
        for data in stored {
            match data {
                Some(data) if !data.is_empty() => content.files.push(SisFile {
                    name: name.clone(),
                    data,
                    compressed,
                }),
                Some(_) => {}
                None => content.damage = Some("SIS file data lies outside the file"),
            }
        }
    }
    content.files.truncate(max);
    content
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A release 6 SIS file with one stored (uncompressed) simple file record.
    pub(crate) fn sis_of(name: &str, data: &[u8]) -> Vec<u8> {
        let mut out = vec![0u8; 0x64];
        out[4..8].copy_from_slice(&UID2_ER6.to_le_bytes());
        out[8..12].copy_from_slice(&UID3.to_le_bytes());
        out[0x12..0x14].copy_from_slice(&1u16.to_le_bytes());
        out[0x14..0x16].copy_from_slice(&1u16.to_le_bytes());
        out[0x24..0x26].copy_from_slice(&OPTION_NOT_COMPRESSED.to_le_bytes());
        out[0x34..0x38].copy_from_slice(&0x64u32.to_le_bytes());
        let utf16: Vec<u8> = name.encode_utf16().flat_map(u16::to_le_bytes).collect();
        let record_len = 28 + 8 + 4 + 8;
        let name_at = 0x64 + record_len;
        let data_at = name_at + utf16.len();
        let mut record = Vec::new();
        for v in [
            0,
            0,
            0,
            utf16.len(),
            name_at,
            utf16.len(),
            name_at,
            data.len(),
            data_at,
            data.len(),
            0,
            0,
        ] {
            record.extend_from_slice(&(v as u32).to_le_bytes());
        }
        out.extend_from_slice(&record);
        out.extend_from_slice(&utf16);
        out.extend_from_slice(data);
        out
    }

    #[test]
    fn a_stored_file_is_listed_under_its_destination_name() {
        let sis = sis_of("!:\\system\\run.exe", b"MZ payload");
        assert!(looks_like_sis(&sis));
        let content = files(&sis, 10);
        assert_eq!(content.damage, None);
        assert_eq!(content.files.len(), 1);
        assert_eq!(content.files[0].name, "!:/system/run.exe");
        assert_eq!(content.files[0].data, b"MZ payload");
        assert!(!content.files[0].compressed);
    }

    #[test]
    fn a_truncated_package_is_damaged_not_a_panic() {
        let sis = sis_of("!:\\run.exe", b"MZ payload");
        for cut in 0..sis.len() {
            let content = files(&sis[..cut], 10);
            assert!(content.files.len() <= 1);
            if content.files.is_empty() {
                assert!(content.damage.is_some(), "{cut}");
            }
        }
    }
}
