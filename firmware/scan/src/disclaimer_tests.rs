use super::*;

const TEXT: &str = "Confidential: meant for the addressee only.\nExample Corp, 1 Example Street";

fn internal(domain: &str) -> bool {
    InternalDomains::new(["corp.example", "corp2.example"]).contains(domain)
}

fn outbound(disclaimer: &Disclaimer, raw: &[u8]) -> DisclaimerOutcome {
    disclaimer.apply(
        raw,
        "alice@Corp.Example",
        &[
            "bob@corp.example".to_owned(),
            "x@outside.example".to_owned(),
        ],
        &internal,
    )
}

/// Applies [`TEXT`] and returns the new message and the edits; panics when nothing was added.
fn added(raw: &str) -> (Vec<u8>, Vec<DisclaimerEdit>) {
    added_with(&Disclaimer::new(TEXT).unwrap(), raw.as_bytes())
}

fn added_with(disclaimer: &Disclaimer, raw: &[u8]) -> (Vec<u8>, Vec<DisclaimerEdit>) {
    match outbound(disclaimer, raw) {
        DisclaimerOutcome::Added { message, edits, .. } => {
            assert_only_text_parts_changed(raw, &message, edits.len());
            (message, edits)
        }
        DisclaimerOutcome::Untouched(why) => panic!("not added: {why}"),
    }
}

fn untouched(raw: &str) -> NotAdded {
    match outbound(&Disclaimer::new(TEXT).unwrap(), raw.as_bytes()) {
        DisclaimerOutcome::Untouched(why) => why,
        DisclaimerOutcome::Added { .. } => panic!("changed"),
    }
}

/// Every leaf part's byte range, in message order.
fn leaf_spans(raw: &[u8]) -> Vec<Range<usize>> {
    let message = MessageParser::default().parse(raw).unwrap();
    message
        .parts
        .iter()
        .filter(|p| !matches!(p.body, PartType::Multipart(_)))
        .map(|p| p.offset_header as usize..p.offset_end as usize)
        .collect()
}

/// Outside the changed leaf parts, the message is byte for byte the same; exactly `changed` leaves differ.
fn assert_only_text_parts_changed(before: &[u8], after: &[u8], changed: usize) {
    let (a, b) = (leaf_spans(before), leaf_spans(after));
    assert_eq!(a.len(), b.len(), "same MIME structure");
    let (mut at_a, mut at_b, mut differing) = (0, 0, 0);
    for (ra, rb) in a.iter().zip(&b) {
        assert_eq!(
            String::from_utf8_lossy(&before[at_a..ra.start]),
            String::from_utf8_lossy(&after[at_b..rb.start]),
            "bytes between parts changed"
        );
        if before[ra.clone()] != after[rb.clone()] {
            differing += 1;
        }
        (at_a, at_b) = (ra.end, rb.end);
    }
    assert_eq!(
        before[at_a..],
        after[at_b..],
        "bytes after the last part changed"
    );
    assert_eq!(differing, changed);
}

/// The decoded (UTF-8) texts of the inline text parts of a message, as mail-parser reads them.
fn texts(raw: &[u8]) -> Vec<String> {
    let message = MessageParser::default().parse(raw).unwrap();
    message
        .parts
        .iter()
        .filter_map(|p| match &p.body {
            PartType::Text(t) | PartType::Html(t) => Some(t.replace("\r\n", "\n")),
            _ => None,
        })
        .collect()
}

fn count(haystack: &str, needle: &str) -> usize {
    haystack.matches(needle).count()
}

const FIRST: &str = "Confidential: meant for the addressee only.";

#[test]
fn single_part_7bit_plain_text_gets_the_disclaimer_once_at_the_end() {
    let raw = "From: alice@corp.example\r\nTo: x@outside.example\r\nSubject: hi\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\nHello Bob,\r\nsee you.\r\n";
    let (out, edits) = added(raw);
    assert_eq!(edits.len(), 1);
    assert_eq!(
        edits[0],
        DisclaimerEdit {
            section: "1".into(),
            kind: TextKind::Plain,
            charset: "us-ascii".into(),
            charset_was: None,
            encoding: "7bit".into(),
            encoding_was: None
        }
    );
    let out = String::from_utf8(out).unwrap();
    assert!(out.ends_with("Hello Bob,\r\nsee you.\r\n\r\nConfidential: meant for the addressee only.\r\nExample Corp, 1 Example Street\r\n"), "{out}");
    assert_eq!(count(&out, FIRST), 1);
    assert!(
        out.starts_with(&raw[..raw.find("\r\n\r\n").unwrap() + 4]),
        "header unchanged"
    );
}

