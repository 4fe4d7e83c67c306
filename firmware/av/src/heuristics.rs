//! Heuristics that need no signature: executables disguised by their file name.
//!
//! Mail worms hide programs behind harmless-looking names ("invoice.pdf.exe", a PE file named
//! "photo.jpg", Unicode right-to-left tricks). These checks need the attachment's file name, so
//! they run only when the caller has one ([`Engine::scan_named`](crate::Engine::scan_named)).

use crate::pe::{is_macho, is_pe};

/// Detection name for executable content behind a document or media file name.
pub const DISGUISED_EXECUTABLE: &str = "Heuristics.Executable.DisguisedByName";
/// Detection name for "document.pdf.exe"-style names.
pub const DOUBLE_EXTENSION: &str = "Heuristics.Name.DoubleExtension";
/// Detection name for names containing Unicode bidirectional overrides.
pub const BIDI_OVERRIDE: &str = "Heuristics.Name.BidiOverride";

/// Extensions that Windows runs (or opens with a script host) on a double click.
const EXECUTABLE_EXTENSIONS: &[&str] = &[
    "exe",
    "com",
    "scr",
    "pif",
    "bat",
    "cmd",
    "cpl",
    "dll",
    "msi",
    "msp",
    "vbs",
    "vbe",
    "js",
    "jse",
    "wsf",
    "wsh",
    "hta",
    "jar",
    "lnk",
    "ps1",
    "reg",
    "sys",
    "ocx",
    "application",
    "gadget",
    "msc",
    "inf",
    "scf",
];

/// Extensions that promise a document, picture, sound or archive, never a program.
const HARMLESS_EXTENSIONS: &[&str] = &[
    "txt", "text", "pdf", "doc", "docx", "xls", "xlsx", "ppt", "pptx", "odt", "ods", "odp", "rtf",
    "csv", "jpg", "jpeg", "png", "gif", "bmp", "tif", "tiff", "webp", "svg", "mp3", "mp4", "wav",
    "avi", "mov", "mpg", "mpeg", "wmv", "htm", "html", "xml", "zip", "rar", "7z", "gz", "tar",
    "eml", "ics", "vcf",
];

/// Characters that reverse how the rest of a name is displayed ("gnp.exe" shown as "exe.png").
const BIDI_CONTROLS: &[char] = &[
    '\u{202a}', '\u{202b}', '\u{202d}', '\u{202e}', '\u{2066}', '\u{2067}', '\u{2068}',
];

/// The kind of executable content, recognised from its first bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExecutableKind {
    /// A Windows PE executable or DLL (MZ header with a PE signature).
    Pe,
    /// A Linux/Unix ELF executable.
    Elf,
    /// A macOS Mach-O executable.
    MachO,
}

/// Recognises executable content from its magic bytes.
pub fn executable_kind(data: &[u8]) -> Option<ExecutableKind> {
    if is_pe(data) {
        Some(ExecutableKind::Pe)
    } else if data.starts_with(b"\x7fELF") {
        Some(ExecutableKind::Elf)
    } else if is_macho(data) {
        Some(ExecutableKind::MachO)
    } else {
        None
    }
}

/// The extensions of a file name, last first, lower-cased. Windows ignores trailing dots and
/// spaces ("x.exe. " runs as x.exe), so they are trimmed first.
fn extensions(file_name: &str) -> Vec<String> {
    let base = file_name.rsplit(['/', '\\']).next().unwrap_or(file_name);
    let trimmed = base.trim_end_matches(['.', ' ']);
    let mut parts: Vec<&str> = trimmed.split('.').collect();
    if parts.len() < 2 {
        return Vec::new();
    }
    parts.remove(0);
    parts
        .iter()
        .rev()
        .map(|p| p.trim().to_ascii_lowercase())
        .collect()
}

/// Checks a file name (and the content behind it) for disguise; returns the detection names.
///
/// * [`BIDI_OVERRIDE`]: the name contains a Unicode direction override.
/// * [`DOUBLE_EXTENSION`]: a harmless extension followed by an executable one ("cv.pdf.exe").
/// * [`DISGUISED_EXECUTABLE`]: PE/ELF/Mach-O content under a harmless extension ("cv.pdf").
pub fn disguised_executable(file_name: &str, data: &[u8]) -> Vec<&'static str> {
    let mut found = Vec::new();
    if file_name.contains(BIDI_CONTROLS) {
        found.push(BIDI_OVERRIDE);
    }
    let extensions = extensions(file_name);
    let is = |list: &[&str], ext: Option<&String>| ext.is_some_and(|e| list.contains(&e.as_str()));
    if is(EXECUTABLE_EXTENSIONS, extensions.first()) && is(HARMLESS_EXTENSIONS, extensions.get(1)) {
        found.push(DOUBLE_EXTENSION);
    }
    if is(HARMLESS_EXTENSIONS, extensions.first()) && executable_kind(data).is_some() {
        found.push(DISGUISED_EXECUTABLE);
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pe::tests::tiny_pe;

    #[test]
    fn pe_file_named_as_a_picture_is_flagged() {
        let pe = tiny_pe(&[b"code"]);
        assert_eq!(
            disguised_executable("holiday.JPG", &pe),
            vec![DISGUISED_EXECUTABLE]
        );
        assert!(disguised_executable("setup.exe", &pe).is_empty());
        assert!(disguised_executable("holiday.jpg", b"\xff\xd8\xff\xe0 jpeg").is_empty());
    }

    #[test]
    fn document_then_program_extension_is_flagged_even_with_trailing_dots() {
        assert_eq!(
            disguised_executable("invoice.pdf.exe", b""),
            vec![DOUBLE_EXTENSION]
        );
        assert_eq!(
            disguised_executable("invoice.pdf   .scr. ", b""),
            vec![DOUBLE_EXTENSION]
        );
        assert!(disguised_executable("release.1.2.exe", b"").is_empty());
    }

    #[test]
    fn right_to_left_override_in_a_name_is_flagged() {
        assert_eq!(
            disguised_executable("photo\u{202e}gpj.exe", b""),
            vec![BIDI_OVERRIDE]
        );
    }

    #[test]
    fn elf_without_extension_is_not_flagged() {
        assert!(disguised_executable("tool", b"\x7fELF\x02\x01").is_empty());
        assert_eq!(
            disguised_executable("tool.txt", b"\x7fELF\x02\x01"),
            vec![DISGUISED_EXECUTABLE]
        );
    }
}
