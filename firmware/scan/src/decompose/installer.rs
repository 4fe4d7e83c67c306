//! Files carried inside Windows executables: installers and self-extractors append their payload
//! after the program's last section (the overlay) or keep an archive among its resources.
//!
//! Recognised here, each from its own structure, never guessed from names:
//! - InstallShield stored files: entries `NAME\0PATH\0VERSION\0SIZE\0` and the bytes, one after another;
//! - InstallShield MSI setups: `InstallShield\0`, a file count, and per file a 312-byte entry and its
//!   data, obfuscated (nibbles swapped, inverted, XOR with a key made from the file name) and zlib-compressed;
//! - InstallShield cabinets (`ISc(`): a `dataN.hdr` header describing the files of `dataN.cab` volumes,
//!   each file stored or compressed as a run of raw-deflate chunks;
//! - NSIS data: a first header (`NullsoftInst`) on a 512-byte boundary of the overlay, then the
//!   script and the files as length-prefixed blocks, or all of them in one solid stream;
//! - archives embedded anywhere in the file (CAB, OLE2, zip, 7z), found by their signatures and a valid
//!   header; the container module opens them.
//!
//! Every size and offset comes from the file and is checked against the bytes present.

use std::io::Read;

use super::Malformed;

/// The end of a PE image's last section, where an overlay starts; None when `pe` is no PE image
/// or nothing follows its sections.
pub(super) fn overlay_start(pe: &[u8]) -> Option<usize> {
    let u16_at = |at: usize| pe.get(at..at + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32_at = |at: usize| {
        pe.get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    if !pe.starts_with(b"MZ") {
        return None;
    }
    let header = u32_at(0x3c)? as usize;
    if pe.get(header..header + 4)? != b"PE\0\0" {
        return None;
    }
    let sections = usize::from(u16_at(header + 6)?);
    let optional = usize::from(u16_at(header + 20)?);
    // The PE loader accepts at most 96 sections.
    if sections == 0 || sections > 96 {
        return None;
    }
    let table = header + 24 + optional;
    let mut end = 0usize;
    for n in 0..sections {
        let entry = table + n * 40;
        let raw_size = u32_at(entry + 16)? as usize;
        let raw_offset = u32_at(entry + 20)? as usize;
        if raw_size > 0 {
            end = end.max(raw_offset.saturating_add(raw_size));
        }
    }
    (end > 0 && end < pe.len()).then_some(end)
}

/// A file the installer stores as it is (InstallShield stored files).
#[derive(Debug)]
pub(super) struct StoredFile<'a> {
    /// The path the installer gives it (`Disk1/data1.cab`), `/`-separated.
    pub name: String,
    /// The bytes.
    pub data: &'a [u8],
}

/// Longest name, path, version or size field of a stored-file entry.
const MAX_FIELD: usize = 1024;

/// InstallShield stored files at the start of `overlay`, at most `max`; None unless the first
/// entry is well formed. Parsing stops at the first entry that is not (padding, a signature).
pub(super) fn installshield_stored_files(
    overlay: &[u8],
    max: usize,
) -> Option<Vec<StoredFile<'_>>> {
    let mut files = Vec::new();
    let mut at = 0;
    while files.len() < max && at < overlay.len() {
        let Some((file, next)) = stored_entry(overlay, at) else {
            break;
        };
        files.push(file);
        at = next;
    }
    (!files.is_empty()).then_some(files)
}

fn stored_entry(overlay: &[u8], mut at: usize) -> Option<(StoredFile<'_>, usize)> {
    let mut fields = [&[][..]; 4];
    for field in &mut fields {
        let rest = &overlay[at.min(overlay.len())..];
        let len = rest.iter().take(MAX_FIELD).position(|&b| b == 0)?;
        *field = &rest[..len];
        at += len + 1;
    }
    let [name, path, version, size] = fields;
    let printable = |f: &[u8]| !f.is_empty() && f.iter().all(|&b| (0x20..0x7f).contains(&b));
    if !printable(name)
        || !printable(path)
        || !version.iter().all(|&b| b.is_ascii_digit() || b == b'.')
        || !(1..=12).contains(&size.len())
        || !size.iter().all(u8::is_ascii_digit)
    {
        return None;
    }
    let size: usize = std::str::from_utf8(size).ok()?.parse().ok()?;
    let data = overlay.get(at..at.checked_add(size)?)?;
    let name = String::from_utf8_lossy(path).replace('\\', "/");
    Some((StoredFile { name, data }, at + size))
}

