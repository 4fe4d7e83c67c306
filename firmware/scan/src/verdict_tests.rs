//! Decomposition and policy together: each hostile message with the verdict an admin should see.

use crate::decompose::tests::{message_with_attachment, zip_of};
use crate::*;

fn verdict(policy: Policy, raw: &[u8]) -> Verdict {
    let compiled = CompiledPolicy::compile(policy).expect("policy compiles");
    compiled.evaluate(&decompose(raw, &Limits::default()))
}

fn text_message(subject: &str, body: &str) -> Vec<u8> {
    format!("From: a@example.com\r\nTo: b@example.org\r\nSubject: {subject}\r\n\r\n{body}\r\n")
        .into_bytes()
}

#[test]
fn clean_message_is_delivered_without_reasons() {
    let v = verdict(Policy::default(), &text_message("hello", "lunch at noon?"));
    assert_eq!(v.action, Action::Deliver);
    assert!(v.reasons.is_empty());
}

#[test]
fn renamed_executable_is_blocked_by_true_type() {
    let v = verdict(
        Policy::default(),
        &message_with_attachment("notes.txt", "text/plain", b"MZ\x90\x00\x03\x00"),
    );
    assert_eq!(v.action, Action::StripPart);
    assert_eq!(
        v.explain(),
        [
            "\"notes.txt\" is really a Windows executable (blocked type) in message/attachment[1] \"notes.txt\" -> strip the attachment"
        ]
    );
    assert_eq!(
        v.parts_to_strip()[0].as_str(),
        "message/attachment[1] \"notes.txt\""
    );
}

#[test]
fn double_extension_is_named_as_such() {
    let v = verdict(
        Policy::default(),
        &message_with_attachment("invoice.pdf.exe", "application/pdf", b"%PDF-1.4"),
    );
    assert!(
        matches!(&v.reasons[0].rule, RuleRef::DoubleExtension { extension, .. } if extension == "exe")
    );
    assert!(v.explain()[0].starts_with(
        "file name \"invoice.pdf.exe\" has a double extension ending in blocked .exe"
    ));
    let v = verdict(
        Policy::default(),
        &message_with_attachment("setup.exe", "application/octet-stream", b"x"),
    );
    assert!(matches!(
        &v.reasons[0].rule,
        RuleRef::BlockedExtension { .. }
    ));
    let v = verdict(
        Policy::default(),
        &message_with_attachment("run.vbs. ", "text/plain", b"x"),
    );
    assert!(
        matches!(&v.reasons[0].rule, RuleRef::BlockedExtension { extension, .. } if extension == "vbs")
    );
}

#[test]
fn blocked_name_inside_an_archive_strips_the_archive() {
    let zip = zip_of(&[
        ("docs/readme.txt", b"hi"),
        ("docs/payload.scr", b"not really"),
    ]);
    let v = verdict(
        Policy::default(),
        &message_with_attachment("docs.zip", "application/zip", &zip),
    );
    assert_eq!(v.reasons.len(), 1);
    assert_eq!(
        v.reasons[0].part.as_ref().unwrap().as_str(),
        "message/attachment[1] \"docs.zip\"/docs/payload.scr"
    );
    assert_eq!(
        v.parts_to_strip()[0].as_str(),
        "message/attachment[1] \"docs.zip\""
    );
    let mut policy = Policy::default();
    policy.file_names.inside_archives = false;
    assert_eq!(
        verdict(
            policy,
            &message_with_attachment("docs.zip", "application/zip", &zip)
        )
        .action,
        Action::Deliver
    );
}

#[test]
fn file_name_wildcards_and_right_to_left_override_are_blocked() {
    let mut policy = Policy::default();
    policy.file_names.patterns = vec!["invoice_??.zip".into()];
    let v = verdict(
        policy,
        &message_with_attachment(
            "INVOICE_42.zip",
            "application/zip",
            &zip_of(&[("a.txt", b"a")]),
        ),
    );
    assert!(matches!(
        &v.reasons[0].rule,
        RuleRef::FileNamePattern { .. }
    ));
    let v = verdict(
        Policy::default(),
        &message_with_attachment("photo\u{202e}gpj.scr", "image/jpeg", b"x"),
    );
    assert!(matches!(&v.reasons[0].rule, RuleRef::BidiOverride { .. }));
}

