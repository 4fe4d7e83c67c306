//! Openers for documents and mail formats that carry files: base64 `data:` URIs in HTML and
//! text, RTF embedded objects, OLE2 compound files (with packaged files and PowerPoint's
//! embedded objects), TNEF and Windows HTML Help.

use std::io::Cursor;

use super::{
    Budget, Finding, LimitHit, Member, Opened, PartPath, RatioBase, ReadEnd, member_name,
    read_bounded,
};
use crate::decompose::{chm, datauri, ole, rtf, tnef};

/// Opens the base64 `data:` URIs of an HTML or text part: each is a member `data-uri[N]`.
pub(in crate::decompose) fn open_data_uris(
    data: &[u8],
    path: &PartPath,
    budget: &mut Budget<'_>,
) -> Opened {
    let mut opened = Opened::default();
    let max = budget.limits.max_files as usize;
    for (n, uri) in datauri::find(data, max).into_iter().enumerate() {
        if opened.full(budget, path) {
            break;
        }
        let decoded = uri.decode();
        tracing::trace!(path = %path, media_type = %uri.media_type, size = decoded.len(), "data URI");
        if !opened.keep_stored(budget, path, format!("data-uri[{}]", n + 1), &decoded) {
            break;
        }
    }
    opened
}

/// Opens the objects embedded in an RTF document (`\objdata`). A packaged file becomes
/// `object[N]/NAME`; any other object's native data (often a whole OLE2 document, opened in turn)
/// becomes `object[N] CLASS`; data that is no OLE1 object is kept as `object[N]`.
pub(super) fn open_rtf(data: &[u8], path: &PartPath, budget: &mut Budget<'_>) -> Opened {
    let mut opened = Opened::default();
    let max = budget.limits.max_files as usize;
    for (n, object) in rtf::objects(data, max).into_iter().enumerate() {
        if opened.full(budget, path) {
            break;
        }
        let label = format!("object[{}]", n + 1);
        let (name, bytes) = match ole::ole1_object(&object) {
            Ok(parsed) if parsed.class.eq_ignore_ascii_case("Package") => {
                match ole::packaged_file(parsed.native) {
                    Ok(Some(file)) => (
                        format!(
                            "{label}/{}",
                            file.name.as_deref().unwrap_or("packaged file")
                        ),
                        file.data,
                    ),
                    Ok(None) => (format!("{label} Package"), parsed.native),
                    Err(e) => {
                        opened.damaged(&path.child(&label), e);
                        (format!("{label} Package"), parsed.native)
                    }
                }
            }
            Ok(parsed) => (
                format!("{label} {}", member_name(&parsed.class)),
                parsed.native,
            ),
            Err(e) => {
                // An embedded-object header (format 2) that breaks off is damage; other data
                // (a bare OLE2 document, a link) is simply kept as it is.
                if object.get(4..8) == Some(&[2, 0, 0, 0]) {
                    opened.damaged(&path.child(&label), e);
                }
                (label, &object[..])
            }
        };
        if !opened.keep_stored(budget, path, member_name(&name), bytes) {
            break;
        }
    }
    opened
}

