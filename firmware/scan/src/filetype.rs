//! True file types, found from the first bytes of the content (magic numbers), never from the name.

use serde::{Deserialize, Serialize};

/// What a part really is, judged by its content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileType {
    /// ZIP archive (also the envelope of Office Open XML, ODF, JAR and APK files).
    Zip,
    /// gzip-compressed stream.
    Gzip,
    /// bzip2-compressed stream.
    Bzip2,
    /// xz-compressed stream.
    Xz,
    /// POSIX/GNU tar archive (ustar magic).
    Tar,
    /// 7-Zip archive.
    SevenZip,
    /// cpio archive (odc, newc/crc or old binary in either byte order).
    Cpio,
    /// File compressed by MS-DOS `COMPRESS.EXE` (SZDD; `SETUP.EX_`).
    Szdd,
    /// BinHex 4.0 encoded Mac file (`.hqx`).
    #[serde(rename = "binhex")]
    BinHex,
    /// Windows HTML Help file (`.chm`).
    Chm,
    /// Symbian installation file (`.sis`, EPOC releases 3 to 6).
    Sis,
    /// TNEF stream (`winmail.dat`): Outlook's wrapper of attachments.
    Tnef,
    /// RAR archive (recognised, not opened).
    Rar,
    /// Microsoft Cabinet.
    Cab,
    /// ARJ archive.
    Arj,
    /// Windows/DOS executable or DLL (`MZ`).
    WindowsExecutable,
    /// ELF executable or shared object.
    Elf,
    /// Mach-O executable (thin or universal).
    MachO,
    /// Java class file.
    JavaClass,
    /// Windows shortcut (`.lnk`).
    WindowsShortcut,
    /// OLE2 compound document: legacy Office files, MSI installers.
    OleCompound,
    /// PDF document.
    Pdf,
    /// Rich Text Format.
    Rtf,
    /// PNG image.
    Png,
    /// JPEG image.
    Jpeg,
    /// GIF image.
    Gif,
    /// HTML document.
    Html,
    /// Script with a `#!` interpreter line.
    Script,
    /// Plain text (no binary bytes in the sampled start).
    Text,
    /// Nothing recognised.
    Binary,
}

impl FileType {
    /// Detects the type from the content. Only the first few kilobytes are looked at.
    pub fn detect(bytes: &[u8]) -> FileType {
        let starts = |magic: &[u8]| bytes.starts_with(magic);
        if starts(b"PK\x03\x04") || starts(b"PK\x05\x06") || starts(b"PK\x07\x08") {
            return FileType::Zip;
        }
        if starts(b"\x1f\x8b\x08") {
            return FileType::Gzip;
        }
        if bytes.len() >= 4 && starts(b"BZh") && (b'1'..=b'9').contains(&bytes[3]) {
            return FileType::Bzip2;
        }
        if starts(b"\xfd7zXZ\x00") {
            return FileType::Xz;
        }
        if starts(b"7z\xbc\xaf\x27\x1c") {
            return FileType::SevenZip;
        }
        if bytes.get(257..262) == Some(b"ustar") {
            return FileType::Tar;
        }
        if starts(crate::decompose::szdd::MAGIC) {
            return FileType::Szdd;
        }
        if crate::decompose::cpio::looks_like_cpio(bytes) {
            return FileType::Cpio;
        }
        if starts(b"Rar!\x1a\x07") {
            return FileType::Rar;
        }
        if starts(crate::decompose::chm::MAGIC) && matches!(bytes.get(4..8), Some([2 | 3, 0, 0, 0]))
        {
            return FileType::Chm;
        }
        if crate::decompose::sis::looks_like_sis(bytes) {
            return FileType::Sis;
        }
        if crate::decompose::tnef::looks_like_tnef(bytes) {
            return FileType::Tnef;
        }
        if starts(b"MSCF\x00\x00\x00\x00") {
            return FileType::Cab;
        }
        if crate::decompose::arj::looks_like_arj(bytes) {
            return FileType::Arj;
        }
        if starts(b"MZ") {
            return FileType::WindowsExecutable;
        }
        if starts(b"\x7fELF") {
            return FileType::Elf;
        }
        if starts(b"\xfe\xed\xfa\xce")
            || starts(b"\xfe\xed\xfa\xcf")
            || starts(b"\xce\xfa\xed\xfe")
            || starts(b"\xcf\xfa\xed\xfe")
        {
            return FileType::MachO;
        }
        if starts(b"\xca\xfe\xba\xbe") && bytes.len() >= 8 {
            // Universal Mach-O and Java classes share this magic; the next word is an architecture count
            // (small) for Mach-O and the class file version (45 and up) for Java.
            let next = u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
            return if next < 45 {
                FileType::MachO
            } else {
                FileType::JavaClass
            };
        }
        if starts(b"L\x00\x00\x00\x01\x14\x02\x00") {
            return FileType::WindowsShortcut;
        }
        if starts(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1") {
            return FileType::OleCompound;
        }
        if starts(b"%PDF-") {
            return FileType::Pdf;
        }
        if starts(b"{\\rtf") {
            return FileType::Rtf;
        }
        if starts(b"\x89PNG\r\n\x1a\n") {
            return FileType::Png;
        }
        if starts(b"\xff\xd8\xff") {
            return FileType::Jpeg;
        }
        if starts(b"GIF87a") || starts(b"GIF89a") {
            return FileType::Gif;
        }
        if crate::decompose::binhex::looks_like_binhex(bytes) {
            return FileType::BinHex;
        }
        if starts(b"#!") {
            return FileType::Script;
        }
        let sample = &bytes[..bytes.len().min(4096)];
        if looks_like_html(sample) {
            return FileType::Html;
        }
        if looks_like_text(sample) {
            return FileType::Text;
        }
        FileType::Binary
    }