#[test]
fn subject_wildcards_apply_their_action() {
    let policy = Policy {
        subjects: SubjectPolicy {
            patterns: vec!["*you have won*".into(), "re: invoice ????".into()],
            action: Action::Forward {
                to: "abuse@example.com".into(),
            },
        },
        ..Policy::default()
    };
    let compiled = CompiledPolicy::compile(policy).unwrap();
    let check = |subject: &str| {
        compiled.evaluate(&decompose(&text_message(subject, "x"), &Limits::default()))
    };
    let v = check("Congratulations, YOU HAVE WON a prize");
    assert_eq!(
        v.action,
        Action::Forward {
            to: "abuse@example.com".into()
        }
    );
    assert_eq!(v.forward_to(), ["abuse@example.com"]);
    assert_eq!(
        v.explain()[0],
        "subject \"Congratulations, YOU HAVE WON a prize\" matches blocked pattern \"*you have won*\" -> forward a copy to abuse@example.com"
    );
    assert_eq!(check("Re: Invoice 2024").reasons.len(), 1);
    assert!(check("Re: Invoice 20245").reasons.is_empty());
    assert!(check("hello").reasons.is_empty());
}

#[test]
fn content_rules_all_any_not_and_wildcards_decide_the_verdict() {
    let policy: Policy = toml::from_str(
        r#"
        [[content_rules]]
        name = "pharma"
        match = "any"
        terms = ["v*gra", "c?alis"]
        not_terms = ["medical newsletter"]
        action = "quarantine"

        [[content_rules]]
        name = "wire fraud"
        match = "all"
        terms = ["wire transfer", "urgent"]
        scopes = ["subject", "body"]
        action = { tag = { subject_prefix = "[FRAUD?]" } }

        [[content_rules]]
        name = "literal star"
        terms = ['100\% free\*']
        scopes = ["attachments"]
        action = "drop"
    "#,
    )
    .unwrap();
    let compiled = CompiledPolicy::compile(policy).unwrap();
    let run = |raw: &[u8]| compiled.evaluate(&decompose(raw, &Limits::default()));

    let v = run(&text_message("offer", "Buy V1AGRA today"));
    assert_eq!(v.action, Action::Quarantine);
    assert_eq!(
        v.explain(),
        ["content rule \"pharma\" matched \"v*gra\" in message/body[1] -> quarantine"]
    );

    assert_eq!(
        run(&text_message(
            "offer",
            "viagra\r\nfrom your medical   newsletter"
        ))
        .action,
        Action::Deliver
    );

    let v = run(&text_message("URGENT", "please make the wire\r\ntransfer"));
    assert_eq!(
        v.action,
        Action::Tag {
            header: None,
            subject_prefix: Some("[FRAUD?]".into())
        }
    );
    assert_eq!(v.tags(), [(None, Some("[FRAUD?]"))]);
    assert!(
        v.explain()[0].contains("\"urgent\" in subject"),
        "{:?}",
        v.explain()
    );
    assert_eq!(
        run(&text_message("hello", "wire transfer")).action,
        Action::Deliver,
        "all terms needed"
    );

    let zip = zip_of(&[("promo.txt", b"Now 100% FREE* for you")]);
    let v = run(&message_with_attachment(
        "promo.zip",
        "application/zip",
        &zip,
    ));
    assert_eq!(v.action, Action::Drop);
    assert!(v.explain()[0].contains("in message/attachment[1] \"promo.zip\"/promo.txt"));
    let zip = zip_of(&[("promo.txt", b"Now 100% FREE for you")]);
    assert_eq!(
        run(&message_with_attachment(
            "promo.zip",
            "application/zip",
            &zip
        ))
        .action,
        Action::Deliver
    );
}

#[test]
fn scan_scope_limits_which_attachments_content_rules_read() {
    let mut policy = Policy {
        content_rules: vec![ContentRule {
            name: "secret".into(),
            match_mode: MatchMode::Any,
            terms: vec!["top secret".into()],
            not_terms: vec![],
            scopes: vec![Scope::Attachments],
            action: Action::Hold,
        }],
        ..Policy::default()
    };
    let raw = message_with_attachment("plan.txt", "text/plain", b"TOP SECRET plan");
    assert_eq!(verdict(policy.clone(), &raw).action, Action::Hold);
    policy.scan = ScanScope {
        mode: ScanMode::AllBut,
        extensions: vec!["txt".into()],
    };
    assert_eq!(verdict(policy.clone(), &raw).action, Action::Deliver);
    policy.scan = ScanScope {
        mode: ScanMode::Only,
        extensions: vec!["TXT".into()],
    };
    assert_eq!(verdict(policy, &raw).action, Action::Hold);
}

#[test]
fn oversized_attachment_is_stripped() {
    let mut policy = Policy::default();
    policy.attachment_size.max_bytes = Some(1000);
    let v = verdict(
        policy,
        &message_with_attachment("big.pdf", "application/pdf", &[b'x'; 2000]),
    );
    assert_eq!(
        v.explain(),
        [
            "attachment size 2000 bytes exceeds limit 1000 bytes in message/attachment[1] \"big.pdf\" -> strip the attachment"
        ]
    );
}

