//! Windows HTML Help (`.chm`, signature `ITSF`): a directory of files (ITSP header, PMGL listing
//! chunks) whose entries point into section 0 (stored) or section 1 (LZX-compressed in 32 KiB
//! frames, the decoder reset every few frames as the reset table and control data say). LZX frames
//! are decoded with the `lzxd` crate. Every offset and length is checked against the file.

use std::io::Read;

use super::Malformed;

/// The first four bytes of a CHM file.
pub(crate) const MAGIC: &[u8] = b"ITSF";

/// Size of an LZX frame: the unit of the reset table.
const FRAME: u64 = 0x8000;

/// Largest directory chunk accepted (writers use 4 KiB).
const MAX_CHUNK: usize = 64 * 1024;

/// A file listed in the directory.
#[derive(Debug, Clone)]
pub(super) struct ChmEntry {
    pub name: String,
    /// 0 = stored, 1 = LZX-compressed.
    pub section: u64,
    pub offset: u64,
    pub length: u64,
}

/// A CHM file's directory and where section 0 begins.
#[derive(Debug)]
pub(super) struct ChmDirectory {
    pub entries: Vec<ChmEntry>,
    pub content_offset: u64,
}

fn u32_at(data: &[u8], at: usize) -> Option<u32> {
    data.get(at..at.checked_add(4)?)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

fn u64_at(data: &[u8], at: usize) -> Option<u64> {
    data.get(at..at.checked_add(8)?)
        .map(|b| u64::from_le_bytes(b.try_into().unwrap_or_default()))
}

/// A variable-length integer of the directory: 7 bits a byte, most significant first.
fn encint(data: &[u8], at: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    for _ in 0..9 {
        let byte = *data.get(*at)?;
        *at += 1;
        value = (value << 7) | u64::from(byte & 0x7f);
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// Reads the directory of a CHM file, at most `max` entries.
pub(super) fn directory(data: &[u8], max: usize) -> Result<ChmDirectory, Malformed> {
    const CUT: Malformed = Malformed("CHM header is cut short");
    if !data.starts_with(MAGIC) {
        return Err(Malformed("no CHM signature"));
    }
    let version = u32_at(data, 4).ok_or(CUT)?;
    let directory_at = usize::try_from(u64_at(data, 0x48).ok_or(CUT)?).map_err(|_| CUT)?;
    let directory_len = u64_at(data, 0x50).ok_or(CUT)?;
    let content_offset = if version >= 3 {
        u64_at(data, 0x58).ok_or(CUT)?
    } else {
        (directory_at as u64).saturating_add(directory_len)
    };
    if data.get(directory_at..directory_at + 4) != Some(b"ITSP") {
        return Err(Malformed("CHM directory header is missing"));
    }
    let header_len = u32_at(data, directory_at + 8).ok_or(CUT)? as usize;
    let chunk_size = u32_at(data, directory_at + 16).ok_or(CUT)? as usize;
    let chunks = u32_at(data, directory_at + 44).ok_or(CUT)? as usize;
    if !(32..=MAX_CHUNK).contains(&chunk_size) {
        return Err(Malformed("CHM directory chunk size is implausible"));
    }
    let first_chunk = directory_at.checked_add(header_len).ok_or(CUT)?;
    let mut entries = Vec::new();
    for n in 0..chunks {
        let Some(chunk) = n
            .checked_mul(chunk_size)
            .and_then(|o| o.checked_add(first_chunk))
            .and_then(|start| data.get(start..start.checked_add(chunk_size)?))
        else {
            return Err(Malformed("CHM directory is cut short"));
        };
        // Index chunks (PMGI) only speed up look-ups; the listing chunks hold every entry.
        if !chunk.starts_with(b"PMGL") {
            continue;
        }
        let free = u32_at(chunk, 4).ok_or(CUT)? as usize;
        let end = chunk_size.saturating_sub(free);
        let mut at = 20;
        while at < end && entries.len() < max {
            let entry = (|| {
                let len = usize::try_from(encint(chunk, &mut at)?).ok()?;
                let name = chunk.get(at..at.checked_add(len)?)?;
                at += len;
                let section = encint(chunk, &mut at)?;
                let offset = encint(chunk, &mut at)?;
                let length = encint(chunk, &mut at)?;
                Some(ChmEntry {
                    name: String::from_utf8_lossy(name).into_owned(),
                    section,
                    offset,
                    length,
                })
            })();
            match entry {
                Some(entry) => entries.push(entry),
                None => return Err(Malformed("CHM directory entry is cut short")),
            }
        }
    }
    Ok(ChmDirectory {
        entries,
        content_offset,
    })
}

impl ChmDirectory {
    /// The bytes of a section 0 entry.
    pub fn stored<'a>(&self, data: &'a [u8], entry: &ChmEntry) -> Option<&'a [u8]> {
        let start = self.content_offset.checked_add(entry.offset)?;
        let end = start.checked_add(entry.length)?;
        data.get(usize::try_from(start).ok()?..usize::try_from(end).ok()?)
    }

    fn named(&self, name: &str) -> Option<&ChmEntry> {
        self.entries
            .iter()
            .find(|e| e.name == name && e.section == 0)
    }

    /// How section 1 is compressed: its LZX data, window, reset interval and frame table.
    pub fn lzx_section<'a>(&self, data: &'a [u8]) -> Result<LzxSection<'a>, Malformed> {
        const BASE: &str = "::DataSpace/Storage/MSCompressed/";
        const RESET_TABLE: &str =
            "Transform/{7FC28940-9D31-11D0-9B27-00A0C91E9C7C}/InstanceData/ResetTable";
        let part = |name: &str| {
            self.named(&format!("{BASE}{name}"))
                .and_then(|e| self.stored(data, e))
                .ok_or(Malformed("CHM compressed section is incomplete"))
        };
        let content = part("Content")?;
        let control = part("ControlData")?;
        let table = part(RESET_TABLE)?;
        const CUT: Malformed = Malformed("CHM compression data is cut short");
        if control.get(4..8) != Some(b"LZXC") {
            return Err(Malformed("CHM section 1 is not LZX-compressed"));
        }
        let control_version = u32_at(control, 8).ok_or(CUT)?;
        let (mut reset, mut window) = (
            u64::from(u32_at(control, 12).ok_or(CUT)?),
            u64::from(u32_at(control, 16).ok_or(CUT)?),
        );
        // Version 2 counts in frames, version 1 in bytes.
        if control_version == 2 {
            reset *= FRAME;
            window *= FRAME;
        }
        let window = match window {
            0x8000 => lzxd::WindowSize::KB32,
            0x10000 => lzxd::WindowSize::KB64,
            0x20000 => lzxd::WindowSize::KB128,
            0x40000 => lzxd::WindowSize::KB256,
            0x80000 => lzxd::WindowSize::KB512,
            0x10_0000 => lzxd::WindowSize::MB1,
            0x20_0000 => lzxd::WindowSize::MB2,
            _ => return Err(Malformed("CHM LZX window size is not one LZX allows")),
        };
        if reset == 0 || reset % FRAME != 0 {
            return Err(Malformed("CHM LZX reset interval is not whole frames"));
        }
        let entries = u32_at(table, 4).ok_or(CUT)? as usize;
        let entry_size = u32_at(table, 8).ok_or(CUT)? as usize;
        let header = u32_at(table, 12).ok_or(CUT)? as usize;
        let uncompressed = u64_at(table, 16).ok_or(CUT)?;
        let block = u64_at(table, 32).ok_or(CUT)?;
        if entry_size != 8 || block != FRAME {
            return Err(Malformed("CHM reset table has an unknown layout"));
        }
        let mut frames = Vec::with_capacity(entries.min(table.len() / 8));
        for n in 0..entries {
            let at = header.checked_add(n * 8).ok_or(CUT)?;
            frames.push(u64_at(table, at).ok_or(CUT)?);
        }
        Ok(LzxSection {
            content,
            window,
            frames_per_reset: reset / FRAME,
            frames,
            uncompressed,
        })
    }
}