    /// Whether we open this type and decompose its members (for executables: installer data and
    /// embedded archives, when there are any).
    pub fn is_opened_container(self) -> bool {
        matches!(
            self,
            FileType::Zip
                | FileType::Gzip
                | FileType::Bzip2
                | FileType::Xz
                | FileType::Tar
                | FileType::SevenZip
                | FileType::Cpio
                | FileType::Cab
                | FileType::Szdd
                | FileType::BinHex
                | FileType::Pdf
                | FileType::Rtf
                | FileType::OleCompound
                | FileType::Tnef
                | FileType::Arj
                | FileType::Chm
                | FileType::Sis
                | FileType::WindowsExecutable
        )
    }

    /// Whether this is an archive format we recognise but cannot open.
    pub fn is_unopened_container(self) -> bool {
        matches!(self, FileType::Rar)
    }

    /// Whether the content is directly executable code (what file-name blocking calls an executable).
    pub fn is_executable(self) -> bool {
        matches!(
            self,
            FileType::WindowsExecutable
                | FileType::Elf
                | FileType::MachO
                | FileType::WindowsShortcut
        )
    }

    /// A short human name for verdict lines.
    pub fn describe(self) -> &'static str {
        match self {
            FileType::Zip => "zip archive",
            FileType::Gzip => "gzip stream",
            FileType::Bzip2 => "bzip2 stream",
            FileType::Xz => "xz stream",
            FileType::Tar => "tar archive",
            FileType::SevenZip => "7z archive",
            FileType::Cpio => "cpio archive",
            FileType::Szdd => "SZDD compressed file",
            FileType::BinHex => "BinHex file",
            FileType::Tnef => "TNEF attachment wrapper",
            FileType::Chm => "Windows HTML Help file",
            FileType::Sis => "Symbian installation file",
            FileType::Rar => "rar archive",
            FileType::Cab => "cab archive",
            FileType::Arj => "arj archive",
            FileType::WindowsExecutable => "Windows executable",
            FileType::Elf => "ELF executable",
            FileType::MachO => "Mach-O executable",
            FileType::JavaClass => "Java class",
            FileType::WindowsShortcut => "Windows shortcut",
            FileType::OleCompound => "OLE2 compound document",
            FileType::Pdf => "PDF document",
            FileType::Rtf => "RTF document",
            FileType::Png => "PNG image",
            FileType::Jpeg => "JPEG image",
            FileType::Gif => "GIF image",
            FileType::Html => "HTML document",
            FileType::Script => "script",
            FileType::Text => "text",
            FileType::Binary => "binary data",
        }
    }
}