#[test]
fn zip_bomb_verdict_names_the_limit_and_follows_the_unscannable_policy() {
    let zeros = vec![0u8; 20 * 1024 * 1024];
    let inner = zip_of(&[("zeros.dat", &zeros)]);
    let bomb = zip_of(&[("42", &zip_of(&[("lib 0.zip", &inner)]))]);
    let raw = message_with_attachment("42.zip", "application/zip", &bomb);
    let v = verdict(Policy::default(), &raw);
    assert_eq!(v.action, Action::Hold);
    let line = &v.explain()[0];
    assert!(
        line.starts_with("unscannable: compression ratio "),
        "{line}"
    );
    assert!(line.ends_with(":1 exceeds limit 100:1 in message/attachment[1] \"42.zip\"/42/lib 0.zip/zeros.dat -> hold"), "{line}");
    let mut policy = Policy::default();
    policy.unscannable.action = UnscannableAction::Drop;
    assert_eq!(verdict(policy, &raw).action, Action::Drop);
}

#[test]
fn encrypted_policy_chooses_delete_drop_log_or_forward() {
    let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let aes =
        zip::write::SimpleFileOptions::default().with_aes_encryption(zip::AesMode::Aes256, "pw");
    writer.start_file("salary.xlsx", aes).unwrap();
    std::io::Write::write_all(&mut writer, b"numbers").unwrap();
    let raw = message_with_attachment(
        "hr.zip",
        "application/zip",
        &writer.finish().unwrap().into_inner(),
    );
    let with = |action: EncryptedAction| {
        let mut policy = Policy::default();
        policy.encrypted.action = action;
        verdict(policy, &raw)
    };
    let v = with(EncryptedAction::Log);
    assert_eq!(v.action, Action::Log);
    assert_eq!(
        v.explain(),
        ["encrypted container in message/attachment[1] \"hr.zip\"/salary.xlsx -> log only"]
    );
    let v = with(EncryptedAction::DeleteContainer);
    assert_eq!(v.action, Action::StripPart);
    assert_eq!(
        v.parts_to_strip()[0].as_str(),
        "message/attachment[1] \"hr.zip\""
    );
    assert_eq!(with(EncryptedAction::Drop).action, Action::Drop);
    assert_eq!(
        with(EncryptedAction::Forward {
            to: "sec@example.com".into()
        })
        .forward_to(),
        ["sec@example.com"]
    );
}

#[test]
fn most_severe_action_wins_and_every_reason_is_kept() {
    let policy = Policy {
        subjects: SubjectPolicy {
            patterns: vec!["*prize*".into()],
            action: Action::Log,
        },
        ..Policy::default()
    };
    let v = verdict(policy, &{
        let mut raw = message_with_attachment("run.exe", "application/octet-stream", b"MZ");
        let pos = raw.windows(13).position(|w| w == b"Subject: file").unwrap();
        raw.splice(pos..pos + 14, b"Subject: prize".iter().copied());
        raw
    });
    assert_eq!(v.action, Action::StripPart);
    assert_eq!(v.reasons.len(), 2);
    assert_eq!(v.reasons[0].action, Action::Log);
}

#[test]
fn policy_parses_from_toml_and_rejects_unknown_fields() {
    let policy: Policy = toml::from_str(
        r#"
        [file_names]
        blocked_extensions = ["exe", "js"]
        blocked_true_types = ["windows_executable"]
        action = "reject"
        [unscannable]
        action = "deliver"
        [encrypted]
        action = { forward = { to = "sec@example.com" } }
    "#,
    )
    .unwrap();
    assert_eq!(policy.file_names.action, Action::Reject);
    assert_eq!(
        policy.encrypted.action,
        EncryptedAction::Forward {
            to: "sec@example.com".into()
        }
    );
    assert!(toml::from_str::<Policy>("[file_names]\nblocked_extension = []").is_err());
    assert!(
        toml::from_str::<Policy>("[[content_rules]]\nname='x'\nterms=['a']\nterm=['b']").is_err()
    );
}

#[test]
fn invalid_policies_are_refused_with_the_rule_named() {
    let policy = Policy {
        content_rules: vec![ContentRule {
            name: "stars".into(),
            match_mode: MatchMode::All,
            terms: vec!["**".into()],
            not_terms: vec![],
            scopes: vec![Scope::Body],
            action: Action::Drop,
        }],
        ..Policy::default()
    };
    let err = CompiledPolicy::compile(policy).unwrap_err();
    assert_eq!(
        err.to_string(),
        "content rule \"stars\": term \"**\" needs at least one literal character besides wildcards"
    );
}

#[test]
fn verdict_serialises_as_plain_data() {
    let v = verdict(
        Policy::default(),
        &message_with_attachment("a.exe", "application/octet-stream", b"MZ"),
    );
    let json = serde_json::to_string(&v).unwrap();
    assert!(json.contains("\"blocked_extension\""), "{json}");
}