/// The signature of an InstallShield MSI setup's file table.
const SETUP_MAGIC: &[u8] = b"InstallShield\0";
/// Bytes from the signature to the first file entry: signature, file count, reserved.
const SETUP_HEADER: usize = 0x2e;
/// Bytes of one file entry before its data: name (0x104), flags, sizes, reserved.
const SETUP_ENTRY: usize = 0x138;
/// How far into the overlay the table may start (setup programs put debug data first).
const SETUP_SEARCH: usize = 64 * 1024;

/// A file of an InstallShield MSI setup, still obfuscated and compressed.
#[derive(Debug)]
pub(super) struct SetupFile<'a> {
    /// The file name.
    pub name: String,
    /// The stored (obfuscated, zlib-compressed) bytes.
    pub stored: &'a [u8],
}

impl<'a> SetupFile<'a> {
    /// The stored bytes with the obfuscation removed: a zlib stream of the file.
    pub fn deobfuscated(&self) -> Deobfuscate<'a> {
        // The key is the file name XOR a fixed 4-byte pattern; it restarts every 1024 bytes.
        const PATTERN: [u8; 4] = [0x13, 0x35, 0x86, 0x07];
        let key: Vec<u8> = self
            .name
            .bytes()
            .enumerate()
            .map(|(i, b)| b ^ PATTERN[i % 4])
            .collect();
        Deobfuscate {
            stored: self.stored,
            at: 0,
            key,
        }
    }
}

/// A reader over an InstallShield setup file's stored bytes that undoes the obfuscation.
pub(super) struct Deobfuscate<'a> {
    stored: &'a [u8],
    at: usize,
    key: Vec<u8>,
}

impl Read for Deobfuscate<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(self.stored.len() - self.at);
        for (i, out) in buf[..n].iter_mut().enumerate() {
            let position = (self.at + i) % 1024;
            let byte = !self.stored[self.at + i];
            *out = byte.rotate_left(4) ^ self.key[position % self.key.len()];
        }
        self.at += n;
        Ok(n)
    }
}

/// The files of an InstallShield MSI setup in `overlay`, at most `max`; None when there is no
/// file table. When the table breaks off, the files before the break come with the reason.
pub(super) fn installshield_setup(
    overlay: &[u8],
    max: usize,
) -> Option<(Vec<SetupFile<'_>>, Option<Malformed>)> {
    let search = &overlay[..overlay.len().min(SETUP_SEARCH)];
    let start = memchr::memmem::find(search, SETUP_MAGIC)?;
    let count_at = start + SETUP_MAGIC.len();
    let count = overlay.get(count_at..count_at + 2)?;
    let count = usize::from(u16::from_le_bytes([count[0], count[1]]));
    let mut files = Vec::new();
    let mut at = start + SETUP_HEADER;
    for _ in 0..count.min(max) {
        let Some(entry) = overlay.get(at..at + SETUP_ENTRY) else {
            return Some((
                files,
                Some(Malformed("InstallShield file entry is cut short")),
            ));
        };
        let name_len = entry[..0x104].iter().position(|&b| b == 0).unwrap_or(0x104);
        let size = u64::from_le_bytes(entry[0x10c..0x114].try_into().unwrap_or_default());
        let data_at = at + SETUP_ENTRY;
        let Some(stored) = usize::try_from(size)
            .ok()
            .and_then(|size| overlay.get(data_at..data_at.checked_add(size)?))
        else {
            return Some((files, Some(Malformed("InstallShield file is cut short"))));
        };
        if name_len == 0 {
            return Some((files, Some(Malformed("InstallShield file has no name"))));
        }
        files.push(SetupFile {
            name: String::from_utf8_lossy(&entry[..name_len]).into_owned(),
            stored,
        });
        at = data_at + stored.len();
    }
    Some((files, None))
}

