//! Decomposition under hostile input: a MIME torture set, container bombs, nesting, many files, encryption.

use std::io::{Cursor, Write};
use std::time::{Duration, Instant};

use super::*;

/// Base64 with line breaks, as a mail client would write an attachment.
pub(crate) fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for (i, chunk) in data.chunks(3).enumerate() {
        if i > 0 && i % 19 == 0 {
            out.push_str("\r\n");
        }
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for k in 0..4 {
            if k <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * k)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A message with a text body and one base64 attachment.
pub(crate) fn message_with_attachment(name: &str, content_type: &str, data: &[u8]) -> Vec<u8> {
    format!(
        "From: a@example.com\r\nTo: b@example.org\r\nSubject: files\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n\
         --b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nSee attached.\r\n\
         --b1\r\nContent-Type: {content_type}; name=\"{name}\"\r\nContent-Disposition: attachment; filename=\"{name}\"\r\n\
         Content-Transfer-Encoding: base64\r\n\r\n{}\r\n--b1--\r\n",
        base64(data)
    )
    .into_bytes()
}

pub(crate) fn zip_of(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut writer = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    for (name, data) in files {
        writer.start_file(*name, options).unwrap();
        writer.write_all(data).unwrap();
    }
    writer.finish().unwrap().into_inner()
}

fn paths(d: &Decomposition) -> Vec<&str> {
    d.parts.iter().map(|p| p.path.as_str()).collect()
}

fn limit_hits(d: &Decomposition) -> Vec<(&LimitHit, &str)> {
    d.findings
        .iter()
        .filter_map(|f| match f {
            Finding::LimitExceeded { limit, path } => Some((limit, path.as_str())),
            _ => None,
        })
        .collect()
}

#[test]
fn multipart_with_html_and_attachment_yields_named_parts_with_text() {
    let raw = b"From: a@example.com\r\nSubject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=outer\r\n\r\n--outer\r\n\
Content-Type: multipart/alternative; boundary=inner\r\n\r\n--inner\r\n\
Content-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nCaf=E9 ouvert\r\n--inner\r\n\
Content-Type: text/html\r\n\r\n<html><head><style>p{}</style></head><body><p>Hello <b>world</b></p></body></html>\r\n--inner--\r\n\
--outer\r\nContent-Type: application/pdf; name=\"r.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n--outer--\r\n";
    let d = decompose(raw, &Limits::default());
    assert_eq!(d.subject.as_deref(), Some("Grüße"));
    assert_eq!(
        paths(&d),
        [
            "message/body[1]",
            "message/body[2]",
            "message/attachment[1] \"r.pdf\""
        ]
    );
    assert_eq!(
        d.parts[0].text.as_deref().map(str::trim),
        Some("Café ouvert")
    );
    assert!(d.parts[1].text.as_deref().unwrap().contains("Hello world"));
    assert!(!d.parts[1].text.as_deref().unwrap().contains("p{}"));
    let pdf = &d.parts[2];
    assert_eq!(pdf.true_type, FileType::Pdf);
    assert_eq!(pdf.declared_type.as_deref(), Some("application/pdf"));
    assert_eq!(pdf.role, PartRole::Attachment);
    assert!(d.findings.is_empty());
    assert!(d.header_text.contains("Subject: Grüße"));
}

#[test]
fn zip_members_get_paths_under_their_attachment() {
    let zip = zip_of(&[("docs/a.exe", b"MZ\x90\x00rest"), ("readme.txt", b"hello")]);
    let d = decompose(
        &message_with_attachment("invoice.zip", "application/zip", &zip),
        &Limits::default(),
    );
    assert_eq!(
        paths(&d),
        [
            "message/body[1]",
            "message/attachment[1] \"invoice.zip\"",
            "message/attachment[1] \"invoice.zip\"/docs/a.exe",
            "message/attachment[1] \"invoice.zip\"/readme.txt",
        ]
    );
    let exe = &d.parts[2];
    assert_eq!(exe.file_name.as_deref(), Some("a.exe"));
    assert_eq!(exe.true_type, FileType::WindowsExecutable);
    assert_eq!(exe.depth, 1);
    assert_eq!(exe.role, PartRole::Member);
    assert_eq!(
        exe.carrier.as_str(),
        "message/attachment[1] \"invoice.zip\""
    );
    assert_eq!(d.parts[3].text.as_deref(), Some("hello"));
}

#[test]
fn type_is_detected_by_content_not_by_name() {
    let zip = zip_of(&[("x.txt", b"inside")]);
    let d = decompose(
        &message_with_attachment("photo.jpg", "image/jpeg", &zip),
        &Limits::default(),
    );
    assert_eq!(d.parts[1].true_type, FileType::Zip);
    assert_eq!(d.parts.len(), 3, "the zip named .jpg is opened");
}

#[test]
fn executable_declared_as_text_plain_keeps_its_real_bytes() {
    let exe = b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00";
    let d = decompose(
        &message_with_attachment("readme.txt", "text/plain", exe),
        &Limits::default(),
    );
    let part = &d.parts[1];
    assert_eq!(part.true_type, FileType::WindowsExecutable);
    assert_eq!(&part.bytes[..], exe);
}

#[test]
fn gzip_tar_bzip2_xz_and_7z_are_opened_recursively() {
    let mut tar = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(5);
    header.set_mode(0o644);
    header.set_cksum();
    tar.append_data(&mut header, "dir/inner.txt", &b"hello"[..])
        .unwrap();
    let tar = tar.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&tar).unwrap();
    let tgz = gz.finish().unwrap();
    let d = decompose(
        &message_with_attachment("a.tar.gz", "application/gzip", &tgz),
        &Limits::default(),
    );
    assert_eq!(
        paths(&d)[1..],
        [
            "message/attachment[1] \"a.tar.gz\"",
            "message/attachment[1] \"a.tar.gz\"/a.tar",
            "message/attachment[1] \"a.tar.gz\"/a.tar/dir/inner.txt",
        ]
    );
    assert_eq!(d.parts[3].depth, 2);

    let mut bz = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::default());
    bz.write_all(b"bzipped text").unwrap();
    let d = decompose(
        &message_with_attachment("n.txt.bz2", "application/x-bzip2", &bz.finish().unwrap()),
        &Limits::default(),
    );
    assert_eq!(d.parts[2].text.as_deref(), Some("bzipped text"));

    let mut xz =
        lzma_rust2::XzWriter::new(Vec::new(), lzma_rust2::XzOptions::with_preset(6)).unwrap();
    xz.write_all(b"xz text").unwrap();
    let d = decompose(
        &message_with_attachment("n.xz", "application/x-xz", &xz.finish().unwrap()),
        &Limits::default(),
    );
    assert_eq!(d.parts[2].path.as_str(), "message/attachment[1] \"n.xz\"/n");
    assert_eq!(d.parts[2].text.as_deref(), Some("xz text"));

    let mut seven = sevenz_rust2::ArchiveWriter::new(Cursor::new(Vec::new())).unwrap();
    seven
        .push_archive_entry(
            sevenz_rust2::ArchiveEntry::new_file("in7z/a.exe"),
            Some(&b"MZ\x90\x00x"[..]),
        )
        .unwrap();
    let seven = seven.finish().unwrap().into_inner();
    let d = decompose(
        &message_with_attachment("s.7z", "application/x-7z-compressed", &seven),
        &Limits::default(),
    );
    assert_eq!(
        d.parts[2].path.as_str(),
        "message/attachment[1] \"s.7z\"/in7z/a.exe"
    );
    assert_eq!(d.parts[2].true_type, FileType::WindowsExecutable);
    assert!(d.findings.is_empty(), "{:?}", d.findings);
}

