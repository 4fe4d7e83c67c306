//! Openers for installers: what Windows executables carry (InstallShield stored files, cabinets
//! and MSI setups, NSIS data, archives embedded anywhere in the file) and Symbian packages.

use std::io::{Cursor, Read};
use std::panic::{AssertUnwindSafe, catch_unwind};

use super::{
    Budget, LimitHit, Member, Opened, PartPath, RatioBase, ReadEnd, member_name, read_bounded,
};
use crate::decompose::{installer, sis};
use crate::filetype::FileType;
use crate::limits::Limits;

/// Embedded archives taken from one executable at most: installers hold one or two.
const MAX_EMBEDDED: usize = 4;

/// Whether opening `data` as `kind` can yield anything. Only executables are asked: most have
/// no payload, and one at the depth limit must not count as an unopened container.
pub(in crate::decompose) fn worth_opening(kind: FileType, data: &[u8]) -> bool {
    if kind != FileType::WindowsExecutable {
        return true;
    }
    let overlay = installer::overlay_start(data).map(|at| &data[at..]);
    overlay.is_some_and(|o| {
        installer::installshield_stored_files(o, 1).is_some()
            || installer::installshield_setup(o, 1).is_some()
            || installer::nsis(o).is_some()
    }) || !installer::embedded_archives(data, 2, 1).is_empty()
}

/// Opens what a Windows executable carries: InstallShield stored files (and the files of the
/// InstallShield cabinets among them), NSIS data or an InstallShield MSI setup's files in its
/// overlay, and archives embedded elsewhere in it as `embedded[N].EXT`. Candidates that do not
/// open as their format are skipped without a finding: executables are full of bytes that look
/// like signatures.
pub(super) fn open_executable(data: &[u8], path: &PartPath, budget: &mut Budget<'_>) -> Opened {
    let mut opened = Opened::default();
    let max = budget.limits.max_files as usize;
    // Archive signatures are looked for where no installer data was found.
    let mut search_end = data.len();
    if let Some(at) = installer::overlay_start(data) {
        let overlay = &data[at..];
        if let Some(files) = installer::installshield_stored_files(overlay, max) {
            search_end = at;
            open_installshield_stored(&files, path, budget, &mut opened);
        } else if let Some(nsis) = installer::nsis(overlay) {
            search_end = at;
            open_nsis(&nsis, path, budget, &mut opened);
        } else if let Some((files, damage)) = installer::installshield_setup(overlay, max) {
            search_end = at;
            if let Some(reason) = damage {
                opened.damaged(path, reason);
            }
            open_installshield_setup(&files, path, budget, &mut opened);
        }
    }
    if opened.halt.is_some() {
        return opened;
    }
    let mut kept = 0;
    for embedded in installer::embedded_archives(&data[..search_end], 2, MAX_EMBEDDED) {
        if opened.full(budget, path) {
            break;
        }
        let bytes = &data[embedded.offset..embedded.offset + embedded.len];
        if !opens_as(embedded.kind, bytes, budget.limits) {
            tracing::debug!(path = %path, offset = embedded.offset, kind = ?embedded.kind, "embedded archive signature without an archive");
            continue;
        }
        kept += 1;
        let name = format!("embedded[{kept}].{}", embedded.kind.extension());
        if !opened.keep_stored(budget, path, name, bytes) {
            break;
        }
    }
    opened
}