/// Opens an OLE2 compound file (Word, Excel and PowerPoint 97–2003 documents, MSI installers):
/// every stream is a member under its storage path, a `\x01Ole10Native` stream's packaged file
/// follows it as `STREAM/NAME`, and PowerPoint's embedded objects (zlib-compressed `ExOleObjStg`
/// records) follow the "PowerPoint Document" stream as `PowerPoint Document/object[N]`.
pub(super) fn open_ole2(data: &[u8], path: &PartPath, budget: &mut Budget<'_>) -> Opened {
    let mut opened = Opened::default();
    let mut compound = match cfb::CompoundFile::open(Cursor::new(data)) {
        Ok(compound) => compound,
        Err(e) => {
            opened.damaged(path, e);
            return opened;
        }
    };
    let streams: Vec<std::path::PathBuf> = compound
        .walk()
        .filter(|entry| entry.is_stream())
        .map(|entry| entry.path().to_owned())
        .collect();
    for stream_path in streams {
        if opened.full(budget, path) {
            return opened;
        }
        let name = ole_stream_name(&stream_path);
        let member_path = path.child(&name);
        let mut stream = match compound.open_stream(&stream_path) {
            Ok(stream) => stream,
            Err(e) => {
                opened.damaged(&member_path, e);
                continue;
            }
        };
        // Streams are stored, not compressed: only the total-size limit applies.
        let (bytes, end) = read_bounded(&mut stream, None, budget);
        drop(stream);
        if !opened.record(end, path, &member_path) {
            if opened.halt.is_some() {
                return opened;
            }
            continue;
        }
        let leaf = stream_path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let bytes = bytes::Bytes::from(bytes);
        opened.members.push(Member {
            name: name.clone(),
            bytes: bytes.clone(),
        });
        if leaf == "\u{1}Ole10Native" {
            match ole::ole10_native(&bytes) {
                Ok(file) if !file.data.is_empty() => opened.members.push(Member {
                    name: format!(
                        "{name}/{}",
                        member_name(file.name.as_deref().unwrap_or("packaged file"))
                    ),
                    bytes: bytes.slice_ref(file.data),
                }),
                Ok(_) => {}
                Err(e) => opened.damaged(&member_path, e),
            }
        } else if leaf == "PowerPoint Document" {
            open_powerpoint_objects(&bytes, &name, path, budget, &mut opened);
            if opened.halt.is_some() {
                return opened;
            }
        }
    }
    opened
}

/// An OLE2 stream path as a member name: components joined by `/`, a leading control character
/// (`\x01Ole10Native`, `\x05SummaryInformation`) written as `[1]`, `[5]` as 7-Zip shows them, and
/// MSI's packed stream names (`Data1.cab`, `!File`) unpacked.
fn ole_stream_name(stream: &std::path::Path) -> String {
    let parts: Vec<String> = stream
        .iter()
        .map(|c| c.to_string_lossy())
        .filter(|c| c != "/")
        .map(|c| {
            let c = unpack_msi_name(&c);
            let mut chars = c.chars();
            match chars.next() {
                Some(first) if first.is_control() => {
                    format!("[{}]{}", u32::from(first), chars.as_str())
                }
                _ => c,
            }
        })
        .collect();
    member_name(&parts.join("/"))
}

/// MSI packs stream names into CJK code points: U+3800–U+47FF hold two characters of the
/// alphabet below, U+4800–U+483F one, and U+4840 marks a table (`!`).
fn unpack_msi_name(name: &str) -> String {
    const ALPHABET: &[u8; 64] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz._";
    let mut out = String::with_capacity(name.len());
    for ch in name.chars() {
        let code = u32::from(ch);
        match code {
            0x3800..0x4800 => {
                let value = code - 0x3800;
                out.push(char::from(ALPHABET[(value & 0x3f) as usize]));
                out.push(char::from(ALPHABET[((value >> 6) & 0x3f) as usize]));
            }
            0x4800..0x4840 => out.push(char::from(ALPHABET[(code - 0x4800) as usize])),
            0x4840 => out.push('!'),
            _ => out.push(ch),
        }
    }
    out
}

/// Adds the objects embedded in a "PowerPoint Document" stream (named `stream_name` in the
/// container at `path`): compressed ones are inflated under the ratio limit.
fn open_powerpoint_objects(
    stream: &[u8],
    stream_name: &str,
    path: &PartPath,
    budget: &mut Budget<'_>,
    opened: &mut Opened,
) {
    let max = budget.limits.max_files as usize;
    for (n, object) in ole::powerpoint_objects(stream, max).into_iter().enumerate() {
        if opened.full(budget, path) {
            return;
        }
        let name = format!("{stream_name}/object[{}]", n + 1);
        match object {
            ole::PowerPointObject::Stored(bytes) => {
                if !opened.keep_stored(budget, path, name, bytes) {
                    return;
                }
            }
            ole::PowerPointObject::Compressed {
                declared_size,
                zlib,
            } => {
                let member_path = path.child(&name);
                let mut reader = flate2::read::ZlibDecoder::new(zlib);
                let (bytes, end) = read_bounded(
                    &mut reader,
                    Some(RatioBase {
                        compressed: zlib.len() as u64,
                        already: 0,
                    }),
                    budget,
                );
                let complete = matches!(end, ReadEnd::Complete);
                if opened.record(end, path, &member_path) {
                    if complete && bytes.len() as u64 != u64::from(declared_size) {
                        tracing::debug!(path = %member_path, declared_size, size = bytes.len(), "PowerPoint object size differs from its header");
                    }
                    opened.members.push(Member {
                        name,
                        bytes: bytes.into(),
                    });
                }
                if opened.halt.is_some() {
                    return;
                }
            }
        }
    }
}