/// 42.zip in miniature: levels of zips, each holding copies of the level below; the innermost files are
/// megabytes of zeros that compress about 1000:1.
fn zip_bomb(levels: usize, copies: usize, inner_bytes: usize) -> Vec<u8> {
    let zeros = vec![0u8; inner_bytes];
    let mut current = zip_of(&[("0.dat", &zeros)]);
    for level in 0..levels {
        let names: Vec<String> = (0..copies).map(|i| format!("lib {i}.zip")).collect();
        let files: Vec<(&str, &[u8])> = names
            .iter()
            .map(|n| (n.as_str(), current.as_slice()))
            .collect();
        current = zip_of(&files);
        let _ = level;
    }
    current
}

#[test]
fn zip_bomb_is_stopped_by_the_compression_ratio_and_named_exactly() {
    let bomb = zip_bomb(3, 4, 10 * 1024 * 1024);
    let started = Instant::now();
    let d = decompose(
        &message_with_attachment("42.zip", "application/zip", &bomb),
        &Limits::default(),
    );
    assert!(started.elapsed() < Duration::from_secs(20));
    assert!(d.is_unscannable());
    let hits = limit_hits(&d);
    let (limit, path) = hits[0];
    assert!(
        matches!(limit, LimitHit::CompressionRatio { ratio, limit: 100 } if *ratio > 100),
        "{limit:?}"
    );
    assert_eq!(
        path,
        "message/attachment[1] \"42.zip\"/lib 0.zip/lib 0.zip/lib 0.zip/0.dat"
    );
    let text = d.findings[0].to_string();
    assert!(
        text.starts_with("compression ratio ")
            && text
                .contains(":1 exceeds limit 100:1 in message/attachment[1] \"42.zip\"/lib 0.zip"),
        "{text}"
    );
    let extracted: u64 = d
        .parts
        .iter()
        .filter(|p| p.role == PartRole::Member)
        .map(Part::size)
        .sum();
    assert!(
        extracted < 10 * 1024 * 1024,
        "bomb content was not inflated into memory"
    );
}

#[test]
fn total_extracted_bytes_limit_stops_a_bomb_that_passes_the_ratio() {
    let bomb = zip_bomb(2, 8, 2 * 1024 * 1024);
    let limits = Limits {
        max_compression_ratio: 100_000,
        max_total_bytes: 8 * 1024 * 1024,
        ..Limits::default()
    };
    let d = decompose(
        &message_with_attachment("b.zip", "application/zip", &bomb),
        &limits,
    );
    let hits = limit_hits(&d);
    assert_eq!(hits.len(), 1);
    assert_eq!(
        hits[0].0,
        &LimitHit::TotalBytes {
            limit: 8 * 1024 * 1024
        }
    );
    let extracted: u64 = d
        .parts
        .iter()
        .filter(|p| p.role == PartRole::Member)
        .map(Part::size)
        .sum();
    assert!(extracted <= 8 * 1024 * 1024);
}

#[test]
fn lying_declared_size_is_caught_while_streaming() {
    // A gzip stream has no trustworthy size field: only streaming with a cap can catch its expansion.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&vec![b'A'; 20 * 1024 * 1024]).unwrap();
    let d = decompose(
        &message_with_attachment("big.txt.gz", "application/gzip", &gz.finish().unwrap()),
        &Limits::default(),
    );
    let hits = limit_hits(&d);
    assert!(matches!(hits[0].0, LimitHit::CompressionRatio { .. }));
    assert_eq!(hits[0].1, "message/attachment[1] \"big.txt.gz\"/big.txt");
}

#[test]
fn deep_archive_nesting_is_stopped_at_max_depth() {
    let mut current = zip_of(&[("core.txt", b"deep")]);
    for i in 0..22 {
        let name = format!("n{i}.zip");
        current = zip_of(&[(name.as_str(), &current)]);
    }
    let d = decompose(
        &message_with_attachment("nest.zip", "application/zip", &current),
        &Limits::default(),
    );
    let hits = limit_hits(&d);
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].0, &LimitHit::Depth { limit: 17 });
    assert!(d.parts.iter().all(|p| p.depth <= 17));
    assert!(d.findings[0].to_string().starts_with(
        "nesting depth exceeds limit 17 in message/attachment[1] \"nest.zip\"/n21.zip/"
    ));
    assert!(d.is_unscannable(), "a depth limit is never a clean result");
}