impl std::fmt::Display for FileType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.describe())
    }
}

fn looks_like_html(sample: &[u8]) -> bool {
    let start = sample
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(sample.len());
    let head = &sample[start..sample.len().min(start + 64)];
    let lower: Vec<u8> = head.iter().map(u8::to_ascii_lowercase).collect();
    lower.starts_with(b"<!doctype html")
        || lower.starts_with(b"<html")
        || lower.starts_with(b"<head")
}

/// Text if there is no NUL and almost no other control bytes; UTF-8 and 8-bit charsets both count as text.
fn looks_like_text(sample: &[u8]) -> bool {
    if sample.is_empty() || sample.contains(&0) {
        return false;
    }
    let control = sample
        .iter()
        .filter(|&&b| b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r' | 0x0c | 0x1b))
        .count();
    control * 100 <= sample.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn executable_is_recognised_by_content_whatever_its_name() {
        assert_eq!(
            FileType::detect(b"MZ\x90\x00\x03\x00\x00\x00"),
            FileType::WindowsExecutable
        );
        assert_eq!(FileType::detect(b"\x7fELF\x02\x01\x01"), FileType::Elf);
    }

    #[test]
    fn universal_mach_o_and_java_class_are_told_apart() {
        assert_eq!(
            FileType::detect(b"\xca\xfe\xba\xbe\x00\x00\x00\x02"),
            FileType::MachO
        );
        assert_eq!(
            FileType::detect(b"\xca\xfe\xba\xbe\x00\x00\x00\x34"),
            FileType::JavaClass
        );
    }

    #[test]
    fn containers_text_and_html_are_recognised() {
        assert_eq!(FileType::detect(b"PK\x03\x04rest"), FileType::Zip);
        assert_eq!(FileType::detect(b"\x1f\x8b\x08\x00"), FileType::Gzip);
        assert_eq!(FileType::detect(b"BZh91AY"), FileType::Bzip2);
        assert_eq!(
            FileType::detect(b"SZDD\x88\xf0\x27\x33A\0\x10\0\0\0"),
            FileType::Szdd
        );
        assert_eq!(
            FileType::detect(b"(This file must be converted with BinHex 4.0)\r\n:!!"),
            FileType::BinHex
        );
        assert_eq!(FileType::detect(b"MSCF\0\0\0\0rest"), FileType::Cab);
        assert_eq!(FileType::detect(b"Hello,\r\nworld\r\n"), FileType::Text);
        assert_eq!(FileType::detect(b"  <HTML><body>x"), FileType::Html);
        assert_eq!(FileType::detect(b"\x00\x01\x02"), FileType::Binary);
        assert_eq!(FileType::detect(b""), FileType::Binary);
    }

    #[test]
    fn document_mail_and_installer_formats_are_recognised_and_opened() {
        let cases: [(&[u8], FileType); 5] = [
            (b"\x78\x9f\x3e\x22\x01\x00\x01", FileType::Tnef),
            (b"ITSF\x03\x00\x00\x00\x60\x00", FileType::Chm),
            (
                b"\x00\x00\x00\x01\x12\x3a\x00\x10\x19\x04\x00\x10rest",
                FileType::Sis,
            ),
            (
                b"\x60\xea\x26\x00\x22\x0b\x01\x02\x10\x00\x02",
                FileType::Arj,
            ),
            (b"{\\rtf1\\ansi", FileType::Rtf),
        ];
        for (bytes, kind) in cases {
            assert_eq!(FileType::detect(bytes), kind);
            assert!(kind.is_opened_container(), "{kind}");
        }
        assert!(FileType::OleCompound.is_opened_container());
        assert!(FileType::WindowsExecutable.is_opened_container());
        // An ARJ signature with an impossible header size is not an ARJ archive.
        assert_ne!(
            FileType::detect(b"\x60\xea\xff\xffjunkjunkjunk"),
            FileType::Arj
        );
        assert!(!FileType::Arj.is_unopened_container());
        assert!(FileType::Rar.is_unopened_container());
    }
}