/// Adds the files of an InstallShield MSI setup, de-obfuscated and inflated under the ratio limit.
fn open_installshield_setup(
    files: &[installer::SetupFile<'_>],
    path: &PartPath,
    budget: &mut Budget<'_>,
    opened: &mut Opened,
) {
    for file in files {
        if opened.full(budget, path) {
            return;
        }
        let name = member_name(&file.name);
        let mut reader = flate2::read::ZlibDecoder::new(file.deobfuscated());
        if !opened.keep_decoded(budget, path, name, &mut reader, file.stored.len() as u64) {
            return;
        }
    }
}

/// Whether `bytes` opens as an archive of `kind` (its directory reads), without extracting anything.
fn opens_as(kind: installer::EmbeddedKind, bytes: &[u8], limits: &Limits) -> bool {
    use installer::EmbeddedKind;
    let opened = catch_unwind(AssertUnwindSafe(|| match kind {
        EmbeddedKind::Cab => cab::Cabinet::new(Cursor::new(bytes)).is_ok(),
        EmbeddedKind::Ole2 => cfb::CompoundFile::open(Cursor::new(bytes)).is_ok(),
        EmbeddedKind::Zip => zip::ZipArchive::new(Cursor::new(bytes)).is_ok(),
        EmbeddedKind::SevenZip => {
            let memory_kb = usize::try_from(limits.max_decoder_memory / 1024).unwrap_or(usize::MAX);
            sevenz_rust2::ArchiveReader::new_with_memory_limit(
                Cursor::new(bytes),
                sevenz_rust2::Password::empty(),
                memory_kb,
            )
            .is_ok()
        }
    }));
    opened.unwrap_or(false)
}

/// Adds InstallShield stored files, then the files of the InstallShield cabinets among them
/// (`dataN.hdr` describing `dataN.cab` volumes) as `HEADER/NAME`.
fn open_installshield_stored(
    files: &[installer::StoredFile<'_>],
    path: &PartPath,
    budget: &mut Budget<'_>,
    opened: &mut Opened,
) {
    for file in files {
        if opened.full(budget, path)
            || !opened.keep_stored(budget, path, member_name(&file.name), file.data)
        {
            return;
        }
    }
    let lower_leaf = |name: &str| {
        name.rsplit('/')
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase()
    };
    for header in files.iter().filter(|f| {
        lower_leaf(&f.name).ends_with(".hdr") && f.data.starts_with(installer::CABINET_MAGIC)
    }) {
        let leaf = lower_leaf(&header.name);
        let prefix = leaf
            .trim_end_matches(".hdr")
            .trim_end_matches(|c: char| c.is_ascii_digit())
            .to_owned();
        let volume = |n: u16| {
            let wanted = format!("{prefix}{n}.cab");
            files
                .iter()
                .find(|f| lower_leaf(&f.name) == wanted)
                .map(|f| f.data)
        };
        let cabinet = match installer::installshield_cabinet(
            header.data,
            volume,
            budget.limits.max_files as usize,
        ) {
            Ok(cabinet) => cabinet,
            Err(e) => {
                tracing::debug!(path = %path, header = %header.name, reason = %e, "InstallShield cabinet not read");
                continue;
            }
        };
        for file in cabinet {
            if opened.full(budget, path) {
                return;
            }
            let name = member_name(&format!("{}/{}", header.name, file.name.replace('\\', "/")));
            if !file.compressed {
                if !opened.keep_stored(budget, path, name, file.data) {
                    return;
                }
                continue;
            }
            let member_path = path.child(&name);
            let mut reader = installer::CabinetChunks::new(file.data);
            let (bytes, end) = read_bounded(
                &mut reader,
                Some(RatioBase {
                    compressed: file.data.len() as u64,
                    already: 0,
                }),
                budget,
            );
            if matches!(end, ReadEnd::Complete) && bytes.len() as u64 != file.size {
                opened.damaged(
                    &member_path,
                    format!("{} bytes extracted, {} declared", bytes.len(), file.size),
                );
            }
            if opened.record(end, path, &member_path) {
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

/// A reader that decompresses one NSIS block or solid stream; or how it could not start (a
/// dictionary over the memory limit, damaged properties).
fn nsis_reader<'a>(
    data: &'a [u8],
    compression: installer::NsisCompression,
    limits: &Limits,
) -> Result<Box<dyn Read + 'a>, ReadEnd> {
    use installer::NsisCompression;
    Ok(match compression {
        NsisCompression::Stored => Box::new(data),
        NsisCompression::Deflate => Box::new(flate2::read::DeflateDecoder::new(data)),
        NsisCompression::Lzma => {
            let props = data[0];
            let dict_size = u32::from_le_bytes([data[1], data[2], data[3], data[4]]);
            let need_kb = lzma_rust2::lzma_get_memory_usage_by_props(dict_size, props)
                .map_err(|e| ReadEnd::Failed(e.to_string()))?;
            if u64::from(need_kb) * 1024 > limits.max_decoder_memory {
                return Err(ReadEnd::Limit(LimitHit::DecoderMemory {
                    limit: limits.max_decoder_memory,
                }));
            }
            Box::new(
                lzma_rust2::LzmaReader::new_with_props(
                    &data[5..],
                    u64::MAX,
                    props,
                    dict_size,
                    None,
                )
                .map_err(|e| ReadEnd::Failed(e.to_string()))?,
            )
        }
    })
}

/// Decompresses one NSIS block or solid stream under the limits. A stream that breaks off
/// still yields what was decoded before the damage (scanners see that much) and a finding.
fn nsis_inflate(
    data: &[u8],
    compression: installer::NsisCompression,
    container: &PartPath,
    member_path: &PartPath,
    budget: &mut Budget<'_>,
    opened: &mut Opened,
) -> Option<Vec<u8>> {
    let mut reader = match nsis_reader(data, compression, budget.limits) {
        Ok(reader) => reader,
        Err(end) => {
            opened.record(end, container, member_path);
            return None;
        }
    };
    let (bytes, end) = read_bounded(
        &mut reader,
        Some(RatioBase {
            compressed: data.len() as u64,
            already: 0,
        }),
        budget,
    );
    match end {
        ReadEnd::Failed(reason) => {
            opened.damaged(member_path, reason);
            (!bytes.is_empty()).then_some(bytes)
        }
        end => opened.record(end, container, member_path).then_some(bytes),
    }
}

/// Opens an NSIS installer's data: its script header as `NSIS header` and each file as
/// `NSIS file[N]` (NSIS keeps file names only in the compiled script, which is not interpreted).
fn open_nsis(
    nsis: &installer::Nsis<'_>,
    path: &PartPath,
    budget: &mut Budget<'_>,
    opened: &mut Opened,
) {
    let name_of = |n: usize| {
        if n == 0 {
            "NSIS header".to_owned()
        } else {
            format!("NSIS file[{n}]")
        }
    };
    // Non-solid: each block decompresses on its own.
    if let Some(blocks) = nsis.blocks() {
        for (n, (block, compression)) in blocks.into_iter().enumerate() {
            if opened.full(budget, path) {
                return;
            }
            let name = name_of(n);
            let member_path = path.child(&name);
            if let Some(bytes) =
                nsis_inflate(block, compression, path, &member_path, budget, opened)
            {
                opened.members.push(Member {
                    name,
                    bytes: bytes.into(),
                });
            }
            if opened.halt.is_some() {
                return;
            }
        }
        return;
    }
    // Solid: one stream holding the header and every file, each behind its length.
    let Some(bytes) = nsis_inflate(
        nsis.data,
        nsis.solid_compression(),
        path,
        path,
        budget,
        opened,
    ) else {
        return;
    };
    let bytes = bytes::Bytes::from(bytes);
    let parts = installer::nsis_solid_parts(&bytes, budget.limits.max_files as usize);
    if parts
        .first()
        .is_none_or(|h| h.len() as u64 != u64::from(nsis.header_len))
    {
        opened.damaged(path, "NSIS data is neither blocks nor a solid stream");
        return;
    }
    for (n, part) in parts.into_iter().enumerate() {
        if opened.full(budget, path) {
            return;
        }
        opened.members.push(Member {
            name: name_of(n),
            bytes: bytes.slice_ref(part),
        });
    }
}

/// Opens a Symbian installation file: each file (each language's copy) under its destination name.
pub(super) fn open_sis(data: &[u8], path: &PartPath, budget: &mut Budget<'_>) -> Opened {
    let mut opened = Opened::default();
    let content = sis::files(data, budget.limits.max_files as usize);
    if let Some(reason) = content.damage {
        opened.damaged(path, reason);
    }
    for file in content.files {
        if opened.full(budget, path) {
            break;
        }
        let name = member_name(&file.name);
        if !file.compressed {
            if !opened.keep_stored(budget, path, name, file.data) {
                break;
            }
            continue;
        }
        let mut reader = flate2::read::ZlibDecoder::new(file.data);
        if !opened.keep_decoded(budget, path, name, &mut reader, file.data.len() as u64) {
            break;
        }
    }
    opened
}
