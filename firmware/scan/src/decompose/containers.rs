//! Opening containers with bounded, streaming extraction: a member is never inflated past what the limits allow.

use std::io::{Cursor, Read};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Instant;

use crate::filetype::FileType;
use crate::finding::{Finding, LimitHit};
use crate::limits::Limits;
use crate::part::PartPath;

use super::binhex::BinHexReader;
use super::szdd::SzddReader;
use super::{arj, cpio, pdf, szdd};

mod documents;
mod installers;

pub(super) use documents::open_data_uris;
pub(super) use installers::worth_opening;

/// The message-wide allowance shared by every container of one message.
pub(super) struct Budget<'l> {
    limits: &'l Limits,
    deadline: Instant,
    files: u64,
    extracted: u64,
}

impl<'l> Budget<'l> {
    pub(super) fn new(limits: &'l Limits, started: Instant) -> Self {
        Budget {
            limits,
            deadline: started + limits.max_time,
            files: 0,
            extracted: 0,
        }
    }

    /// Counts one more part; returns the limit hit if this one is too many or time is up.
    pub(super) fn count_file(&mut self) -> Option<LimitHit> {
        if let Some(hit) = self.time_up() {
            return Some(hit);
        }
        self.files += 1;
        (self.files > u64::from(self.limits.max_files)).then_some(LimitHit::Files {
            limit: self.limits.max_files,
        })
    }

    /// Whether `pending` members extracted but not yet counted would already exceed the file limit.
    fn files_full(&self, pending: usize) -> Option<LimitHit> {
        (self.files + pending as u64 >= u64::from(self.limits.max_files)).then_some(
            LimitHit::Files {
                limit: self.limits.max_files,
            },
        )
    }

    fn time_up(&self) -> Option<LimitHit> {
        (Instant::now() >= self.deadline).then_some(LimitHit::Time {
            limit: self.limits.max_time,
        })
    }
}

/// A file taken out of a container.
pub(super) struct Member {
    /// The member's path inside the container, sanitised.
    pub(super) name: String,
    pub(super) bytes: bytes::Bytes,
}

/// What opening one container produced.
#[derive(Default)]
pub(super) struct Opened {
    pub(super) members: Vec<Member>,
    /// Local findings: this container (or member) could not be fully inspected, the rest of the message can.
    pub(super) findings: Vec<Finding>,
    /// A message-wide limit was hit here: the walk must stop after adding `members`.
    pub(super) halt: Option<(LimitHit, PartPath)>,
}

/// How a bounded read ended.
enum ReadEnd {
    Complete,
    Limit(LimitHit),
    Failed(String),
}

/// What a member's expansion is measured against for the compression-ratio limit.
#[derive(Clone, Copy)]
struct RatioBase {
    /// Compressed bytes the output comes from.
    compressed: u64,
    /// Output already produced from those same compressed bytes (earlier members of a solid 7z block).
    already: u64,
}

/// Opens a container of type `kind` at `path`. `name` is the container's file name, used to name the content
/// of single-file compressors (gzip, bzip2, xz, SZDD), which may not store one.
pub(super) fn open(
    kind: FileType,
    data: &[u8],
    path: &PartPath,
    name: Option<&str>,
    budget: &mut Budget<'_>,
) -> Opened {
    // Defence in depth: the decoders are third-party code fed with hostile input. A panic in one of them must
    // cost only this container, never the gateway.
    let result = catch_unwind(AssertUnwindSafe(|| match kind {
        FileType::Zip => open_zip(data, path, budget),
        FileType::Gzip => open_stream(data, path, name, budget, StreamKind::Gzip),
        FileType::Bzip2 => open_stream(data, path, name, budget, StreamKind::Bzip2),
        FileType::Xz => open_stream(data, path, name, budget, StreamKind::Xz),
        FileType::Tar => open_tar(data, path, budget),
        FileType::SevenZip => open_7z(data, path, budget),
        FileType::Cpio => open_cpio(data, path, budget),
        FileType::Cab => open_cab(data, path, budget),
        FileType::Szdd => open_stream(data, path, name, budget, StreamKind::Szdd),
        FileType::BinHex => open_binhex(data, path, budget),
        FileType::Pdf => open_pdf(data, path, budget),
        FileType::Arj => open_arj(data, path, budget),
        FileType::Rtf => documents::open_rtf(data, path, budget),
        FileType::OleCompound => documents::open_ole2(data, path, budget),
        FileType::Tnef => documents::open_tnef(data, path, budget),
        FileType::Chm => documents::open_chm(data, path, budget),
        FileType::WindowsExecutable => installers::open_executable(data, path, budget),
        FileType::Sis => installers::open_sis(data, path, budget),
        _ => Opened::default(),
    }));
    result.unwrap_or_else(|_| Opened {
        findings: vec![Finding::Damaged {
            path: path.clone(),
            reason: "decoder failed on malformed data".to_owned(),
        }],
        ..Opened::default()
    })
}