/// A file in an InstallShield cabinet.
#[derive(Debug)]
pub(super) struct CabinetFile<'a> {
    /// The file name (without its directory).
    pub name: String,
    /// Its size once extracted, as declared.
    pub size: u64,
    /// Its bytes in the volume: raw, or chunks (16-bit length, raw deflate) when `compressed`.
    pub data: &'a [u8],
    /// Whether `data` is deflate chunks.
    pub compressed: bool,
}

/// The signature of InstallShield cabinet headers and volumes.
pub(super) const CABINET_MAGIC: &[u8] = b"ISc(";

/// File descriptor flags.
const FILE_OBFUSCATED: u16 = 2;
const FILE_COMPRESSED: u16 = 4;
const FILE_INVALID: u16 = 8;

/// The files an InstallShield cabinet header (`data1.hdr`, or `data1.cab` holding its own header)
/// describes, at most `max`, with their data taken from the volumes `volume(N)` returns
/// (`dataN.cab`). Files whose volume is missing, obfuscated files and files marked invalid are
/// left out. Only the layout of InstallShield 6 and later is read.
pub(super) fn installshield_cabinet<'a>(
    header: &[u8],
    volume: impl Fn(u16) -> Option<&'a [u8]>,
    max: usize,
) -> Result<Vec<CabinetFile<'a>>, Malformed> {
    let u16_at = |at: usize| {
        header
            .get(at..at.checked_add(2)?)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u32_at = |at: usize| {
        header
            .get(at..at.checked_add(4)?)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    let u64_at = |at: usize| {
        header
            .get(at..at.checked_add(8)?)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap_or_default()))
    };
    const CUT: Malformed = Malformed("InstallShield cabinet header is cut short");
    if !header.starts_with(CABINET_MAGIC) {
        return Err(Malformed("no InstallShield cabinet signature"));
    }
    let version = u32_at(4).ok_or(CUT)?;
    let major = match version >> 24 {
        1 => (version >> 12) & 0xf,
        2 | 4 => (version & 0xffff) / 100,
        _ => 0,
    };
    if major < 6 {
        return Err(Malformed(
            "InstallShield cabinets before version 6 are not read",
        ));
    }
    let descriptor = u32_at(12).ok_or(CUT)?;
    let file_table = descriptor
        .checked_add(u32_at(descriptor + 0x0c).ok_or(CUT)?)
        .ok_or(CUT)?;
    let file_count = u32_at(descriptor + 0x28).ok_or(CUT)?;
    let descriptors = file_table
        .checked_add(u32_at(descriptor + 0x2c).ok_or(CUT)?)
        .ok_or(CUT)?;
    const DESCRIPTOR: usize = 0x57;
    let mut files = Vec::new();
    for index in 0..file_count {
        if files.len() >= max {
            break;
        }
        let at = descriptors
            .checked_add(index.checked_mul(DESCRIPTOR).ok_or(CUT)?)
            .ok_or(CUT)?;
        let flags = u16_at(at).ok_or(CUT)?;
        let size = u64_at(at + 2).ok_or(CUT)?;
        let stored_size = u64_at(at + 10).ok_or(CUT)?;
        let offset = u64_at(at + 18).ok_or(CUT)?;
        let name_offset = u32_at(at + 58).ok_or(CUT)?;
        let volume_number = u16_at(at + 85).ok_or(CUT)?;
        if flags & (FILE_OBFUSCATED | FILE_INVALID) != 0 {
            continue;
        }
        let name = header
            .get(file_table.saturating_add(name_offset)..)
            .map(|rest| {
                rest.iter()
                    .take(MAX_FIELD)
                    .take_while(|&&b| b != 0)
                    .copied()
            })
            .map(|bytes| String::from_utf8_lossy(&bytes.collect::<Vec<u8>>()).into_owned())
            .filter(|name| !name.is_empty())
            .unwrap_or_else(|| format!("file[{index}]"));
        let Some(data) = volume(volume_number).and_then(|v| {
            let start = usize::try_from(offset).ok()?;
            let end = start.checked_add(usize::try_from(stored_size).ok()?)?;
            v.get(start..end)
        }) else {
            tracing::debug!(file = %name, volume = volume_number, "InstallShield cabinet file outside its volume");
            continue;
        };
        files.push(CabinetFile {
            name,
            size,
            data,
            compressed: flags & FILE_COMPRESSED != 0,
        });
    }
    Ok(files)
}