#[test]
fn quoted_printable_latin1_text_keeps_its_charset_and_encoding() {
    let raw = "From: a@corp.example\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nGr=FC=DFe aus K=F6ln, a long line that goes on and on and on and on and on a=\r\nnd on\r\n";
    let (out, edits) = added(raw);
    assert_eq!(
        (
            edits[0].charset.as_str(),
            edits[0].charset_was.clone(),
            edits[0].encoding.as_str()
        ),
        ("iso-8859-1", None, "quoted-printable")
    );
    let text = &texts(&out)[0];
    assert!(text.starts_with("Grüße aus Köln, a long line that goes on and on and on and on and on and on\n\nConfidential"), "{text}");
    assert_eq!(count(text, FIRST), 1);
    assert!(
        String::from_utf8(out)
            .unwrap()
            .contains("Content-Type: text/plain; charset=iso-8859-1\r\n")
    );
}

#[test]
fn base64_utf8_text_is_reencoded_in_76_character_lines() {
    let body = BASE64.encode("Hallo Jürgen,\r\nbis morgen.\r\n".repeat(10));
    let raw = format!(
        "From: a@corp.example\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n",
        body.as_bytes()
            .chunks(76)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect::<Vec<_>>()
            .join("\r\n")
    );
    let (out, edits) = added(&raw);
    assert_eq!(edits[0].encoding, "base64");
    let out_text = String::from_utf8(out.clone()).unwrap();
    let body_out = &out_text[out_text.find("\r\n\r\n").unwrap() + 4..];
    assert!(body_out.ends_with("\r\n"));
    assert!(body_out.split("\r\n").all(|l| l.len() <= 76));
    let text = &texts(&out)[0];
    assert!(text.starts_with(&"Hallo Jürgen,\nbis morgen.\n".repeat(10)));
    assert!(text.ends_with(
        "\n\nConfidential: meant for the addressee only.\nExample Corp, 1 Example Street\n"
    ));
}

#[test]
fn eight_bit_utf8_text_stays_eight_bit() {
    let raw = "From: a@corp.example\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=UTF-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nÇa va? Très bien.";
    let (out, edits) = added_with(
        &Disclaimer::new("Vertraulich — nur für den Empfänger.").unwrap(),
        raw.as_bytes(),
    );
    assert_eq!(
        (edits[0].encoding.as_str(), edits[0].encoding_was.as_deref()),
        ("8bit", None)
    );
    assert!(
        String::from_utf8(out)
            .unwrap()
            .ends_with("Ça va? Très bien.\r\n\r\nVertraulich — nur für den Empfänger.\r\n")
    );
}

#[test]
fn text_whose_charset_cannot_write_the_disclaimer_is_converted_to_utf8() {
    let raw = "From: a@corp.example\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=\"ISO-8859-1\"; format=flowed\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nGr=FC=DFe\r\n";
    let (out, edits) = added_with(
        &Disclaimer::new("請求書 confidential").unwrap(),
        raw.as_bytes(),
    );
    assert_eq!(edits[0].charset, "utf-8");
    assert_eq!(edits[0].charset_was.as_deref(), Some("iso-8859-1"));
    let out_text = String::from_utf8(out.clone()).unwrap();
    assert!(
        out_text.contains("Content-Type: text/plain; charset=utf-8; format=flowed\r\n"),
        "{out_text}"
    );
    assert_eq!(out_text.matches("Content-Type").count(), 1);
    assert_eq!(texts(&out)[0], "Grüße\n\n請求書 confidential\n");
}

#[test]
fn ascii_7bit_text_with_a_non_ascii_disclaimer_becomes_utf8_quoted_printable() {
    let raw = "From: a@corp.example\r\nSubject: no MIME headers at all\r\n\r\nplain old mail\r\n";
    let (out, edits) = added_with(
        &Disclaimer::new("© Example Corp — vertraulich").unwrap(),
        raw.as_bytes(),
    );
    assert_eq!(edits[0].charset_was.as_deref(), Some("us-ascii"));
    assert_eq!(
        (edits[0].encoding.as_str(), edits[0].encoding_was.as_deref()),
        ("quoted-printable", Some("7bit"))
    );
    let out_text = String::from_utf8(out.clone()).unwrap();
    assert!(out.is_ascii());
    let head = &out_text[..out_text.find("\r\n\r\n").unwrap()];
    assert_eq!(
        head,
        "From: a@corp.example\r\nSubject: no MIME headers at all\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\nMIME-Version: 1.0"
    );
    assert_eq!(
        texts(&out)[0],
        "plain old mail\n\n© Example Corp — vertraulich\n"
    );
}

