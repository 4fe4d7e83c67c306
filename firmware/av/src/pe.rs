//! Just enough of the PE and Mach-O formats to find executables and PE section data.
//!
//! Every offset read from the file is bounds-checked: a truncated or hostile header yields
//! "not a PE" or fewer sections, never a panic.

/// PE files with more sections than this are hashed only up to this many (Windows itself caps
/// the count at 96).
const MAX_SECTIONS: usize = 96;

fn u16_at(data: &[u8], at: usize) -> Option<u16> {
    let bytes = data.get(at..at.checked_add(2)?)?;
    Some(u16::from_le_bytes([bytes[0], bytes[1]]))
}

fn u32_at(data: &[u8], at: usize) -> Option<u32> {
    let bytes = data.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
}

/// Offset of the COFF file header (just after `PE\0\0`), if `data` is a PE file.
fn coff_header(data: &[u8]) -> Option<usize> {
    if !data.starts_with(b"MZ") {
        return None;
    }
    let pe = u32_at(data, 0x3c)? as usize;
    if data.get(pe..pe.checked_add(4)?)? != b"PE\0\0" {
        return None;
    }
    let coff = pe + 4;
    // The COFF header is 20 bytes; a file that cannot hold it is not a usable PE.
    data.get(coff..coff.checked_add(20)?)?;
    Some(coff)
}

/// Whether `data` is a PE (Windows) executable: an MZ header pointing at a `PE\0\0` signature.
pub(crate) fn is_pe(data: &[u8]) -> bool {
    coff_header(data).is_some()
}

/// Whether `data` starts like a Mach-O (macOS) executable, 32 or 64 bit, either byte order.
pub(crate) fn is_macho(data: &[u8]) -> bool {
    const MAGICS: [[u8; 4]; 4] = [
        [0xfe, 0xed, 0xfa, 0xce],
        [0xfe, 0xed, 0xfa, 0xcf],
        [0xce, 0xfa, 0xed, 0xfe],
        [0xcf, 0xfa, 0xed, 0xfe],
    ];
    data.get(..4)
        .is_some_and(|head| MAGICS.iter().any(|m| m == head))
}

/// The raw data of each PE section (`SizeOfRawData` bytes at `PointerToRawData`), skipping
/// empty sections and sections that run past the end of the file.
pub(crate) fn pe_sections(data: &[u8]) -> Vec<&[u8]> {
    let Some(coff) = coff_header(data) else {
        return Vec::new();
    };
    let (Some(count), Some(optional_size)) = (u16_at(data, coff + 2), u16_at(data, coff + 16))
    else {
        return Vec::new();
    };
    let table = coff + 20 + optional_size as usize;
    let mut sections = Vec::new();
    for index in 0..(count as usize).min(MAX_SECTIONS) {
        let entry = table + index * 40;
        let (Some(size), Some(pointer)) = (u32_at(data, entry + 16), u32_at(data, entry + 20))
        else {
            break;
        };
        let (size, pointer) = (size as usize, pointer as usize);
        if size == 0 {
            continue;
        }
        if let Some(raw) = pointer
            .checked_add(size)
            .and_then(|end| data.get(pointer..end))
        {
            sections.push(raw);
        }
    }
    sections
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A minimal PE file with the given sections' raw data, for tests.
    pub(crate) fn tiny_pe(sections: &[&[u8]]) -> Vec<u8> {
        let mut file = vec![0u8; 0x80];
        file[0..2].copy_from_slice(b"MZ");
        file[0x3c..0x40].copy_from_slice(&0x40u32.to_le_bytes());
        file[0x40..0x44].copy_from_slice(b"PE\0\0");
        let coff = 0x44;
        file[coff + 2..coff + 4].copy_from_slice(&(sections.len() as u16).to_le_bytes());
        // No optional header: the section table follows the COFF header directly.
        let table = coff + 20;
        file.resize(table + 40 * sections.len(), 0);
        let mut pointer = file.len();
        for (i, raw) in sections.iter().enumerate() {
            let entry = table + 40 * i;
            file[entry..entry + 5].copy_from_slice(b".sect");
            file[entry + 16..entry + 20].copy_from_slice(&(raw.len() as u32).to_le_bytes());
            file[entry + 20..entry + 24].copy_from_slice(&(pointer as u32).to_le_bytes());
            pointer += raw.len();
        }
        for raw in sections {
            file.extend_from_slice(raw);
        }
        file
    }

    #[test]
    fn sections_of_a_pe_file_are_found() {
        let file = tiny_pe(&[b"first section", b"second"]);
        assert!(is_pe(&file));
        assert_eq!(
            pe_sections(&file),
            vec![&b"first section"[..], &b"second"[..]]
        );
    }

    #[test]
    fn truncated_or_hostile_headers_never_panic() {
        let file = tiny_pe(&[b"first section"]);
        for cut in 0..file.len() {
            let _ = pe_sections(&file[..cut]);
        }
        let mut hostile = file.clone();
        hostile[0x3c..0x40].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(!is_pe(&hostile));
        assert!(pe_sections(b"MZ").is_empty());
    }
}