/// A reader over an InstallShield cabinet file's compressed data: chunks of a 16-bit length and
/// that many bytes of raw deflate, each inflated on its own.
pub(super) struct CabinetChunks<'a> {
    rest: &'a [u8],
    current: Option<flate2::read::DeflateDecoder<&'a [u8]>>,
}

impl<'a> CabinetChunks<'a> {
    pub(super) fn new(data: &'a [u8]) -> Self {
        CabinetChunks {
            rest: data,
            current: None,
        }
    }
}

impl Read for CabinetChunks<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            if let Some(chunk) = &mut self.current {
                let n = chunk.read(buf)?;
                if n > 0 || buf.is_empty() {
                    return Ok(n);
                }
                self.current = None;
            }
            if self.rest.is_empty() {
                return Ok(0);
            }
            let Some((len, rest)) = self.rest.split_first_chunk::<2>() else {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "InstallShield chunk length is cut short",
                ));
            };
            let len = usize::from(u16::from_le_bytes(*len));
            let Some((chunk, rest)) = rest.split_at_checked(len) else {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "InstallShield chunk is cut short",
                ));
            };
            self.rest = rest;
            self.current = Some(flate2::read::DeflateDecoder::new(chunk));
        }
    }
}

/// The kind of an archive found embedded in an executable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum EmbeddedKind {
    Cab,
    Ole2,
    Zip,
    SevenZip,
}

impl EmbeddedKind {
    /// The file extension used to name the member.
    pub(super) fn extension(self) -> &'static str {
        match self {
            EmbeddedKind::Cab => "cab",
            EmbeddedKind::Ole2 => "ole",
            EmbeddedKind::Zip => "zip",
            EmbeddedKind::SevenZip => "7z",
        }
    }
}

/// An archive signature with a plausible header, at `offset`, spanning `len` bytes (to the end of
/// the file when the header does not say).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Embedded {
    pub kind: EmbeddedKind,
    pub offset: usize,
    pub len: usize,
}

/// Signatures looked at after the executable's own headers, at most this many: a program that
/// merely contains these bytes here and there costs little.
const MAX_SIGNATURES: usize = 64;