#[test]
fn disclaimer_line_too_long_for_7bit_switches_the_part_to_quoted_printable() {
    let long = "x".repeat(1000);
    let raw = "From: a@corp.example\r\nContent-Type: text/plain\r\n\r\nhi\r\n";
    let (out, edits) = added_with(&Disclaimer::new(&long).unwrap(), raw.as_bytes());
    assert_eq!(edits[0].encoding, "quoted-printable");
    assert!(
        String::from_utf8(out.clone())
            .unwrap()
            .split("\r\n")
            .all(|l| l.len() <= 76)
    );
    assert_eq!(texts(&out)[0], format!("hi\n\n{long}\n"));
}

#[test]
fn html_gets_the_escaped_disclaimer_inside_the_body_element() {
    let raw = "From: a@corp.example\r\nMIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<html><body><p>Hello</p></BODY></html>\r\n";
    let (out, edits) = added_with(
        &Disclaimer::new("Tom & Jerry <legal@corp.example>\n\"quoted\"").unwrap(),
        raw.as_bytes(),
    );
    assert_eq!(edits[0].kind, TextKind::Html);
    let out = String::from_utf8(out).unwrap();
    assert!(out.ends_with("<html><body><p>Hello</p>\r\n<p class=\"disclaimer\">Tom &amp; Jerry &lt;legal@corp.example&gt;<br>\r\n&quot;quoted&quot;</p>\r\n</BODY></html>\r\n"), "{out}");
}

#[test]
fn html_without_a_body_element_gets_the_disclaimer_appended() {
    let raw = "From: a@corp.example\r\nContent-Type: text/html\r\n\r\n<p>Hello</p>";
    let (out, _) = added(raw);
    assert!(String::from_utf8(out).unwrap().ends_with("<p>Hello</p>\r\n<p class=\"disclaimer\">Confidential: meant for the addressee only.<br>\r\nExample Corp, 1 Example Street</p>\r\n"));
}

#[test]
fn html_in_a_charset_that_cannot_write_the_disclaimer_uses_character_references() {
    let raw = "From: a@corp.example\r\nContent-Type: text/html; charset=iso-8859-1\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n<body>K=F6ln</body>\r\n";
    let (out, edits) = added_with(&Disclaimer::new("請 ü").unwrap(), raw.as_bytes());
    assert_eq!(
        (edits[0].charset.as_str(), edits[0].charset_was.clone()),
        ("iso-8859-1", None)
    );
    let html = &texts(&out)[0];
    assert!(
        html.contains("Köln\n<p class=\"disclaimer\">&#35531; ü</p>\n</body>"),
        "{html}"
    );
}

const ALTERNATIVE: &str = "From: a@corp.example\r\nMIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary=\"alt\"\r\n\r\npreamble\r\n--alt\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nHello =E2=82=AC\r\n--alt\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\nPGh0bWw+PGJvZHk+SGVsbG8g4oKsPC9ib2R5PjwvaHRtbD4=\r\n--alt--\r\nepilogue\r\n";

#[test]
fn both_alternatives_of_multipart_alternative_get_the_disclaimer_once() {
    let (out, edits) = added(ALTERNATIVE);
    assert_eq!(
        edits
            .iter()
            .map(|e| (e.section.as_str(), e.kind))
            .collect::<Vec<_>>(),
        vec![("1", TextKind::Plain), ("2", TextKind::Html)]
    );
    let texts = texts(&out);
    assert_eq!(texts[0], format!("Hello €\n\n{}\n", TEXT));
    assert!(
        texts[1].starts_with("<html><body>Hello €\n<p class=\"disclaimer\">"),
        "{}",
        texts[1]
    );
    assert!(texts[1].ends_with("</p>\n</body></html>"));
    for t in &texts {
        assert_eq!(count(t, FIRST), 1);
    }
}