#[test]
fn clamav_nested_cache_test_file_is_reached_at_the_default_depth() {
    let dir = std::path::Path::new("/usr/share/clamav-testfiles");
    let (Ok(clam), Ok(file)) = (
        std::fs::read(dir.join("clam.exe")),
        std::fs::read(dir.join("clam_cache_emax.tgz")),
    ) else {
        eprintln!(
            "skipped: {} not installed (apt-get install clamav-testfiles)",
            dir.display()
        );
        return;
    };
    // Nine .tgz inside each other (18 containers), as a file given to `portcullis scan`: the
    // default depth reaches the copy of clam.exe that ClamAV's default (17) reaches.
    let raw = [b"\r\n".as_slice(), &file].concat();
    let d = decompose(&raw, &Limits::default());
    assert!(d.parts.iter().any(|p| p.bytes == clam), "{:?}", paths(&d));
    // What lies deeper is reported as a limit, never passed over in silence.
    assert!(matches!(
        limit_hits(&d)[..],
        [(LimitHit::Depth { limit: 17 }, _)]
    ));
    assert!(d.is_unscannable());
}

#[test]
fn many_tiny_files_stop_at_max_files() {
    let names: Vec<String> = (0..3000).map(|i| format!("f{i}.txt")).collect();
    let files: Vec<(&str, &[u8])> = names.iter().map(|n| (n.as_str(), &b"x"[..])).collect();
    let limits = Limits {
        max_files: 1000,
        ..Limits::default()
    };
    let d = decompose(
        &message_with_attachment("many.zip", "application/zip", &zip_of(&files)),
        &limits,
    );
    assert_eq!(
        limit_hits(&d),
        [(
            &LimitHit::Files { limit: 1000 },
            "message/attachment[1] \"many.zip\""
        )]
    );
    assert!(d.parts.len() <= 1000);
}

#[test]
fn time_limit_makes_the_message_unscannable() {
    let limits = Limits {
        max_time: Duration::ZERO,
        ..Limits::default()
    };
    let d = decompose(
        &message_with_attachment("a.zip", "application/zip", &zip_of(&[("a", b"a")])),
        &limits,
    );
    assert!(matches!(limit_hits(&d)[0].0, LimitHit::Time { .. }));
}

#[test]
fn aes_and_zipcrypto_encrypted_zip_members_are_reported() {
    use zip::unstable::write::FileOptionsExt;
    let mut writer = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let aes = zip::write::SimpleFileOptions::default()
        .with_aes_encryption(zip::AesMode::Aes256, "secret");
    writer.start_file("aes.doc", aes).unwrap();
    writer.write_all(b"confidential").unwrap();
    let legacy = zip::write::SimpleFileOptions::default()
        .with_deprecated_encryption(b"secret")
        .unwrap();
    writer.start_file("legacy.doc", legacy).unwrap();
    writer.write_all(b"confidential").unwrap();
    writer
        .start_file("plain.txt", zip::write::SimpleFileOptions::default())
        .unwrap();
    writer.write_all(b"open").unwrap();
    let zip = writer.finish().unwrap().into_inner();
    let d = decompose(
        &message_with_attachment("secret.zip", "application/zip", &zip),
        &Limits::default(),
    );
    assert_eq!(
        d.findings,
        [
            Finding::Encrypted {
                path: PartPath::message().child("attachment[1] \"secret.zip\"/aes.doc")
            },
            Finding::Encrypted {
                path: PartPath::message().child("attachment[1] \"secret.zip\"/legacy.doc")
            },
        ]
    );
    assert!(!d.is_unscannable(), "encryption has its own policy");
    assert_eq!(d.parts.last().unwrap().text.as_deref(), Some("open"));
}

#[test]
fn encrypted_7z_is_reported_with_and_without_encrypted_headers() {
    use sevenz_rust2::encoder_options::AesEncoderOptions;
    for encrypt_header in [false, true] {
        let mut seven = sevenz_rust2::ArchiveWriter::new(Cursor::new(Vec::new())).unwrap();
        seven.set_content_methods(vec![
            AesEncoderOptions::new("secret".into()).into(),
            sevenz_rust2::EncoderMethod::LZMA2.into(),
        ]);
        seven.set_encrypt_header(encrypt_header);
        seven
            .push_archive_entry(
                sevenz_rust2::ArchiveEntry::new_file("x.txt"),
                Some(&b"hidden"[..]),
            )
            .unwrap();
        let seven = seven.finish().unwrap().into_inner();
        let d = decompose(
            &message_with_attachment("s.7z", "application/x-7z-compressed", &seven),
            &Limits::default(),
        );
        assert!(
            matches!(d.findings.as_slice(), [Finding::Encrypted { path }] if path.as_str().starts_with("message/attachment[1] \"s.7z\"")),
            "header encrypted {encrypt_header}: {:?}",
            d.findings
        );
    }
}

#[test]
fn attached_messages_are_walked_as_containers() {
    let inner = message_with_attachment(
        "inner.zip",
        "application/zip",
        &zip_of(&[("evil.exe", b"MZ..")]),
    );
    let raw = format!(
        "From: a@example.com\r\nSubject: fwd\r\nContent-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\n\
         Content-Type: text/plain\r\n\r\nforwarding\r\n--x\r\nContent-Type: message/rfc822; name=\"fwd.eml\"\r\n\
         Content-Disposition: attachment; filename=\"fwd.eml\"\r\n\r\n{}\r\n--x--\r\n",
        String::from_utf8(inner).unwrap()
    );
    let d = decompose(raw.as_bytes(), &Limits::default());
    let exe = d
        .parts
        .iter()
        .find(|p| p.file_name.as_deref() == Some("evil.exe"))
        .expect("member of nested zip");
    assert_eq!(
        exe.path.as_str(),
        "message/attachment[1] \"fwd.eml\"/attachment[1] \"inner.zip\"/evil.exe"
    );
    assert_eq!(exe.carrier.as_str(), "message/attachment[1] \"fwd.eml\"");
    assert_eq!(exe.depth, 2);
    let inner_body = d
        .parts
        .iter()
        .find(|p| p.path.as_str() == "message/attachment[1] \"fwd.eml\"/body[1]")
        .unwrap();
    assert_eq!(inner_body.role, PartRole::Attachment);
}

#[test]
fn base64_encoded_attached_messages_nest_beyond_the_parser_limit_until_max_depth() {
    let mut current = b"From: x@example.com\r\nSubject: core\r\n\r\ncore text\r\n".to_vec();
    for _ in 0..12 {
        current = format!(
            "From: x@example.com\r\nContent-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n",
            base64(&current)
        )
        .into_bytes();
    }
    let limits = Limits {
        max_depth: 6,
        ..Limits::default()
    };
    let d = decompose(&current, &limits);
    assert!(d.parts.iter().any(|p| p.depth == 6));
    assert_eq!(limit_hits(&d)[0].0, &LimitHit::Depth { limit: 6 });
}