/// Archives embedded in `data` at or after `from` (never at 0: that is the executable itself),
/// at most `max`, in file order. A signature counts only with a header that makes sense.
pub(super) fn embedded_archives(data: &[u8], from: usize, max: usize) -> Vec<Embedded> {
    use aho_corasick::AhoCorasick;
    const SIGNATURES: [(&[u8], EmbeddedKind); 4] = [
        (b"MSCF\0\0\0\0", EmbeddedKind::Cab),
        (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", EmbeddedKind::Ole2),
        (b"PK\x03\x04", EmbeddedKind::Zip),
        (b"7z\xbc\xaf\x27\x1c", EmbeddedKind::SevenZip),
    ];
    let Ok(searcher) = AhoCorasick::new(SIGNATURES.iter().map(|(s, _)| s)) else {
        return Vec::new();
    };
    let from = from.max(1).min(data.len());
    let mut found: Vec<Embedded> = Vec::new();
    for hit in searcher.find_iter(&data[from..]).take(MAX_SIGNATURES) {
        if found.len() >= max {
            break;
        }
        let offset = from + hit.start();
        // Inside an archive already found: its own members, not another archive.
        if found
            .iter()
            .any(|e| e.kind == EmbeddedKind::Cab && offset < e.offset + e.len)
        {
            continue;
        }
        let kind = SIGNATURES[hit.pattern().as_usize()].1;
        let rest = &data[offset..];
        if let Some(len) = plausible(kind, rest) {
            found.push(Embedded { kind, offset, len });
        }
    }
    found
}

/// The length of the archive of `kind` that starts `rest`, when its header is plausible.
fn plausible(kind: EmbeddedKind, rest: &[u8]) -> Option<usize> {
    let u16_at = |at: usize| {
        rest.get(at..at + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u32_at = |at: usize| {
        rest.get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    match kind {
        EmbeddedKind::Cab => {
            // cbCabinet, coffFiles, version 1.3, at least one folder and one file.
            let size = u32_at(8)? as usize;
            let files_at = u32_at(16)? as usize;
            let ok = (36..=rest.len()).contains(&size)
                && files_at < size
                && rest.get(24..26)? == [3, 1]
                && u16_at(26)? > 0
                && u16_at(28)? > 0;
            ok.then_some(size)
        }
        EmbeddedKind::Ole2 => {
            // Byte order mark, and major version 3 with 512-byte or 4 with 4096-byte sectors.
            let ok = u16_at(28)? == 0xfffe
                && matches!((u16_at(26)?, u16_at(30)?), (3, 9) | (4, 12))
                && rest.len() >= 1024;
            ok.then_some(rest.len())
        }
        EmbeddedKind::Zip => {
            // Version needed, a known method, and a name of sane length; the archive's central
            // directory must follow somewhere.
            let ok = u16_at(4)? <= 63
                && matches!(u16_at(8)?, 0 | 8 | 9 | 12 | 14 | 93 | 95 | 98 | 99)
                && (1..=1024).contains(&u16_at(26)?)
                && rest.windows(4).any(|w| w == b"PK\x05\x06");
            ok.then_some(rest.len())
        }
        EmbeddedKind::SevenZip => {
            // Format version 0.x and a next-header offset inside the file.
            let next = u64::from_le_bytes(rest.get(12..20)?.try_into().ok()?);
            let ok = rest.get(6)? == &0 && next.checked_add(32)? <= rest.len() as u64;
            ok.then_some(rest.len())
        }
    }
}

/// The NSIS first header's signature, after its 4-byte flags.
const NSIS_MAGIC: &[u8] = b"\xef\xbe\xad\xdeNullsoftInst";
/// Bytes of the NSIS first header: flags, signature, header length, data length.
const NSIS_FIRST_HEADER: usize = 28;
/// How far into the overlay the NSIS first header is looked for (it sits on a 512-byte boundary).
const NSIS_SEARCH: usize = 1024 * 1024;

/// How an NSIS block is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum NsisCompression {
    Stored,
    /// Raw LZMA: a properties byte and a 32-bit dictionary size, then the stream.
    Lzma,
    /// Raw deflate.
    Deflate,
}

/// The data of an NSIS installer: its blocks, or one solid stream holding them all.
#[derive(Debug)]
pub(super) struct Nsis<'a> {
    /// The uncompressed length of the installer's script header (the first block).
    pub header_len: u32,
    /// The data after the first header: length-prefixed blocks, or a solid stream.
    pub data: &'a [u8],
}

impl<'a> Nsis<'a> {
    /// The data as length-prefixed blocks (high bit of the length = compressed), when it splits
    /// into them exactly (up to a trailing 4-byte CRC); None for a solid installer.
    pub fn blocks(&self) -> Option<Vec<(&'a [u8], NsisCompression)>> {
        let mut blocks = Vec::new();
        let mut rest = self.data;
        while rest.len() > 4 {
            let (len, tail) = rest.split_first_chunk::<4>()?;
            let len = u32::from_le_bytes(*len);
            let compressed = len & 0x8000_0000 != 0;
            let (block, tail) = tail.split_at_checked((len & 0x7fff_ffff) as usize)?;
            let compression = if !compressed {
                NsisCompression::Stored
            } else {
                compression_of(block)
            };
            blocks.push((block, compression));
            rest = tail;
        }
        (!blocks.is_empty() && rest.len() <= 4).then_some(blocks)
    }

    /// How the solid stream is compressed.
    pub fn solid_compression(&self) -> NsisCompression {
        compression_of(self.data)
    }
}

/// LZMA when the data starts with valid LZMA properties and a power-of-two-like dictionary size,
/// else deflate (the two compressors NSIS uses by default).
fn compression_of(data: &[u8]) -> NsisCompression {
    let lzma = data.len() >= 5 && data[0] < 9 * 5 * 5 && {
        let dict = u32::from_le_bytes([data[1], data[2], data[3], data[4]]);
        dict >= 4096
            && (dict.is_power_of_two()
                || (dict / 3 * 2).is_power_of_two() && dict.is_multiple_of(3))
    };
    if lzma {
        NsisCompression::Lzma
    } else {
        NsisCompression::Deflate
    }
}

/// The NSIS installer data in `overlay`, if its first header is there.
pub(super) fn nsis(overlay: &[u8]) -> Option<Nsis<'_>> {
    let search = overlay.len().min(NSIS_SEARCH);
    let start = (0..search)
        .step_by(512)
        .find(|&at| overlay.get(at + 4..at + 4 + NSIS_MAGIC.len()) == Some(NSIS_MAGIC))?;
    let u32_at = |at: usize| {
        overlay
            .get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let header_len = u32_at(start + 20)?;
    let data_len = u32_at(start + 24)? as usize;
    let end = start.checked_add(data_len)?.min(overlay.len());
    let data = overlay.get(start + NSIS_FIRST_HEADER..end)?;
    Some(Nsis { header_len, data })
}

/// Splits an NSIS solid stream, once decompressed, into its parts: the script header and the
/// files, each preceded by its 32-bit length. What does not fit is dropped.
pub(super) fn nsis_solid_parts(data: &[u8], max: usize) -> Vec<&[u8]> {
    let mut parts = Vec::new();
    let mut rest = data;
    while parts.len() < max {
        let Some((len, tail)) = rest.split_first_chunk::<4>() else {
            break;
        };
        let len = (u32::from_le_bytes(*len) & 0x7fff_ffff) as usize;
        let Some((part, tail)) = tail.split_at_checked(len) else {
            break;
        };
        parts.push(part);
        rest = tail;
    }
    parts
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A minimal PE image: headers, one section of `section` bytes, then `overlay`.
    pub(crate) fn pe_with_overlay(section: &[u8], overlay: &[u8]) -> Vec<u8> {
        let mut pe = vec![0u8; 0x200];
        pe[..2].copy_from_slice(b"MZ");
        pe[0x3c..0x40].copy_from_slice(&0x80u32.to_le_bytes());
        pe[0x80..0x84].copy_from_slice(b"PE\0\0");
        pe[0x86..0x88].copy_from_slice(&1u16.to_le_bytes());
        pe[0x94..0x96].copy_from_slice(&0xe0u16.to_le_bytes());
        let table = 0x80 + 24 + 0xe0;
        pe[table..table + 5].copy_from_slice(b".text");
        pe[table + 16..table + 20].copy_from_slice(&(section.len() as u32).to_le_bytes());
        pe[table + 20..table + 24].copy_from_slice(&0x200u32.to_le_bytes());
        pe.extend_from_slice(section);
        pe.extend_from_slice(overlay);
        pe
    }

    /// InstallShield stored-file entries for `files` (path, bytes).
    pub(crate) fn stored_files_of(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (path, data) in files {
            let name = path.rsplit('\\').next().unwrap();
            out.extend_from_slice(format!("{name}\0{path}\00.0.0.0\0{}\0", data.len()).as_bytes());
            out.extend_from_slice(data);
        }
        out
    }

    /// An InstallShield MSI setup table holding `files` (name, bytes), obfuscated and compressed.
    pub(crate) fn setup_of(files: &[(&str, &[u8])]) -> Vec<u8> {
        use std::io::Write;
        let mut out = SETUP_MAGIC.to_vec();
        out.extend_from_slice(&(files.len() as u16).to_le_bytes());
        out.resize(SETUP_HEADER, 0);
        for (name, data) in files {
            let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
            z.write_all(data).unwrap();
            let compressed = z.finish().unwrap();
            // Obfuscating is the inverse: XOR with the key, swap the nibbles, invert.
            let file = SetupFile {
                name: (*name).to_owned(),
                stored: &[],
            };
            let key = file.deobfuscated().key;
            let stored: Vec<u8> = compressed
                .iter()
                .enumerate()
                .map(|(i, &b)| !(b ^ key[(i % 1024) % key.len()]).rotate_left(4))
                .collect();
            let mut entry = vec![0u8; SETUP_ENTRY];
            entry[..name.len()].copy_from_slice(name.as_bytes());
            entry[0x104] = 6;
            entry[0x10c..0x114].copy_from_slice(&(stored.len() as u64).to_le_bytes());
            out.extend_from_slice(&entry);
            out.extend_from_slice(&stored);
        }
        out
    }

    fn deflated(data: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut d = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        d.write_all(data).unwrap();
        d.finish().unwrap()
    }

    /// NSIS installer data: the first header, then the script `header` and `files` as deflated
    /// blocks, or all of them in one deflated stream when `solid`.
    pub(crate) fn nsis_of(header: &[u8], files: &[&[u8]], solid: bool) -> Vec<u8> {
        let mut body = Vec::new();
        if solid {
            let mut plain = Vec::new();
            for part in std::iter::once(header).chain(files.iter().copied()) {
                plain.extend_from_slice(&(part.len() as u32).to_le_bytes());
                plain.extend_from_slice(part);
            }
            body = deflated(&plain);
        } else {
            for part in std::iter::once(header).chain(files.iter().copied()) {
                let block = deflated(part);
                body.extend_from_slice(&(block.len() as u32 | 0x8000_0000).to_le_bytes());
                body.extend_from_slice(&block);
            }
        }
        let mut out = 0u32.to_le_bytes().to_vec();
        out.extend_from_slice(NSIS_MAGIC);
        out.extend_from_slice(&(header.len() as u32).to_le_bytes());
        out.extend_from_slice(&((NSIS_FIRST_HEADER + body.len()) as u32).to_le_bytes());
        out.extend_from_slice(&body);
        out
    }

    #[test]
    fn nsis_data_splits_into_blocks_or_is_one_solid_stream() {
        let blocks = nsis_of(b"script", &[b"MZ file one", b"two"], false);
        let data = nsis(&blocks).unwrap();
        assert_eq!(data.header_len, 6);
        let found = data.blocks().unwrap();
        assert_eq!(found.len(), 3);
        assert!(found.iter().all(|(_, c)| *c == NsisCompression::Deflate));
        // Cut inside the last block: no exact split, so not taken for blocks.
        let cut = nsis_of(b"script", &[b"MZ file one"], false);
        assert!(nsis(&cut[..cut.len() - 2]).unwrap().blocks().is_none());

        let solid = nsis_of(b"script", &[b"MZ file one"], true);
        let mut plain = Vec::new();
        flate2::read::DeflateDecoder::new(nsis(&solid).unwrap().data)
            .read_to_end(&mut plain)
            .unwrap();
        let parts = nsis_solid_parts(&plain, 10);
        assert_eq!(parts, [&b"script"[..], &b"MZ file one"[..]]);
        assert_eq!(nsis_solid_parts(&plain[..plain.len() - 1], 10).len(), 1);
        assert!(nsis(b"no installer here").is_none());
    }

    #[test]
    fn the_overlay_starts_after_the_last_section() {
        let pe = pe_with_overlay(&[0x90; 0x200], b"overlay");
        assert_eq!(overlay_start(&pe), Some(0x400));
        assert_eq!(overlay_start(&pe_with_overlay(&[0x90; 0x200], b"")), None);
        assert_eq!(overlay_start(b"MZ"), None);
        assert_eq!(overlay_start(&pe[..0x100]), None);
    }

    #[test]
    fn installshield_stored_files_are_read_until_the_entries_end() {
        let overlay = [
            stored_files_of(&[("Disk1\\a.exe", b"MZ a"), ("Disk1\\b.txt", b"bee")]),
            b"\0\0padding".to_vec(),
        ]
        .concat();
        let files = installshield_stored_files(&overlay, 10).unwrap();
        let got: Vec<(&str, &[u8])> = files.iter().map(|f| (f.name.as_str(), f.data)).collect();
        assert_eq!(
            got,
            [("Disk1/a.exe", &b"MZ a"[..]), ("Disk1/b.txt", &b"bee"[..])]
        );
        assert!(installshield_stored_files(b"random bytes\0", 10).is_none());
        // A size beyond the data ends the list.
        let cut = &overlay[..overlay.len() - 14];
        assert_eq!(installshield_stored_files(cut, 10).unwrap().len(), 1);
    }

    #[test]
    fn installshield_setup_files_deobfuscate_to_zlib_streams() {
        let overlay = [
            b"NB10 debug data".to_vec(),
            setup_of(&[("clam.exe", b"MZ setup")]),
        ]
        .concat();
        let (files, damage) = installshield_setup(&overlay, 10).unwrap();
        assert_eq!(damage, None);
        assert_eq!(files[0].name, "clam.exe");
        let mut out = Vec::new();
        flate2::read::ZlibDecoder::new(files[0].deobfuscated())
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, b"MZ setup");
        let (files, damage) = installshield_setup(&overlay[..overlay.len() - 1], 10).unwrap();
        assert!(files.is_empty() && damage.is_some());
        assert!(installshield_setup(b"no table here", 10).is_none());
    }

    #[test]
    fn cabinet_chunks_inflate_one_after_another_and_truncation_is_an_error() {
        use std::io::Write;
        let mut data = Vec::new();
        for part in [&b"first chunk "[..], b"second chunk"] {
            let mut d =
                flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
            d.write_all(part).unwrap();
            let chunk = d.finish().unwrap();
            data.extend_from_slice(&(chunk.len() as u16).to_le_bytes());
            data.extend_from_slice(&chunk);
        }
        let mut out = Vec::new();
        CabinetChunks::new(&data).read_to_end(&mut out).unwrap();
        assert_eq!(out, b"first chunk second chunk");
        let mut out = Vec::new();
        assert!(
            CabinetChunks::new(&data[..data.len() - 3])
                .read_to_end(&mut out)
                .is_err()
        );
    }

    #[test]
    fn a_cabinet_header_that_is_cut_or_too_old_is_an_error_not_a_panic() {
        let mut header = CABINET_MAGIC.to_vec();
        header.extend_from_slice(&0x0100_9500u32.to_le_bytes());
        header.extend_from_slice(&[0; 8]);
        header.extend_from_slice(&0x200u32.to_le_bytes());
        for cut in 0..header.len() {
            assert!(installshield_cabinet(&header[..cut], |_| None, 10).is_err());
        }
        let mut old = header.clone();
        old[4..8].copy_from_slice(&0x0100_5000u32.to_le_bytes());
        assert!(installshield_cabinet(&old, |_| None, 10).is_err());
    }

    #[test]
    fn embedded_archives_need_a_plausible_header() {
        let mut cab = b"MSCF\0\0\0\0".to_vec();
        cab.extend_from_slice(&40u32.to_le_bytes());
        cab.extend_from_slice(&0u32.to_le_bytes());
        cab.extend_from_slice(&36u32.to_le_bytes());
        cab.extend_from_slice(&0u32.to_le_bytes());
        cab.extend_from_slice(&[3, 1, 1, 0, 1, 0, 0, 0]);
        cab.resize(40, 0);
        let data = [b"MZ program text MSCF\0\0\0\0 PK\x03\x04 ".to_vec(), cab].concat();
        let found = embedded_archives(&data, 2, 10);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].kind, EmbeddedKind::Cab);
        assert_eq!(found[0].len, 40);
        assert!(embedded_archives(&data, 2, 0).is_empty());
    }
}