#[test]
fn multipart_mixed_changes_the_body_but_never_the_attachments() {
    let raw = "From: a@corp.example\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b1\r\n\r\n--b1\r\nContent-Type: text/plain\r\n\r\nSee attached.\r\n--b1\r\nContent-Type: text/plain; name=notes.txt\r\nContent-Disposition: attachment; filename=notes.txt\r\n\r\nattached notes\r\n--b1\r\nContent-Type: message/rfc822\r\n\r\nFrom: x@y\r\nSubject: fwd\r\n\r\nforwarded text\r\n--b1\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n--b1--\r\n";
    let (out, edits) = added(raw);
    assert_eq!(edits.len(), 1);
    assert_eq!(edits[0].section, "1");
    let out = String::from_utf8(out).unwrap();
    assert_eq!(count(&out, FIRST), 1);
    assert!(out.contains("See attached.\r\n\r\nConfidential: meant for the addressee only.\r\nExample Corp, 1 Example Street\r\n\r\n--b1\r\n"));
}

#[test]
fn nested_mixed_alternative_related_changes_plain_and_html_only() {
    let raw = "From: a@corp.example\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"m\"\r\n\r\n--m\r\nContent-Type: multipart/alternative; boundary=\"a\"\r\n\r\n--a\r\nContent-Type: text/plain; charset=windows-1252\r\nContent-Transfer-Encoding: 8bit\r\n\r\nCaf\u{e9}\r\n--a\r\nContent-Type: multipart/related; boundary=\"r\"\r\n\r\n--r\r\nContent-Type: text/html; charset=us-ascii\r\n\r\n<html><body><img src=\"cid:logo\"></body></html>\r\n--r\r\nContent-Type: image/png\r\nContent-ID: <logo>\r\nContent-Transfer-Encoding: base64\r\n\r\niVBORw0KGgo=\r\n--r--\r\n\r\n--a--\r\n\r\n--m\r\nContent-Type: text/html; name=a.html\r\nContent-Disposition: attachment\r\n\r\n<html><body>attachment</body></html>\r\n--m--\r\n";
    let bytes: Vec<u8> = raw.chars().map(|c| c as u32 as u8).collect();
    let (out, edits) = added_with(&Disclaimer::new(TEXT).unwrap(), &bytes);
    assert_eq!(
        edits.iter().map(|e| e.section.as_str()).collect::<Vec<_>>(),
        vec!["1.1", "1.2.1"]
    );
    let texts = texts(&out);
    assert_eq!(texts[0], format!("Café\n\n{TEXT}\n"));
    assert_eq!(count(&texts[1], FIRST), 1);
    assert_eq!(
        count(&texts[2], FIRST),
        0,
        "the attached HTML file is untouched"
    );
}

#[test]
fn message_stored_with_lf_line_endings_keeps_them() {
    let raw = "From: a@corp.example\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: quoted-printable\n\nline one\nline =C3=BC\n";
    let (out, _) = added(raw);
    let out = String::from_utf8(out).unwrap();
    assert!(!out.contains('\r'), "{out:?}");
    assert!(out.ends_with("line one\nline =C3=BC\n\nConfidential: meant for the addressee only.\nExample Corp, 1 Example Street\n"), "{out:?}");
}

#[test]
fn inbound_mail_is_never_changed() {
    let d = Disclaimer::new(TEXT).unwrap();
    let raw = b"From: x@outside.example\r\n\r\nhello\r\n";
    let inbound = d.apply(
        raw,
        "x@outside.example",
        &["alice@corp.example".to_owned()],
        &internal,
    );
    assert_eq!(inbound, DisclaimerOutcome::Untouched(NotAdded::Inbound));
    let internal_only = d.apply(
        raw,
        "alice@corp.example",
        &["bob@corp2.example".to_owned()],
        &internal,
    );
    assert_eq!(
        internal_only,
        DisclaimerOutcome::Untouched(NotAdded::NoExternalRecipient)
    );
    let bounce = d.apply(raw, "", &["x@outside.example".to_owned()], &internal);
    assert_eq!(bounce, DisclaimerOutcome::Untouched(NotAdded::NullSender));
    let relayed = d.apply(
        raw,
        "x@corp.example.evil.test",
        &["y@outside.example".to_owned()],
        &internal,
    );
    assert_eq!(relayed, DisclaimerOutcome::Untouched(NotAdded::Inbound));
}