mod torture {
    use super::*;

    fn check(raw: &[u8]) -> Decomposition {
        let started = Instant::now();
        let d = decompose(raw, &Limits::default());
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "took {:?}",
            started.elapsed()
        );
        d
    }

    #[test]
    fn missing_closing_boundary_keeps_every_part() {
        let d = check(
            b"Content-Type: multipart/mixed; boundary=zz\r\n\r\n--zz\r\nContent-Type: text/plain\r\n\r\none\r\n\
--zz\r\nContent-Type: application/octet-stream; name=a.bin\r\n\r\nMZ binary\r\n",
        );
        assert_eq!(d.parts.len(), 2);
        assert_eq!(d.parts[1].true_type, FileType::WindowsExecutable);
    }

    #[test]
    fn boundary_that_never_appears_keeps_the_body() {
        let d = check(
            b"Content-Type: multipart/mixed; boundary=nothere\r\n\r\njust text, no parts\r\n",
        );
        assert_eq!(d.parts.len(), 1);
        assert!(d.parts[0].text.as_deref().unwrap().contains("just text"));
    }

    #[test]
    fn multipart_without_boundary_parameter_is_text() {
        let d = check(b"Content-Type: multipart/mixed\r\n\r\n--a\r\nbody\r\n--a--\r\n");
        assert_eq!(d.parts.len(), 1);
    }

    #[test]
    fn bad_base64_is_kept_as_text() {
        let d = check(
            b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: application/pdf; name=x.pdf\r\n\
Content-Transfer-Encoding: base64\r\n\r\n!!!not base64 at all!!!\r\n====\r\n--b--\r\n",
        );
        assert_eq!(d.parts.len(), 1);
        assert_eq!(d.parts[0].file_name.as_deref(), Some("x.pdf"));
    }

    #[test]
    fn wrong_headers_and_unknown_encodings_do_not_lose_the_body() {
        let d = check(
            b"Content-Type: text/plain; charset=no-such-charset\r\nContent-Transfer-Encoding: x-rot13\r\n\
Content-Disposition: ;;;\r\nFrom: <<<>>>\r\n\r\nhello\r\n",
        );
        assert!(d.parts[0].text.as_deref().unwrap().contains("hello"));
    }

    #[test]
    fn nul_bytes_and_bare_lf_are_handled() {
        let d = check(b"Subject: nul\x00here\nContent-Type: text/plain\n\nbody\x00with\x00nuls\n");
        assert_eq!(d.parts.len(), 1);
    }

    #[test]
    fn huge_header_is_bounded() {
        let mut raw = b"Subject: ".to_vec();
        raw.extend(std::iter::repeat_n(b'a', 8 * 1024 * 1024));
        raw.extend_from_slice(b"\r\n\r\nbody\r\n");
        let d = check(&raw);
        assert!(d.subject.unwrap().len() <= Limits::default().max_text_bytes);
        assert!(d.header_text.len() <= Limits::default().max_text_bytes);
    }

    #[test]
    fn deeply_nested_multiparts_do_not_exhaust_the_stack() {
        let mut raw = String::from("Content-Type: multipart/mixed; boundary=b0\r\n\r\n");
        for i in 0..5000 {
            raw.push_str(&format!(
                "--b{i}\r\nContent-Type: multipart/mixed; boundary=b{}\r\n\r\n",
                i + 1
            ));
        }
        raw.push_str("--b5000\r\nContent-Type: text/plain\r\n\r\nleaf\r\n");
        let d = check(raw.as_bytes());
        assert!(
            d.parts
                .iter()
                .any(|p| p.text.as_deref().is_some_and(|t| t.contains("leaf")))
        );
    }

    #[test]
    fn deeply_nested_attached_messages_stop_at_max_depth_without_overflowing_the_stack() {
        let mut raw = String::new();
        for _ in 0..100_000 {
            raw.push_str("Content-Type: message/rfc822\r\n\r\n");
        }
        raw.push_str("Subject: core\r\n\r\ncore\r\n");
        let d = check(raw.as_bytes());
        assert!(
            d.parts
                .iter()
                .all(|p| p.depth <= Limits::default().max_depth)
        );
        assert!(
            limit_hits(&d)
                .iter()
                .any(|(l, _)| matches!(l, LimitHit::Depth { .. }))
        );
    }

    #[test]
    fn no_headers_at_all_becomes_one_body_part() {
        let d = check(b"\r\n\r\n");
        assert!(d.parts.len() <= 1);
        let d = check(b"");
        assert!(d.parts.len() <= 1);
        let d = check(b"\x89PNG binary junk without headers");
        assert_eq!(d.parts.len(), 1);
    }

    #[test]
    fn truncated_and_corrupt_archives_are_damaged_not_fatal() {
        let zip = zip_of(&[("a.txt", &[b'x'; 5000])]);
        let d = check(&message_with_attachment(
            "t.zip",
            "application/zip",
            &zip[..zip.len() / 2],
        ));
        assert!(
            matches!(d.findings.as_slice(), [Finding::Damaged { .. }]),
            "{:?}",
            d.findings
        );
        assert!(d.is_unscannable());
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&[b'y'; 100_000]).unwrap();
        let gz = gz.finish().unwrap();
        let d = check(&message_with_attachment(
            "t.gz",
            "application/gzip",
            &gz[..gz.len() / 2],
        ));
        assert!(
            matches!(d.findings.as_slice(), [Finding::Damaged { .. }]),
            "{:?}",
            d.findings
        );
        let d = check(&message_with_attachment(
            "t.7z",
            "application/x-7z-compressed",
            b"7z\xbc\xaf\x27\x1cgarbage",
        ));
        assert!(
            matches!(d.findings.as_slice(), [Finding::Damaged { .. }]),
            "{:?}",
            d.findings
        );
    }

    #[test]
    fn rar_is_recognised_but_not_opened() {
        let d = check(&message_with_attachment(
            "a.rar",
            "application/octet-stream",
            b"Rar!\x1a\x07\x00rest",
        ));
        assert!(matches!(
            d.findings.as_slice(),
            [Finding::NotOpened {
                format: FileType::Rar,
                ..
            }]
        ));
        assert!(!d.is_unscannable());
    }
}