/// Reads `reader` to its end or until a limit stops it; never holds more than the allowed bytes plus one chunk.
fn read_bounded(
    reader: &mut dyn Read,
    ratio: Option<RatioBase>,
    budget: &mut Budget<'_>,
) -> (Vec<u8>, ReadEnd) {
    let limits = budget.limits;
    let remaining_total = limits.max_total_bytes.saturating_sub(budget.extracted);
    let ratio_cap = ratio.map(|r| {
        r.compressed
            .saturating_mul(limits.max_compression_ratio)
            .max(limits.ratio_check_min_bytes)
            .saturating_sub(r.already)
    });
    let cap = ratio_cap.map_or(remaining_total, |c| c.min(remaining_total));
    let mut out = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let end = loop {
        if let Some(hit) = budget.time_up() {
            break ReadEnd::Limit(hit);
        }
        match reader.read(&mut chunk) {
            Ok(0) => break ReadEnd::Complete,
            Ok(n) => {
                let room = (cap + 1).saturating_sub(out.len() as u64) as usize;
                out.extend_from_slice(&chunk[..n.min(room)]);
                if out.len() as u64 > cap {
                    let seen = out.len() as u64;
                    break match (ratio, ratio_cap) {
                        (Some(base), Some(rc)) if rc <= remaining_total => {
                            ReadEnd::Limit(LimitHit::CompressionRatio {
                                ratio: (base.already + seen) / base.compressed.max(1),
                                limit: limits.max_compression_ratio,
                            })
                        }
                        _ => ReadEnd::Limit(LimitHit::TotalBytes {
                            limit: limits.max_total_bytes,
                        }),
                    };
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => break ReadEnd::Failed(e.to_string()),
        }
    };
    budget.extracted += out.len() as u64;
    (out, end)
}

impl Opened {
    /// Records how a member's read ended. Returns true if the member's bytes are complete and should be kept.
    fn record(&mut self, end: ReadEnd, container: &PartPath, member: &PartPath) -> bool {
        match end {
            ReadEnd::Complete => true,
            ReadEnd::Limit(
                hit @ (LimitHit::CompressionRatio { .. } | LimitHit::DecoderMemory { .. }),
            ) => {
                self.findings.push(Finding::LimitExceeded {
                    limit: hit,
                    path: member.clone(),
                });
                false
            }
            ReadEnd::Limit(hit) => {
                self.halt = Some((hit, member.clone()));
                false
            }
            ReadEnd::Failed(reason) => {
                self.findings.push(Finding::Damaged {
                    path: container.clone(),
                    reason,
                });
                false
            }
        }
    }

    fn damaged(&mut self, path: &PartPath, reason: impl ToString) {
        self.findings.push(Finding::Damaged {
            path: path.clone(),
            reason: reason.to_string(),
        });
    }
}

/// Makes a member path safe to show: no control characters, no leading `/` or `./`, bounded length.
fn member_name(raw: &str) -> String {
    let trimmed = raw.trim_start_matches(['/', '\\']).trim_start_matches("./");
    let name: String = trimmed
        .chars()
        .take(1024)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if name.is_empty() {
        "(unnamed)".to_owned()
    } else {
        name
    }
}

fn open_zip(data: &[u8], path: &PartPath, budget: &mut Budget<'_>) -> Opened {
    let mut opened = Opened::default();
    let mut archive = match zip::ZipArchive::new(Cursor::new(data)) {
        Ok(archive) => archive,
        Err(e) => {
            opened.damaged(path, e);
            return opened;
        }
    };
    let limits = budget.limits;
    for index in 0..archive.len() {
        if let Some(hit) = budget
            .time_up()
            .or_else(|| budget.files_full(opened.members.len()))
        {
            opened.halt = Some((hit, path.clone()));
            return opened;
        }
        // Metadata first, without decompressing: encryption and declared sizes decide whether to read at all.
        let (name, encrypted, is_file, compressed, declared) = match archive.by_index_raw(index) {
            Ok(file) => (
                member_name(&String::from_utf8_lossy(file.name_raw())),
                file.encrypted(),
                file.is_file(),
                file.compressed_size(),
                file.size(),
            ),
            Err(e) => {
                opened.damaged(path, e);
                continue;
            }
        };
        if !is_file {
            continue;
        }
        let member_path = path.child(&name);
        if encrypted {
            opened
                .findings
                .push(Finding::Encrypted { path: member_path });
            continue;
        }
        let declared_ratio = declared / compressed.max(1);
        if declared > limits.ratio_check_min_bytes && declared_ratio > limits.max_compression_ratio
        {
            opened.findings.push(Finding::LimitExceeded {
                limit: LimitHit::CompressionRatio {
                    ratio: declared_ratio,
                    limit: limits.max_compression_ratio,
                },
                path: member_path,
            });
            continue;
        }
        let mut file = match archive.by_index(index) {
            Ok(file) => file,
            Err(e) => {
                opened.damaged(&member_path, e);
                continue;
            }
        };
        let (bytes, end) = read_bounded(
            &mut file,
            Some(RatioBase {
                compressed,
                already: 0,
            }),
            budget,
        );
        let keep = opened.record(end, path, &member_path);
        if keep {
            opened.members.push(Member {
                name,
                bytes: bytes.into(),
            });
        }
        if opened.halt.is_some() {
            return opened;
        }
    }
    opened
}

#[derive(Clone, Copy)]
enum StreamKind {
    Gzip,
    Bzip2,
    Xz,
    Szdd,
}

fn open_stream(
    data: &[u8],
    path: &PartPath,
    name: Option<&str>,
    budget: &mut Budget<'_>,
    kind: StreamKind,
) -> Opened {
    let mut opened = Opened::default();
    let memory_kb = u32::try_from(budget.limits.max_decoder_memory / 1024).unwrap_or(u32::MAX);
    let mut reader: Box<dyn Read> = match kind {
        StreamKind::Gzip => Box::new(flate2::read::MultiGzDecoder::new(data)),
        StreamKind::Bzip2 => Box::new(bzip2::read::MultiBzDecoder::new(data)),
        StreamKind::Xz => Box::new(lzma_rust2::XzReader::new_mem_limit(data, true, memory_kb)),
        StreamKind::Szdd => match SzddReader::new(data) {
            Some(reader) => Box::new(reader),
            None => {
                opened.damaged(path, "SZDD header is incomplete or has an unknown mode");
                return opened;
            }
        },
    };
    let inner = inner_name(name, kind, data);
    let member_path = path.child(&inner);
    let (bytes, end) = read_bounded(
        &mut reader,
        Some(RatioBase {
            compressed: data.len() as u64,
            already: 0,
        }),
        budget,
    );
    match end {
        // A truncated stream still yields what was decoded before the damage; scanners see that much.
        ReadEnd::Failed(reason) => {
            opened.damaged(path, reason);
            if !bytes.is_empty() {
                opened.members.push(Member {
                    name: inner,
                    bytes: bytes.into(),
                });
            }
        }
        end => {
            if opened.record(end, path, &member_path) {
                opened.members.push(Member {
                    name: inner,
                    bytes: bytes.into(),
                });
            }
        }
    }
    opened
}

/// The name of what a single-file compressor holds: `a.tar.gz` → `a.tar`, `a.tgz` → `a.tar`, `SETUP.EX_` →
/// `SETUP.EXE` (SZDD stores the character its `_` replaced).
fn inner_name(outer: Option<&str>, kind: StreamKind, data: &[u8]) -> String {
    if let (StreamKind::Szdd, Some(outer), Some(header)) = (kind, outer, szdd::header(data))
        && let Some(stem) = outer.strip_suffix('_')
        && header.missing_char.is_ascii_graphic()
    {
        return format!("{stem}{}", char::from(header.missing_char));
    }
    let suffixes: &[(&str, &str)] = match kind {
        StreamKind::Gzip => &[
            (".gz", ""),
            (".gzip", ""),
            (".tgz", ".tar"),
            (".taz", ".tar"),
        ],
        StreamKind::Bzip2 => &[
            (".bz2", ""),
            (".bz", ""),
            (".tbz2", ".tar"),
            (".tbz", ".tar"),
        ],
        StreamKind::Xz => &[(".xz", ""), (".txz", ".tar")],
        StreamKind::Szdd => &[(".szdd", ""), (".sz_", "")],
    };
    if let Some(outer) = outer {
        let lower = outer.to_ascii_lowercase();
        for (suffix, replacement) in suffixes {
            if lower.ends_with(suffix)
                && lower.len() > suffix.len()
                && outer.is_char_boundary(outer.len() - suffix.len())
            {
                return format!("{}{}", &outer[..outer.len() - suffix.len()], replacement);
            }
        }
    }
    "(decompressed)".to_owned()
}

fn open_tar(data: &[u8], path: &PartPath, budget: &mut Budget<'_>) -> Opened {
    let mut opened = Opened::default();
    let mut archive = tar::Archive::new(Cursor::new(data));
    let entries = match archive.entries() {
        Ok(entries) => entries,
        Err(e) => {
            opened.damaged(path, e);
            return opened;
        }
    };
    for entry in entries {
        if let Some(hit) = budget
            .time_up()
            .or_else(|| budget.files_full(opened.members.len()))
        {
            opened.halt = Some((hit, path.clone()));
            return opened;
        }
        let mut entry = match entry {
            Ok(entry) => entry,
            Err(e) => {
                opened.damaged(path, e);
                return opened;
            }
        };
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let name = member_name(&String::from_utf8_lossy(&entry.path_bytes()));
        let member_path = path.child(&name);
        // tar stores without compression, so only the total-size limit applies.
        let (bytes, end) = read_bounded(&mut entry, None, budget);
        if opened.record(end, path, &member_path) {
            opened.members.push(Member {
                name,
                bytes: bytes.into(),
            });
        }
        if opened.halt.is_some() {
            return opened;
        }
    }
    opened
}

fn open_7z(data: &[u8], path: &PartPath, budget: &mut Budget<'_>) -> Opened {
    use sevenz_rust2::{ArchiveReader, EntryDecision, Error, Password};

    let mut opened = Opened::default();
    let limits = budget.limits;
    let memory_kb = usize::try_from(limits.max_decoder_memory / 1024).unwrap_or(usize::MAX);
    let classify = |e: Error, opened: &mut Opened| match e {
        Error::PasswordRequired | Error::MaybeBadPassword(_) => opened
            .findings
            .push(Finding::Encrypted { path: path.clone() }),
        Error::MaxMemLimited { .. } => opened.findings.push(Finding::LimitExceeded {
            limit: LimitHit::DecoderMemory {
                limit: limits.max_decoder_memory,
            },
            path: path.clone(),
        }),
        other => opened.damaged(path, other),
    };
    let mut reader =
        match ArchiveReader::new_with_memory_limit(Cursor::new(data), Password::empty(), memory_kb)
        {
            Ok(reader) => reader,
            Err(e) => {
                classify(e, &mut opened);
                return opened;
            }
        };
    // One decoder thread: the appliance has two cores and other messages to scan.
    reader.set_thread_count(1);
    let compressed = data.len() as u64;
    let mut produced = 0u64;
    let result = reader.for_each_entries_with_decision(|entry, content| {
        if entry.is_directory || entry.is_anti_item {
            return Ok(EntryDecision::Continue);
        }
        if let Some(hit) = budget
            .time_up()
            .or_else(|| budget.files_full(opened.members.len()))
        {
            opened.halt = Some((hit, path.clone()));
            return Ok(EntryDecision::Stop);
        }
        let name = member_name(&entry.name);
        let member_path = path.child(&name);
        let (bytes, end) = read_bounded(
            content,
            Some(RatioBase {
                compressed,
                already: produced,
            }),
            budget,
        );
        produced += bytes.len() as u64;
        let complete = matches!(end, ReadEnd::Complete);
        if let ReadEnd::Failed(reason) = &end
            && opened.findings.is_empty()
            && reason.to_ascii_lowercase().contains("password")
        {
            opened
                .findings
                .push(Finding::Encrypted { path: member_path });
            return Ok(EntryDecision::Stop);
        }
        if opened.record(end, path, &member_path) {
            opened.members.push(Member {
                name,
                bytes: bytes.into(),
            });
        }
        // Continue would make the reader decode (and drain) the rest of an over-limit member: stop instead.
        Ok(if complete {
            EntryDecision::Continue
        } else {
            EntryDecision::Stop
        })
    });
    if let Err(e) = result {
        classify(e, &mut opened);
    }
    opened
}

fn open_cpio(data: &[u8], path: &PartPath, budget: &mut Budget<'_>) -> Opened {
    let mut opened = Opened::default();
    for entry in cpio::entries(data) {
        if let Some(hit) = budget
            .time_up()
            .or_else(|| budget.files_full(opened.members.len()))
        {
            opened.halt = Some((hit, path.clone()));
            return opened;
        }
        let entry = match entry {
            Ok(entry) => entry,
            Err(e) => {
                opened.damaged(path, e);
                return opened;
            }
        };
        if !entry.is_file {
            continue;
        }
        let name = member_name(&String::from_utf8_lossy(entry.name));
        let member_path = path.child(&name);
        // cpio stores without compression, so only the total-size limit applies.
        let mut content = entry.data;
        let (bytes, end) = read_bounded(&mut content, None, budget);
        if opened.record(end, path, &member_path) {
            opened.members.push(Member {
                name,
                bytes: bytes.into(),
            });
        }
        if opened.halt.is_some() {
            return opened;
        }
    }
    opened
}

fn open_cab(data: &[u8], path: &PartPath, budget: &mut Budget<'_>) -> Opened {
    use cab::{Cabinet, CompressionType};

    let mut opened = Opened::default();
    let limits = budget.limits;
    let mut cabinet = match Cabinet::new(Cursor::new(data)) {
        Ok(cabinet) => cabinet,
        Err(e) => {
            opened.damaged(path, e);
            return opened;
        }
    };
    // The member list first, with what each member's folder needs: an LZX window is allocated whole.
    let mut files = Vec::new();
    for folder in cabinet.folder_entries() {
        let window = match folder.compression_type() {
            CompressionType::Lzx(window) => window as u64,
            _ => 0,
        };
        for file in folder.file_entries() {
            files.push((file.name().to_owned(), window));
        }
    }
    let mut seen = std::collections::HashSet::new();
    let mut produced = 0u64;
    for (stored, window) in files {
        if let Some(hit) = budget
            .time_up()
            .or_else(|| budget.files_full(opened.members.len()))
        {
            opened.halt = Some((hit, path.clone()));
            return opened;
        }
        // Cabinets separate directories with backslashes.
        let name = member_name(&stored.replace('\\', "/"));
        let member_path = path.child(&name);
        // The cab crate reads members by name: a second member with the same name cannot be reached, and
        // what it holds must not go unseen.
        if !seen.insert(stored.clone()) {
            opened.damaged(
                path,
                format!("two members are named {name:?}; only the first could be read"),
            );
            continue;
        }
        if window > limits.max_decoder_memory {
            opened.findings.push(Finding::LimitExceeded {
                limit: LimitHit::DecoderMemory {
                    limit: limits.max_decoder_memory,
                },
                path: member_path,
            });
            continue;
        }
        // Each member is decoded from the start of its folder (the crate has no sequential reader), so a
        // cabinet of many members in one large folder costs more time than its size says; the time limit,
        // checked between members, bounds that.
        let mut reader = match cabinet.read_file(&stored) {
            Ok(reader) => reader,
            Err(e) => {
                opened.damaged(&member_path, e);
                continue;
            }
        };
        let (bytes, end) = read_bounded(
            &mut reader,
            Some(RatioBase {
                compressed: data.len() as u64,
                already: produced,
            }),
            budget,
        );
        produced += bytes.len() as u64;
        if opened.record(end, path, &member_path) {
            opened.members.push(Member {
                name,
                bytes: bytes.into(),
            });
        }
        if opened.halt.is_some() {
            return opened;
        }
    }
    opened
}

fn open_binhex(data: &[u8], path: &PartPath, budget: &mut Budget<'_>) -> Opened {
    let mut opened = Opened::default();
    let Some(mut reader) = BinHexReader::new(data) else {
        opened.damaged(path, "no BinHex data after the announcement line");
        return opened;
    };
    let header = match reader.read_header() {
        Ok(header) => header,
        Err(e) => {
            opened.damaged(path, format!("BinHex header: {e}"));
            return opened;
        }
    };
    let name = member_name(&String::from_utf8_lossy(&header.name));
    let forks = [
        (name.clone(), header.data_length),
        (format!("{name} (resource fork)"), header.resource_length),
    ];
    let mut produced = 0u64;
    for (fork, (member, length)) in forks.into_iter().enumerate() {
        if fork == 1 {
            // The data fork's CRC sits between the forks.
            if length == 0 || reader.skip_crc().is_err() {
                break;
            }
        }
        if let Some(hit) = budget
            .time_up()
            .or_else(|| budget.files_full(opened.members.len()))
        {
            opened.halt = Some((hit, path.clone()));
            return opened;
        }
        let member_path = path.child(&member);
        let (bytes, end) = read_bounded(
            &mut (&mut reader).take(u64::from(length)),
            Some(RatioBase {
                compressed: data.len() as u64,
                already: produced,
            }),
            budget,
        );
        produced += bytes.len() as u64;
        let short = (bytes.len() as u64) < u64::from(length);
        match end {
            // Damaged text still yields what was decoded before the damage; scanners see that much.
            ReadEnd::Failed(reason) => {
                opened.damaged(path, reason);
                opened.members.push(Member {
                    name: member,
                    bytes: bytes.into(),
                });
                return opened;
            }
            ReadEnd::Complete if short => {
                opened.damaged(
                    path,
                    format!(
                        "BinHex data ends {} bytes into a {length}-byte fork",
                        bytes.len()
                    ),
                );
                opened.members.push(Member {
                    name: member,
                    bytes: bytes.into(),
                });
                return opened;
            }
            end => {
                if opened.record(end, path, &member_path) {
                    opened.members.push(Member {
                        name: member,
                        bytes: bytes.into(),
                    });
                }
                if opened.halt.is_some() {
                    return opened;
                }
            }
        }
    }
    opened
}

fn open_pdf(data: &[u8], path: &PartPath, budget: &mut Budget<'_>) -> Opened {
    let mut opened = Opened::default();
    let document = pdf::scan(data);
    for stream in document.streams.iter().filter(|s| s.is_embedded_file()) {
        if let Some(hit) = budget
            .time_up()
            .or_else(|| budget.files_full(opened.members.len()))
        {
            opened.halt = Some((hit, path.clone()));
            return opened;
        }
        let name = match document.name_of(stream.object) {
            Some(name) => member_name(&String::from_utf8_lossy(name)),
            None => format!("embedded file {}", stream.object),
        };
        let member_path = path.child(&name);
        let (bytes, end) = match stream.encoding() {
            pdf::Encoding::None => {
                let mut raw = stream.raw;
                read_bounded(&mut raw, None, budget)
            }
            pdf::Encoding::Flate { times } => {
                let mut reader: Box<dyn Read + '_> = Box::new(stream.raw);
                for _ in 0..times {
                    reader = Box::new(flate2::read::ZlibDecoder::new(reader));
                }
                read_bounded(
                    &mut reader,
                    Some(RatioBase {
                        compressed: stream.raw.len() as u64,
                        already: 0,
                    }),
                    budget,
                )
            }
            pdf::Encoding::Unsupported(filter) => {
                tracing::debug!(path = %member_path, filter, "PDF embedded file not decoded");
                continue;
            }
        };
        match end {
            // PDF writers often end streams sloppily (no checksum, trailing bytes): what inflated is kept,
            // and only a stream that yields nothing counts as damage.
            ReadEnd::Failed(reason) if bytes.is_empty() => opened.damaged(&member_path, reason),
            ReadEnd::Failed(_) => opened.members.push(Member {
                name,
                bytes: bytes.into(),
            }),
            end => {
                if opened.record(end, path, &member_path) {
                    opened.members.push(Member {
                        name,
                        bytes: bytes.into(),
                    });
                }
                if opened.halt.is_some() {
                    return opened;
                }
            }
        }
    }
    opened
}

impl Opened {
    /// Whether a message-wide limit (time, files) forbids taking one more member; if so the walk
    /// is told to halt at `path`.
    fn full(&mut self, budget: &Budget<'_>, path: &PartPath) -> bool {
        if let Some(hit) = budget
            .time_up()
            .or_else(|| budget.files_full(self.members.len()))
        {
            self.halt = Some((hit, path.clone()));
        }
        self.halt.is_some()
    }

    /// Adds a member whose bytes are stored as they are in the container (no decompression), so
    /// only the total-size limit applies. Returns false when a message-wide limit stops the container.
    fn keep_stored(
        &mut self,
        budget: &mut Budget<'_>,
        container: &PartPath,
        name: String,
        mut bytes: &[u8],
    ) -> bool {
        let member_path = container.child(&name);
        let (bytes, end) = read_bounded(&mut bytes, None, budget);
        if self.record(end, container, &member_path) {
            self.members.push(Member {
                name,
                bytes: bytes.into(),
            });
        }
        self.halt.is_none()
    }

    /// Adds a member decoded from `reader` (`compressed` bytes of input), under the ratio and
    /// total-size limits. Returns false when a message-wide limit stops the container.
    fn keep_decoded(
        &mut self,
        budget: &mut Budget<'_>,
        container: &PartPath,
        name: String,
        reader: &mut dyn Read,
        compressed: u64,
    ) -> bool {
        let member_path = container.child(&name);
        let (bytes, end) = read_bounded(
            reader,
            Some(RatioBase {
                compressed,
                already: 0,
            }),
            budget,
        );
        if self.record(end, container, &member_path) {
            self.members.push(Member {
                name,
                bytes: bytes.into(),
            });
        }
        self.halt.is_none()
    }
}

/// Opens an ARJ archive: stored and method 1–3 members, each checked against its CRC-32.
fn open_arj(data: &[u8], path: &PartPath, budget: &mut Budget<'_>) -> Opened {
    let mut opened = Opened::default();
    let limits = budget.limits;
    let content = arj::files(data, limits.max_files as usize);
    if let Some(reason) = content.damage {
        opened.damaged(path, reason);
    }
    for file in content.files {
        if opened.full(budget, path) {
            break;
        }
        let name = member_name(&file.name);
        let member_path = path.child(&name);
        if file.garbled {
            opened
                .findings
                .push(Finding::Encrypted { path: member_path });
            continue;
        }
        // The declared size is checked before anything is decoded, as for zip.
        let declared_ratio = u64::from(file.size) / (file.data.len() as u64).max(1);
        if u64::from(file.size) > limits.ratio_check_min_bytes
            && declared_ratio > limits.max_compression_ratio
        {
            opened.findings.push(Finding::LimitExceeded {
                limit: LimitHit::CompressionRatio {
                    ratio: declared_ratio,
                    limit: limits.max_compression_ratio,
                },
                path: member_path,
            });
            continue;
        }
        let mut reader: Box<dyn Read + '_> = match file.method {
            arj::Method::Stored => Box::new(file.data),
            arj::Method::Compressed => Box::new(arj::ArjReader::new(file.data, file.size)),
            arj::Method::Unsupported(method) => {
                opened.damaged(
                    &member_path,
                    format!("ARJ compression method {method} is not supported"),
                );
                continue;
            }
        };
        let (bytes, end) = read_bounded(
            &mut reader,
            Some(RatioBase {
                compressed: file.data.len() as u64,
                already: 0,
            }),
            budget,
        );
        if matches!(end, ReadEnd::Complete) && crc32fast::hash(&bytes) != file.crc {
            // What was decoded is still scanned; the archive is not what it says it is.
            opened.damaged(&member_path, "ARJ member fails its CRC check");
        }
        if opened.record(end, path, &member_path) {
            opened.members.push(Member {
                name,
                bytes: bytes.into(),
            });
        }
        if opened.halt.is_some() {
            break;
        }
    }
    opened
}