/// Section 1 of a CHM file: LZX data and how to cut it into frames.
pub(super) struct LzxSection<'a> {
    pub content: &'a [u8],
    pub window: lzxd::WindowSize,
    frames_per_reset: u64,
    /// Where each frame starts in `content`.
    frames: Vec<u64>,
    /// Declared size of the whole section once decompressed.
    pub uncompressed: u64,
}

impl<'a> LzxSection<'a> {
    /// A reader of the decompressed section, frame by frame.
    pub fn reader(self) -> LzxReader<'a> {
        LzxReader {
            decoder: lzxd::Lzxd::new(self.window),
            section: self,
            frame: 0,
            pending: Vec::new(),
            at: 0,
        }
    }
}

/// Decompresses a CHM section 1 one 32 KiB frame at a time.
pub(super) struct LzxReader<'a> {
    decoder: lzxd::Lzxd,
    section: LzxSection<'a>,
    frame: usize,
    pending: Vec<u8>,
    at: usize,
}

impl Read for LzxReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let invalid = |reason: String| std::io::Error::new(std::io::ErrorKind::InvalidData, reason);
        if self.at == self.pending.len() {
            let done = self.frame as u64 * FRAME;
            if done >= self.section.uncompressed || self.frame >= self.section.frames.len() {
                return Ok(0);
            }
            let start = self.section.frames[self.frame];
            let end = self
                .section
                .frames
                .get(self.frame + 1)
                .copied()
                .unwrap_or(self.section.content.len() as u64);
            let chunk = usize::try_from(start)
                .ok()
                .zip(usize::try_from(end).ok())
                .and_then(|(s, e)| self.section.content.get(s..e))
                .ok_or_else(|| invalid("CHM LZX frame lies outside the section".to_owned()))?;
            if self.frame > 0 && (self.frame as u64).is_multiple_of(self.section.frames_per_reset) {
                self.decoder.reset();
            }
            let len = (self.section.uncompressed - done).min(FRAME) as usize;
            let output = self
                .decoder
                .decompress_next(chunk, len)
                .map_err(|e| invalid(e.to_string()))?;
            self.pending.clear();
            self.pending.extend_from_slice(output);
            self.at = 0;
            self.frame += 1;
        }
        let n = buf.len().min(self.pending.len() - self.at);
        buf[..n].copy_from_slice(&self.pending[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A CHM file (version 3) whose section 0 holds `files`, with no compressed section.
    pub(crate) fn chm_of(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut chunk = b"PMGL".to_vec();
        chunk.extend_from_slice(&[0; 16]);
        let mut offset = 0u64;
        for (name, data) in files {
            chunk.push(name.len() as u8);
            chunk.extend_from_slice(name.as_bytes());
            chunk.extend_from_slice(&[0, offset as u8, data.len() as u8]);
            offset += data.len() as u64;
        }
        let free = 4096 - chunk.len();
        chunk[4..8].copy_from_slice(&(free as u32).to_le_bytes());
        chunk.resize(4096, 0);
        let mut out = vec![0u8; 0x60];
        out[..4].copy_from_slice(MAGIC);
        out[4..8].copy_from_slice(&3u32.to_le_bytes());
        out[0x48..0x50].copy_from_slice(&0x60u64.to_le_bytes());
        out[0x50..0x58].copy_from_slice(&(0x54u64 + 4096).to_le_bytes());
        out[0x58..0x60].copy_from_slice(&(0x60u64 + 0x54 + 4096).to_le_bytes());
        let mut itsp = vec![0u8; 0x54];
        itsp[..4].copy_from_slice(b"ITSP");
        itsp[8..12].copy_from_slice(&0x54u32.to_le_bytes());
        itsp[16..20].copy_from_slice(&4096u32.to_le_bytes());
        itsp[44..48].copy_from_slice(&1u32.to_le_bytes());
        out.extend_from_slice(&itsp);
        out.extend_from_slice(&chunk);
        for (_, data) in files {
            out.extend_from_slice(data);
        }
        out
    }

    #[test]
    fn stored_entries_are_listed_and_read() {
        let chm = chm_of(&[("/a.exe", b"MZ one"), ("/b.htm", b"<html>")]);
        let dir = directory(&chm, 10).unwrap();
        assert_eq!(dir.entries.len(), 2);
        assert_eq!(dir.entries[0].name, "/a.exe");
        assert_eq!(dir.stored(&chm, &dir.entries[1]), Some(&b"<html>"[..]));
        assert!(dir.lzx_section(&chm).is_err());
        assert_eq!(directory(&chm, 1).unwrap().entries.len(), 1);
    }

    #[test]
    fn a_truncated_file_is_an_error_or_reads_within_bounds() {
        let chm = chm_of(&[("/a.exe", b"MZ one")]);
        for cut in 0..chm.len() {
            if let Ok(dir) = directory(&chm[..cut], 10) {
                for entry in &dir.entries {
                    let _ = dir.stored(&chm[..cut], entry);
                }
            }
        }
        assert!(directory(b"ITSF", 10).is_err());
    }

    #[test]
    fn encints_are_big_endian_seven_bits_a_byte() {
        let mut at = 0;
        assert_eq!(encint(&[0x81, 0x00, 0x05], &mut at), Some(128));
        assert_eq!(encint(&[0x81, 0x00, 0x05], &mut at), Some(5));
        assert_eq!(encint(&[0xff; 12], &mut 0), None);
    }
}