/// Small deterministic generator so the random-input test needs no extra crate and replays identically.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn ten_thousand_random_inputs_never_panic_or_hang() {
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let limits = Limits {
        max_time: Duration::from_secs(2),
        ..Limits::default()
    };
    let seeds: [&[u8]; 12] = [
        b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n",
        b"Content-Type: message/rfc822\r\n\r\n",
        b"Content-Transfer-Encoding: base64\r\nContent-Type: application/zip\r\n\r\n",
        b"PK\x03\x04",
        b"\x1f\x8b\x08\x00",
        b"7z\xbc\xaf\x27\x1c\x00\x04",
        b"070701",
        b"\xc7\x71\x00\x00",
        b"MSCF\x00\x00\x00\x00",
        b"SZDD\x88\xf0\x27\x33A\x00",
        b"(This file must be converted with BinHex 4.0)\r\n:",
        b"%PDF-1.4\n1 0 obj <</Type/EmbeddedFile/Filter/FlateDecode>>stream\n",
    ];
    let started = Instant::now();
    for i in 0..10_000 {
        let len = (rng.next() % 512) as usize;
        let mut input = seeds[i % seeds.len()].to_vec();
        input.extend((0..len).map(|_| {
            let r = rng.next();
            // Bias towards MIME syntax so the parser goes deep rather than giving up at once.
            match r % 8 {
                0 => b"\r\n-=:;\""
                    .get((r >> 8) as usize % 7)
                    .copied()
                    .unwrap_or(b'-'),
                _ => (r >> 16) as u8,
            }
        }));
        let _ = decompose(&input, &limits);
    }
    assert!(
        started.elapsed() < Duration::from_secs(120),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn a_structure_that_panics_the_mime_parser_becomes_one_damaged_body_part() {
    let raw =
        include_bytes!("../../../../fuzz/regressions/decompose/mail-parser-invalid-part-id.eml");
    let d = decompose(raw, &Limits::default());
    assert!(!d.parts.is_empty(), "the message must still be inspectable");
    assert!(
        d.findings
            .iter()
            .any(|f| matches!(f, Finding::Damaged { .. })),
        "the parser failure must be reported: {:?}",
        d.findings
    );
}

#[test]
fn a_uuencoded_executable_in_a_text_body_is_a_member_with_its_true_type() {
    let mut exe = b"MZ\x90\x00\x03\x00\x00\x00".to_vec();
    exe.extend(std::iter::repeat_n(0u8, 120));
    exe[0x3c] = 0x40;
    let encoded = super::uu::encode("invoice.exe", &exe).replace('\n', "\r\n");
    let raw = format!(
        "From: a@b.test\r\nSubject: old school\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: x-uuencode\r\n\r\n{encoded}"
    );
    let d = decompose(raw.as_bytes(), &Limits::default());
    let member = d
        .parts
        .iter()
        .find(|p| p.file_name.as_deref() == Some("invoice.exe"))
        .unwrap_or_else(|| {
            panic!(
                "no uudecoded member: {:?}",
                d.parts
                    .iter()
                    .map(|p| p.path.to_string())
                    .collect::<Vec<_>>()
            )
        });
    assert_eq!(member.bytes.as_ref(), &exe[..]);
    assert!(
        member.path.to_string().contains("uuencoded"),
        "{}",
        member.path
    );
}

#[test]
fn text_right_after_the_header_fields_without_a_blank_line_is_body_text() {
    for newline in ["\n", "\r\n"] {
        let raw = [
            "From: a@example.org",
            "Subject: no separator",
            "counter to RFC 5322, there's no separating newline here",
            "",
            "second paragraph",
            "",
        ]
        .join(newline);
        let out = decompose(raw.as_bytes(), &Limits::default());
        assert_eq!(out.subject.as_deref(), Some("no separator"));
        let text: String = out.parts.iter().filter_map(|p| p.text.clone()).collect();
        assert!(text.contains("no separating newline here"), "{text:?}");
        assert!(text.contains("second paragraph"), "{text:?}");
        assert!(!out.header_text.contains("separating newline"));
    }
}

#[test]
fn well_formed_headers_and_folded_lines_are_left_alone() {
    assert!(
        with_header_separator(b"Subject: a\r\n folded\r\nTo: b@example.org\r\n\r\nbody").is_none()
    );
    assert!(
        with_header_separator(b"From someone Mon Jan 1 00:00:00 2024\nSubject: x\n\nbody")
            .is_none()
    );
    assert_eq!(
        with_header_separator(b"not a header at all\nSubject: x\n").unwrap(),
        b"\nnot a header at all\nSubject: x\n"
    );
    assert_eq!(
        with_header_separator(b"Subject: x\nbody line\n").unwrap(),
        b"Subject: x\n\nbody line\n"
    );
}

#[test]
fn a_message_attached_as_octet_stream_or_zipped_is_walked_as_mail() {
    let inner = "From: a@example.org\r\nSubject: inner\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"i\"\r\n\r\n--i\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=\"x.bin\"\r\nContent-Transfer-Encoding: base64\r\n\r\naGlkZGVuIHBheWxvYWQ=\r\n--i--\r\n";
    let outer = format!(
        "From: b@example.org\r\nSubject: outer\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"o\"\r\n\r\n--o\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n--o\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=\"saved.eml\"\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n--o--\r\n",
        base64(inner.as_bytes())
    );
    let out = decompose(outer.as_bytes(), &Limits::default());
    assert!(
        out.parts.iter().any(|p| &p.bytes[..] == b"hidden payload"),
        "{:?}",
        out.parts
            .iter()
            .map(|p| p.path.to_string())
            .collect::<Vec<_>>()
    );
    // Ordinary text with a colon in its first line is not taken for mail.
    assert!(!looks_like_mail(b"Note: call me\r\nThanks\r\n\r\n"));
    assert!(looks_like_mail(
        b"From x@y Mon Jan 1 2024\nFrom: x@y\nTo: z@w\n\nhi\n"
    ));
}

/// A cabinet with one MSZIP folder holding `files`.
fn cab_of(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut builder = cab::CabinetBuilder::new();
    let folder = builder.add_folder(cab::CompressionType::MsZip);
    for (name, _) in files {
        folder.add_file(*name);
    }
    let mut writer = builder.build(Cursor::new(Vec::new())).unwrap();
    let mut contents = files.iter();
    while let Some(mut file) = writer.next_file().unwrap() {
        file.write_all(contents.next().unwrap().1).unwrap();
    }
    writer.finish().unwrap().into_inner()
}

/// One sample of each format opened since cpio/CAB/SZDD/BinHex/PDF support, holding `payload`.
fn samples_of_the_newer_formats(payload: &[u8]) -> Vec<(&'static str, Vec<u8>)> {
    vec![
        (
            "a.cpio",
            super::cpio::tests::newc_of(&[("bin/run.exe", payload)]),
        ),
        ("a.cab", cab_of(&[("bin\\run.exe", payload)])),
        ("RUN.EX_", super::szdd::tests::szdd_of(payload, b'E')),
        (
            "a.hqx",
            super::binhex::tests::binhex_of("run.exe", payload, b""),
        ),
        (
            "a.pdf",
            super::pdf::tests::pdf_with_attachment("run.exe", payload, true),
        ),
    ]
}

#[test]
fn cpio_cab_szdd_binhex_and_pdf_members_are_opened_with_their_names() {
    let payload = b"MZ\x90\x00 a small executable \x00\x00\x00\x00\x00\x00";
    let expected = [
        "message/attachment[1] \"a.cpio\"/bin/run.exe",
        "message/attachment[1] \"a.cab\"/bin/run.exe",
        "message/attachment[1] \"RUN.EX_\"/RUN.EXE",
        "message/attachment[1] \"a.hqx\"/run.exe",
        "message/attachment[1] \"a.pdf\"/run.exe",
    ];
    for ((name, sample), expected) in samples_of_the_newer_formats(payload)
        .into_iter()
        .zip(expected)
    {
        let d = decompose(
            &message_with_attachment(name, "application/octet-stream", &sample),
            &Limits::default(),
        );
        assert!(d.findings.is_empty(), "{name}: {:?}", d.findings);
        assert_eq!(paths(&d)[2..], [expected], "{name}");
        assert!(d.parts[1].true_type.is_opened_container(), "{name}");
        let member = &d.parts[2];
        assert_eq!(member.bytes, &payload[..], "{name}");
        assert_eq!(member.true_type, FileType::WindowsExecutable, "{name}");
        assert_eq!(
            member.file_name.as_deref(),
            expected.rsplit('/').next(),
            "{name}"
        );
        assert_eq!(member.role, PartRole::Member, "{name}");
    }
}

#[test]
fn truncated_samples_of_the_newer_formats_never_panic() {
    let payload: Vec<u8> = (0..3000u32).map(|i| (i * 7 % 251) as u8).collect();
    for (name, sample) in samples_of_the_newer_formats(&payload) {
        for cut in (0..sample.len()).step_by(7) {
            let d = decompose(
                &message_with_attachment(name, "application/octet-stream", &sample[..cut]),
                &Limits::default(),
            );
            for part in &d.parts {
                assert!(
                    part.size() <= payload.len().max(sample.len()) as u64,
                    "{name}"
                );
            }
        }
    }
}

#[test]
fn the_newer_formats_respect_the_file_byte_and_ratio_limits() {
    // max_files: a cpio of many tiny files.
    let many: Vec<(String, Vec<u8>)> = (0..50).map(|i| (format!("f{i}"), vec![b'x'])).collect();
    let many: Vec<(&str, &[u8])> = many.iter().map(|(n, d)| (n.as_str(), &d[..])).collect();
    let limits = Limits {
        max_files: 20,
        ..Limits::default()
    };
    let d = decompose(
        &message_with_attachment(
            "m.cpio",
            "application/octet-stream",
            &super::cpio::tests::newc_of(&many),
        ),
        &limits,
    );
    assert!(d.parts.len() <= 20);
    assert!(matches!(
        limit_hits(&d)[..],
        [(LimitHit::Files { limit: 20 }, _)]
    ));

    // max_total_bytes: stored cpio members and a BinHex data fork.
    let limits = Limits {
        max_total_bytes: 64 * 1024,
        ..Limits::default()
    };
    let big = vec![b'A'; 200 * 1024];
    for (name, sample) in [
        ("b.cpio", super::cpio::tests::newc_of(&[("big", &big)])),
        ("b.hqx", super::binhex::tests::binhex_of("big", &big, b"")),
    ] {
        let d = decompose(
            &message_with_attachment(name, "application/octet-stream", &sample),
            &limits,
        );
        assert!(
            matches!(limit_hits(&d)[..], [(LimitHit::TotalBytes { .. }, _)]),
            "{name}: {:?}",
            d.findings
        );
        assert!(d.parts.iter().all(|p| p.role != PartRole::Member), "{name}");
    }

    // max_compression_ratio: deflated zeros in a PDF and in a cabinet.
    let zeros = vec![0u8; 8 * 1024 * 1024];
    for (name, sample) in [
        (
            "z.pdf",
            super::pdf::tests::pdf_with_attachment("zeros", &zeros, true),
        ),
        ("z.cab", cab_of(&[("zeros", &zeros)])),
    ] {
        let d = decompose(
            &message_with_attachment(name, "application/octet-stream", &sample),
            &Limits::default(),
        );
        let hits = limit_hits(&d);
        assert!(
            matches!(hits[..], [(LimitHit::CompressionRatio { .. }, _)]),
            "{name}: {:?}",
            d.findings
        );
        assert_eq!(hits[0].1, format!("message/attachment[1] \"{name}\"/zeros"));
    }
}

#[test]
fn a_cabinet_with_two_members_of_the_same_name_is_damaged() {
    let d = decompose(
        &message_with_attachment(
            "d.cab",
            "application/vnd.ms-cab-compressed",
            &cab_of(&[("same.txt", b"harmless"), ("same.txt", b"MZ hidden")]),
        ),
        &Limits::default(),
    );
    assert!(
        matches!(d.findings[..], [Finding::Damaged { .. }]),
        "{:?}",
        d.findings
    );
    assert!(d.is_unscannable());
}

#[test]
fn clamav_test_files_in_the_newer_formats_yield_clam_exe() {
    let dir = std::path::Path::new("/usr/share/clamav-testfiles");
    let Ok(clam) = std::fs::read(dir.join("clam.exe")) else {
        eprintln!(
            "skipped: {} not installed (apt-get install clamav-testfiles)",
            dir.display()
        );
        return;
    };
    for name in [
        "clam.odc.cpio",
        "clam.newc.cpio",
        "clam.bin-le.cpio",
        "clam.bin-be.cpio",
        "clam.cab",
        "clam.exe.szdd",
        "clam.exe.binhex",
        "clam.pdf",
    ] {
        let file = std::fs::read(dir.join(name)).expect(name);
        let d = decompose(
            &message_with_attachment(name, "application/octet-stream", &file),
            &Limits::default(),
        );
        assert!(d.findings.is_empty(), "{name}: {:?}", d.findings);
        assert!(
            d.parts
                .iter()
                .any(|p| p.role == PartRole::Member && p.bytes == clam),
            "{name}: {:?}",
            paths(&d)
        );
    }
}

#[test]
fn clamav_test_files_in_document_mail_and_installer_formats_yield_clam_exe() {
    let dir = std::path::Path::new("/usr/share/clamav-testfiles");
    let Ok(clam) = std::fs::read(dir.join("clam.exe")) else {
        eprintln!(
            "skipped: {} not installed (apt-get install clamav-testfiles)",
            dir.display()
        );
        return;
    };
    for (name, member) in [
        ("clam.exe.mbox.uu", "uuencoded \"clam.exe\""),
        ("clam.exe.html", "data-uri[1]"),
        ("clam.exe.rtf", "object[1]/clam.exe"),
        ("clam.ole.doc", "[1]Ole10Native/clam.exe"),
        ("clam.ppt", "[1]Ole10Native/clam.exe"),
        ("clam.tnef", "clam.exe"),
        ("clam_IScab_ext.exe", "Disk1/clam.exe"),
        ("clam_IScab_int.exe", "Disk1/data1.hdr/clam.exe"),
        ("clam_ISmsi_ext.exe", "clam.exe409.bmp"),
        ("clam_ISmsi_int.exe", "Data1.cab/clam.exe"),
        ("clam-nsis.exe", "NSIS file[1]"),
        ("clam.arj", "clam.exe"),
        ("clam.chm", "clam.exe.txt"),
        ("clam.sis", "!:/clam.exe"),
        ("clam.impl.zip", "CLAM.EXE"),
    ] {
        let file = std::fs::read(dir.join(name)).expect(name);
        let d = decompose(
            &message_with_attachment(name, "application/octet-stream", &file),
            &Limits::default(),
        );
        assert!(d.findings.is_empty(), "{name}: {:?}", d.findings);
        let found = d
            .parts
            .iter()
            .find(|p| p.role == PartRole::Member && p.bytes == clam);
        assert!(
            found.is_some_and(|p| p.path.as_str().ends_with(member)),
            "{name}: {:?}",
            paths(&d)
        );
    }
}

/// An OLE2 compound file (a Word document's layout) with `data` packaged in an
/// `ObjectPool/_1/\x01Ole10Native` stream as `name`, and a `WordDocument` stream.
fn ole2_with_package(name: &str, data: &[u8]) -> Vec<u8> {
    let mut compound = cfb::CompoundFile::create(Cursor::new(Vec::new())).unwrap();
    compound
        .create_stream("/WordDocument")
        .unwrap()
        .write_all(b"document text")
        .unwrap();
    compound.create_storage_all("/ObjectPool/_1").unwrap();
    let native = super::ole::tests::package_of(name, data);
    let mut stream = compound
        .create_stream("/ObjectPool/_1/\u{1}Ole10Native")
        .unwrap();
    stream
        .write_all(&(native.len() as u32).to_le_bytes())
        .unwrap();
    stream.write_all(&native).unwrap();
    drop(stream);
    compound.flush().unwrap();
    compound.into_inner().into_inner()
}

/// One sample of each document, mail and installer format, holding `payload`, with the end of
/// the path of the member that must come out.
fn samples_of_the_document_and_installer_formats(
    payload: &[u8],
) -> Vec<(&'static str, Vec<u8>, &'static str)> {
    use super::installer::tests::{nsis_of, pe_with_overlay, setup_of, stored_files_of};
    let package = super::ole::tests::package_of("run.exe", payload);
    let html = format!(
        "<html><body><a href=\"data:application/octet-stream;base64,{}\">run</a></body></html>",
        base64(payload).replace("\r\n", "")
    );
    vec![
        (
            "a.rtf",
            super::rtf::tests::rtf_with_object(&super::ole::tests::ole1_of("Package", &package)),
            "/object[1]/run.exe",
        ),
        (
            "a.doc",
            ole2_with_package("run.exe", payload),
            "/ObjectPool/_1/[1]Ole10Native/run.exe",
        ),
        (
            "winmail.dat",
            super::tnef::tests::tnef_of(&[("run.exe", payload)]),
            "/run.exe",
        ),
        (
            "a.arj",
            super::arj::tests::arj_of(&[("run.exe", payload)]),
            "/run.exe",
        ),
        (
            "a.sis",
            super::sis::tests::sis_of("!:\\run.exe", payload),
            "/!:/run.exe",
        ),
        (
            "a.chm",
            super::chm::tests::chm_of(&[("/run.exe", payload)]),
            "/run.exe",
        ),
        ("page.html", html.into_bytes(), "/data-uri[1]"),
        (
            "setup.exe",
            pe_with_overlay(
                &[0xcc; 0x200],
                &stored_files_of(&[("Disk1\\run.exe", payload)]),
            ),
            "/Disk1/run.exe",
        ),
        (
            "nsis.exe",
            pe_with_overlay(&[0xcc; 0x200], &nsis_of(b"script", &[payload], false)),
            "\"nsis.exe\"/NSIS file[1]",
        ),
        (
            "solid.exe",
            pe_with_overlay(&[0xcc; 0x200], &nsis_of(b"script", &[payload], true)),
            "\"solid.exe\"/NSIS file[1]",
        ),
        (
            "msisetup.exe",
            pe_with_overlay(&[0xcc; 0x200], &setup_of(&[("run.exe", payload)])),
            "\"msisetup.exe\"/run.exe",
        ),
    ]
}

#[test]
fn document_mail_and_installer_formats_yield_their_embedded_files() {
    let payload = b"MZ\x90\x00 a small executable \x00\x00\x00\x00\x00\x00";
    for (name, sample, member) in samples_of_the_document_and_installer_formats(payload) {
        let d = decompose(
            &message_with_attachment(name, "application/octet-stream", &sample),
            &Limits::default(),
        );
        assert!(d.findings.is_empty(), "{name}: {:?}", d.findings);
        let found = d
            .parts
            .iter()
            .find(|p| p.role == PartRole::Member && p.bytes == payload[..]);
        let Some(found) = found else {
            panic!("{name}: no member holds the payload: {:?}", paths(&d));
        };
        assert!(
            found.path.as_str().ends_with(member),
            "{name}: {}",
            found.path
        );
        assert_eq!(found.true_type, FileType::WindowsExecutable, "{name}");
    }
}

#[test]
fn truncated_document_mail_and_installer_samples_never_panic() {
    let payload: Vec<u8> = (0..3000u32).map(|i| (i * 7 % 251) as u8).collect();
    for (name, sample, _) in samples_of_the_document_and_installer_formats(&payload) {
        for cut in (0..sample.len()).step_by(7) {
            let d = decompose(
                &message_with_attachment(name, "application/octet-stream", &sample[..cut]),
                &Limits::default(),
            );
            for part in &d.parts {
                assert!(
                    part.size() <= payload.len().max(sample.len()) as u64,
                    "{name} cut at {cut}: {} is {} bytes",
                    part.path,
                    part.size()
                );
            }
        }
    }
}

#[test]
fn the_document_and_installer_formats_respect_the_file_byte_and_ratio_limits() {
    // max_files: a TNEF and an ARJ of many tiny attachments.
    let many: Vec<(String, Vec<u8>)> = (0..50).map(|i| (format!("f{i}"), vec![b'x'])).collect();
    let many: Vec<(&str, &[u8])> = many.iter().map(|(n, d)| (n.as_str(), &d[..])).collect();
    let limits = Limits {
        max_files: 20,
        ..Limits::default()
    };
    for (name, sample) in [
        ("many.dat", super::tnef::tests::tnef_of(&many)),
        ("many.arj", super::arj::tests::arj_of(&many)),
    ] {
        let d = decompose(
            &message_with_attachment(name, "application/octet-stream", &sample),
            &limits,
        );
        assert!(d.parts.len() <= 20, "{name}");
        assert!(
            matches!(limit_hits(&d)[..], [(LimitHit::Files { limit: 20 }, _)]),
            "{name}: {:?}",
            d.findings
        );
    }

    // max_total_bytes: stored members of TNEF, an OLE2 stream and an installer overlay.
    let limits = Limits {
        max_total_bytes: 64 * 1024,
        ..Limits::default()
    };
    let big = vec![b'A'; 200 * 1024];
    for (name, sample) in [
        ("big.dat", super::tnef::tests::tnef_of(&[("big", &big)])),
        ("big.doc", ole2_with_package("big", &big)),
        (
            "big.exe",
            super::installer::tests::pe_with_overlay(
                &[0xcc; 0x200],
                &super::installer::tests::stored_files_of(&[("Disk1\\big", &big)]),
            ),
        ),
    ] {
        let d = decompose(
            &message_with_attachment(name, "application/octet-stream", &sample),
            &limits,
        );
        assert!(
            matches!(limit_hits(&d)[..], [(LimitHit::TotalBytes { .. }, _)]),
            "{name}: {:?}",
            d.findings
        );
        assert!(
            d.parts
                .iter()
                .all(|p| p.role != PartRole::Member || p.size() < 64 * 1024),
            "{name}"
        );
    }

    // max_compression_ratio: zlib-compressed zeros in an InstallShield setup.
    let zeros = vec![0u8; 8 * 1024 * 1024];
    let sample = super::installer::tests::pe_with_overlay(
        &[0xcc; 0x200],
        &super::installer::tests::setup_of(&[("zeros", &zeros)]),
    );
    let d = decompose(
        &message_with_attachment("z.exe", "application/octet-stream", &sample),
        &Limits::default(),
    );
    let hits = limit_hits(&d);
    assert!(
        matches!(hits[..], [(LimitHit::CompressionRatio { .. }, _)]),
        "{:?}",
        d.findings
    );
    assert_eq!(hits[0].1, "message/attachment[1] \"z.exe\"/zeros");
}

#[test]
fn a_plain_executable_at_the_depth_limit_is_no_unopened_container() {
    // An executable without installer data or embedded archives is a leaf: reaching it at the
    // depth limit must not make the message unscannable.
    let exe = super::installer::tests::pe_with_overlay(&[0xcc; 0x200], b"");
    let mut current = zip_of(&[("tool.exe", &exe)]);
    let limits = Limits {
        max_depth: 2,
        ..Limits::default()
    };
    current = zip_of(&[("inner.zip", &current)]);
    let d = decompose(
        &message_with_attachment("outer.zip", "application/zip", &current),
        &limits,
    );
    assert!(d.parts.iter().any(|p| p.bytes == exe));
    assert!(d.findings.is_empty(), "{:?}", d.findings);
}

#[test]
fn random_bytes_behind_document_and_installer_signatures_never_panic() {
    let mut rng = XorShift(0x5eed_1234_abcd_ef01);
    let prefixes: [&[u8]; 8] = [
        b"{\\rtf1{\\object{\\*\\objdata 0105000002000000",
        b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1",
        super::tnef::MAGIC,
        b"\x60\xea\x20\x00",
        b"ITSF\x03\x00\x00\x00",
        b"\x00\x00\x00\x01\x12\x3a\x00\x10\x19\x04\x00\x10",
        b"<a href=\"data:;base64,",
        b"MZ",
    ];
    for round in 0..2000 {
        let prefix = prefixes[round % prefixes.len()];
        let len = (rng.next() % 4096) as usize;
        let mut data = prefix.to_vec();
        data.extend((0..len).map(|_| rng.next() as u8));
        let started = Instant::now();
        let d = decompose(
            &message_with_attachment("x.bin", "application/octet-stream", &data),
            &Limits::default(),
        );
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(d.parts.iter().all(|p| p.size() <= 64 * 1024 * 1024));
    }
}