#[test]
fn signed_mail_is_never_changed() {
    let smime = "From: a@corp.example\r\nMIME-Version: 1.0\r\nContent-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; micalg=sha-256; boundary=s\r\n\r\n--s\r\nContent-Type: text/plain\r\n\r\nsigned text\r\n--s\r\nContent-Type: application/pkcs7-signature\r\n\r\nMIAGCSqGSIb3DQEHAqCAMIACAQEx\r\n--s--\r\n";
    assert_eq!(
        untouched(smime),
        NotAdded::Signed("multipart/signed".into())
    );
    let opaque = "From: a@corp.example\r\nContent-Type: application/pkcs7-mime; smime-type=signed-data; name=smime.p7m\r\nContent-Transfer-Encoding: base64\r\n\r\nMIAGCSqGSIb3DQEHAqCAMIACAQEx\r\n";
    assert_eq!(
        untouched(opaque),
        NotAdded::Signed("application/pkcs7-mime".into())
    );
    let inline = "From: a@corp.example\r\n\r\n-----BEGIN PGP SIGNED MESSAGE-----\r\nHash: SHA256\r\n\r\nhello\r\n-----BEGIN PGP SIGNATURE-----\r\n";
    assert_eq!(untouched(inline), NotAdded::Signed("inline PGP".into()));
    let dkim = "DKIM-Signature: v=1; a=rsa-sha256; d=corp.example; b=abc\r\nFrom: a@corp.example\r\n\r\nhello\r\n";
    assert_eq!(untouched(dkim), NotAdded::DkimSigned);
}

#[test]
fn encrypted_mail_is_never_changed() {
    let pgp = "From: a@corp.example\r\nContent-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=e\r\n\r\n--e\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n--e\r\nContent-Type: application/octet-stream\r\n\r\n-----BEGIN PGP MESSAGE-----\r\n--e--\r\n";
    assert_eq!(
        untouched(pgp),
        NotAdded::Encrypted("multipart/encrypted".into())
    );
    let smime = "From: a@corp.example\r\nContent-Type: application/pkcs7-mime; smime-type=enveloped-data\r\nContent-Transfer-Encoding: base64\r\n\r\nMIAGCSqGSIb3DQEHA6CAMIACAQAx\r\n";
    assert!(matches!(untouched(smime), NotAdded::Encrypted(_)));
    assert!(
        NotAdded::Encrypted("application/pkcs7-mime".into())
            .to_string()
            .contains("encrypted")
    );
}

#[test]
fn message_with_only_attachments_is_reported_as_having_no_text_body() {
    let raw = "From: a@corp.example\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n";
    assert_eq!(untouched(raw), NotAdded::NoTextBody);
}

#[test]
fn part_in_an_unknown_charset_is_skipped_and_reported() {
    let raw =
        "From: a@corp.example\r\nContent-Type: text/plain; charset=x-klingon\r\n\r\nqapla'\r\n";
    match untouched(raw) {
        NotAdded::NoUsablePart(skipped) => {
            assert_eq!(
                skipped,
                vec![SkippedPart {
                    section: "1".into(),
                    reason: "charset \"x-klingon\" is not supported".into()
                }]
            )
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn disclaimer_of_1001_characters_is_rejected_and_1000_accepted() {
    assert_eq!(
        Disclaimer::new(&"é".repeat(1001)),
        Err(DisclaimerError::TooLong {
            chars: 1001,
            max: 1000
        })
    );
    assert!(Disclaimer::new(&"é".repeat(1000)).is_ok());
    let config = DisclaimerConfig {
        text: "a".repeat(1001),
    };
    assert!(
        config
            .compile()
            .unwrap_err()
            .to_string()
            .contains("1001 characters; at most 1000")
    );
}

#[test]
fn disclaimer_with_control_characters_is_rejected() {
    assert_eq!(
        Disclaimer::new("a\u{1b}[31m"),
        Err(DisclaimerError::ControlCharacter { code: 0x1b })
    );
    assert_eq!(
        Disclaimer::new("line one  \r\n\tline two\n\n")
            .unwrap()
            .text(),
        "line one\n\tline two"
    );
}

#[test]
fn disclaimer_config_defaults_to_off_and_refuses_unknown_keys() {
    assert_eq!(DisclaimerConfig::default().compile(), Ok(None));
    let config: DisclaimerConfig = toml::from_str("text = \"Confidential\"").unwrap();
    assert_eq!(config.compile().unwrap().unwrap().text(), "Confidential");
    assert!(toml::from_str::<DisclaimerConfig>("texts = \"x\"").is_err());
}

#[test]
fn internal_domains_match_exactly_ignoring_case_and_trailing_dot() {
    let domains = InternalDomains::new(["Corp.Example."]);
    assert!(domains.contains("corp.example"));
    assert!(domains.contains("CORP.EXAMPLE."));
    assert!(!domains.contains("sub.corp.example"));
    assert!(!domains.contains("corp.example.evil"));
}