/// Opens a TNEF stream (`winmail.dat`): each attachment becomes a member under its own name
/// (`attachment[N]` when it has none).
pub(super) fn open_tnef(data: &[u8], path: &PartPath, budget: &mut Budget<'_>) -> Opened {
    let mut opened = Opened::default();
    let content = tnef::attachments(data, budget.limits.max_files as usize);
    if let Some(reason) = content.damage {
        opened.damaged(path, reason);
    }
    for (n, file) in content.files.into_iter().enumerate() {
        if opened.full(budget, path) {
            break;
        }
        let name = match file.name {
            Some(name) => member_name(&name.replace('\\', "/")),
            None => format!("attachment[{}]", n + 1),
        };
        if !opened.keep_stored(budget, path, name, file.data) {
            break;
        }
    }
    opened
}

/// Opens a Windows HTML Help file: every listed file (the internal `::DataSpace` streams aside)
/// becomes a member under its path; compressed ones are cut from the decompressed section 1.
pub(super) fn open_chm(data: &[u8], path: &PartPath, budget: &mut Budget<'_>) -> Opened {
    let mut opened = Opened::default();
    let limits = budget.limits;
    let directory = match chm::directory(data, limits.max_files as usize) {
        Ok(directory) => directory,
        Err(e) => {
            opened.damaged(path, e);
            return opened;
        }
    };
    let files: Vec<&chm::ChmEntry> = directory
        .entries
        .iter()
        .filter(|e| !e.name.starts_with("::") && !e.name.ends_with('/') && e.length > 0)
        .collect();
    // Section 1 is decompressed once, as far as the limits allow, if any file lives there.
    let mut section = None;
    if files.iter().any(|e| e.section == 1) {
        match directory.lzx_section(data) {
            Ok(lzx) if lzx.window as u64 > limits.max_decoder_memory => {
                opened.findings.push(Finding::LimitExceeded {
                    limit: LimitHit::DecoderMemory {
                        limit: limits.max_decoder_memory,
                    },
                    path: path.clone(),
                });
            }
            Ok(lzx) => {
                let compressed = lzx.content.len() as u64;
                let mut reader = lzx.reader();
                let (bytes, end) = read_bounded(
                    &mut reader,
                    Some(RatioBase {
                        compressed,
                        already: 0,
                    }),
                    budget,
                );
                match end {
                    // What decoded before the damage still yields the files it holds.
                    ReadEnd::Failed(reason) => opened.damaged(path, reason),
                    end => {
                        if !opened.record(end, path, path) {
                            return opened;
                        }
                    }
                }
                section = Some(bytes::Bytes::from(bytes));
            }
            Err(e) => opened.damaged(path, e),
        }
    }
    for entry in files {
        if opened.full(budget, path) {
            break;
        }
        let name = member_name(&entry.name);
        match entry.section {
            0 => match directory.stored(data, entry) {
                Some(bytes) => {
                    if !opened.keep_stored(budget, path, name, bytes) {
                        break;
                    }
                }
                None => opened.damaged(&path.child(&name), "CHM file lies outside the file"),
            },
            1 => {
                let Some(section) = &section else { continue };
                let range = usize::try_from(entry.offset)
                    .ok()
                    .zip(usize::try_from(entry.offset.saturating_add(entry.length)).ok())
                    .filter(|&(_, end)| end <= section.len());
                match range {
                    Some((start, end)) => opened.members.push(Member {
                        name,
                        bytes: section.slice(start..end),
                    }),
                    None => opened.damaged(
                        &path.child(&name),
                        "CHM file lies outside the decompressed section",
                    ),
                }
            }
            _ => {}
        }
    }
    opened
}
