use chrono::TimeZone;

use super::*;

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 5, 4, 10, 30, 0).unwrap()
}

fn everyone() -> NotifyWhom {
    NotifyWhom {
        sender: true,
        recipients: true,
        admin: true,
    }
}

fn config_all() -> NotificationsConfig {
    NotificationsConfig {
        admin: Some("admin@example.org".to_owned()),
        virus: everyone(),
        content: everyone(),
        encrypted: everyone(),
        unscannable: everyone(),
        ..NotificationsConfig::default()
    }
}

fn compiled(config: NotificationsConfig) -> CompiledNotifications {
    CompiledNotifications::compile(config, "gw.example.org").unwrap()
}

fn facts() -> MessageFacts {
    MessageFacts {
        queue_id: "q-0001".to_owned(),
        envelope_sender: "alice@sender.example".to_owned(),
        envelope_recipients: vec!["bob@example.org".to_owned(), "carol@example.org".to_owned()],
        headers: OriginalHeaders {
            subject: Some("Quarterly figures".to_owned()),
            date: Some("Mon, 4 May 2026 10:29:00 +0000".to_owned()),
            message_id: Some("abc@sender.example".to_owned()),
            ..OriginalHeaders::default()
        },
        size: 12345,
        violations: vec![ViolationReport::virus(
            "Eicar-Test-Signature",
            Some("message/attachment[1] \"eicar.com\""),
        )],
        outcome: Outcome::Quarantined,
    }
}

fn parse(n: &Notification) -> mail_parser::Message<'_> {
    mail_parser::MessageParser::default()
        .parse(&n.message)
        .unwrap()
}

fn body_of(n: &Notification) -> String {
    parse(n).body_text(0).unwrap().replace("\r\n", "\n")
}

fn header_block(n: &Notification) -> &str {
    let text = std::str::from_utf8(&n.message).unwrap();
    &text[..text.find("\r\n\r\n").unwrap() + 2]
}

fn for_audience(plan: &NotificationPlan, audience: Audience) -> Vec<&Notification> {
    plan.notifications
        .iter()
        .filter(|n| n.audience == audience)
        .collect()
}

#[test]
fn default_config_tells_each_recipient_only_and_validates() {
    let config = NotificationsConfig::default();
    config.validate().unwrap();
    let plan = compiled(config).notifications(&facts(), now());
    assert_eq!(plan.notifications.len(), 2);
    assert!(
        plan.notifications
            .iter()
            .all(|n| n.audience == Audience::Recipient)
    );
    assert_eq!(plan.notifications[0].recipients, vec!["bob@example.org"]);
    assert_eq!(plan.notifications[1].recipients, vec!["carol@example.org"]);
    assert!(plan.suppressed.is_empty());
}

#[test]
fn config_keys_deserialize_with_defaults_and_unknown_keys_are_refused() {
    let config: NotificationsConfig = toml::from_str(
        r#"
        admin = "admin@example.org"
        [virus]
        admin = true
        [templates.admin]
        subject = "Virus: ${SUBJECT}"
        "#,
    )
    .unwrap();
    assert_eq!(
        config.virus,
        NotifyWhom {
            sender: false,
            recipients: true,
            admin: true
        }
    );
    assert_eq!(config.content, NotifyWhom::default());
    assert_eq!(config.from_name, "Mail Security");
    assert_eq!(
        config.templates.resolved(Audience::Admin),
        ("Virus: ${SUBJECT}", DEFAULT_ADMIN_BODY)
    );
    config.validate().unwrap();
    assert!(toml::from_str::<NotificationsConfig>("[virus]\nsenders = true").is_err());
    assert!(toml::from_str::<NotificationsConfig>("admins = \"x@y\"").is_err());
}

#[test]
fn notification_is_a_complete_mime_message_with_crlf_and_loop_markers() {
    let plan = compiled(config_all()).notifications(&facts(), now());
    let n = for_audience(&plan, Audience::Admin)[0];
    assert_eq!(n.recipients, vec!["admin@example.org"]);
    let text = std::str::from_utf8(&n.message).unwrap();
    assert!(
        !text.replace("\r\n", "").contains('\n'),
        "bare LF in {text}"
    );
    let head = header_block(n);
    assert!(
        head.contains("From: \"Mail Security\" <postmaster@gw.example.org>\r\n"),
        "{head}"
    );
    assert!(head.contains("To: <admin@example.org>\r\n"));
    assert!(head.contains("Auto-Submitted: auto-replied\r\n"));
    assert!(head.contains("X-Portcullis-Notification: admin virus\r\n"));
    assert!(head.contains("MIME-Version: 1.0\r\n"));
    assert!(head.contains("Content-Type: text/plain; charset=utf-8\r\n"));
    assert!(head.contains("Date: Mon, 4 May 2026 10:30:00 +0000\r\n"));
    assert!(
        head.contains("Message-ID: <q-0001.admin.3.notify@gw.example.org>\r\n"),
        "{head}"
    );
    let parsed = parse(n);
    assert_eq!(
        parsed.subject(),
        Some("Mail security report: Quarterly figures")
    );
    let body = body_of(n);
    assert!(body.contains("Sender:     alice@sender.example"));
    assert!(body.contains("Recipients: bob@example.org, carol@example.org"));
    assert!(body.contains("Message-ID: <abc@sender.example>"));
    assert!(body.contains("Size:       12345 bytes"));
    assert!(body.contains("Queue ID:   q-0001"));
    assert!(body.contains("Date:       Mon, 4 May 2026 10:29:00 +0000"));
    assert!(
        body.contains(
            "Viruses found:\n  - Eicar-Test-Signature in message/attachment[1] \"eicar.com\""
        ),
        "{body}"
    );
    assert!(body.contains("What was done: the message was quarantined"));
    assert!(!body.contains("${"));
}

#[test]
fn our_own_notification_parses_back_as_one_so_it_is_never_notified_about() {
    let plan = compiled(config_all()).notifications(&facts(), now());
    let n = &plan.notifications[0];
    let headers = OriginalHeaders::from_message(&n.message);
    assert!(headers.portcullis_notification.is_some());
    assert_eq!(headers.auto_submitted.as_deref(), Some("auto-replied"));
    let again = MessageFacts {
        headers,
        envelope_sender: String::new(),
        ..facts()
    };
    let plan = compiled(config_all()).notifications(&again, now());
    assert!(plan.notifications.is_empty());
    assert_eq!(plan.suppressed.len(), 3);
    assert!(
        plan.suppressed
            .iter()
            .all(|s| s.reason == Suppressed::OwnNotification)
    );
}

#[test]
fn null_sender_is_never_notified() {
    for sender in ["", "<>", "  "] {
        let plan = compiled(config_all()).notifications(
            &MessageFacts {
                envelope_sender: sender.to_owned(),
                ..facts()
            },
            now(),
        );
        assert!(for_audience(&plan, Audience::Sender).is_empty());
        assert!(plan.suppressed.contains(&SuppressedNotification {
            audience: Audience::Sender,
            reason: Suppressed::NullSender
        }));
        assert_eq!(
            for_audience(&plan, Audience::Admin).len(),
            1,
            "the admin is still told"
        );
    }
}

#[test]
fn auto_submitted_mail_gets_no_sender_notification_unless_the_value_is_no() {
    for value in [
        "auto-generated",
        "auto-replied",
        "Auto-Notified; owner-email=x@y",
        "auto-generated (bounce)",
    ] {
        let mut f = facts();
        f.headers.auto_submitted = Some(value.to_owned());
        let plan = compiled(config_all()).notifications(&f, now());
        assert!(for_audience(&plan, Audience::Sender).is_empty(), "{value}");
        assert!(matches!(
            plan.suppressed[0].reason,
            Suppressed::AutoSubmitted(_)
        ));
    }
    for value in ["no", " No ", "no (human)"] {
        let mut f = facts();
        f.headers.auto_submitted = Some(value.to_owned());
        let plan = compiled(config_all()).notifications(&f, now());
        assert_eq!(for_audience(&plan, Audience::Sender).len(), 1, "{value}");
    }
}

#[test]
fn mailing_list_mail_gets_no_sender_notification() {
    let cases: [fn(&mut OriginalHeaders); 5] = [
        |h| h.list_id = Some("<announce.example.org>".to_owned()),
        |h| h.list_unsubscribe = Some("<mailto:leave@example.org>".to_owned()),
        |h| h.precedence = Some("bulk".to_owned()),
        |h| h.precedence = Some("List".to_owned()),
        |h| h.precedence = Some("junk".to_owned()),
    ];
    for set in cases {
        let mut f = facts();
        set(&mut f.headers);
        let plan = compiled(config_all()).notifications(&f, now());
        assert!(
            for_audience(&plan, Audience::Sender).is_empty(),
            "{:?}",
            f.headers
        );
        assert!(matches!(
            plan.suppressed[0].reason,
            Suppressed::MailingList(_)
        ));
        assert_eq!(
            for_audience(&plan, Audience::Recipient).len(),
            2,
            "our own recipients are still told"
        );
    }
    let mut f = facts();
    f.headers.precedence = Some("first-class".to_owned());
    assert_eq!(
        for_audience(
            &compiled(config_all()).notifications(&f, now()),
            Audience::Sender
        )
        .len(),
        1
    );
}

#[test]
fn loop_headers_are_read_from_the_raw_message() {
    let raw = b"From: list@example.org\r\nList-Id: <x.example.org>\r\nPrecedence: bulk\r\nAuto-Submitted: auto-generated\r\nSubject: =?UTF-8?Q?caf=C3=A9?=\r\nMessage-ID: <m1@example.org>\r\nDate: Mon, 4 May 2026 09:00:00 +0000\r\n\r\nbody\r\n";
    let h = OriginalHeaders::from_message(raw);
    assert_eq!(h.list_id.as_deref(), Some("<x.example.org>"));
    assert_eq!(h.precedence.as_deref(), Some("bulk"));
    assert_eq!(h.auto_submitted.as_deref(), Some("auto-generated"));
    assert_eq!(h.subject.as_deref(), Some("café"));
    assert_eq!(h.message_id.as_deref(), Some("m1@example.org"));
    assert_eq!(h.date.as_deref(), Some("Mon, 4 May 2026 09:00:00 +0000"));
    assert_eq!(h.portcullis_notification, None);
}

#[test]
fn rejected_message_gets_no_sender_notification_because_smtp_told_the_sender() {
    let plan = compiled(config_all()).notifications(
        &MessageFacts {
            outcome: Outcome::Rejected,
            ..facts()
        },
        now(),
    );
    assert!(for_audience(&plan, Audience::Sender).is_empty());
    assert_eq!(plan.suppressed[0].reason, Suppressed::RejectedInSession);
}

#[test]
fn subject_from_the_message_cannot_inject_header_fields() {
    let mut f = facts();
    f.headers.subject = Some("Hi\r\nBcc: victim@example.net\r\n\r\nfake body".to_owned());
    f.violations.push(ViolationReport {
        violation: Violation::Content,
        detail: "file name \"a\r\nX-Evil: 1.exe\" has blocked extension .exe".to_owned(),
        part: Some("message/attachment[2]\r\nX-Evil: 2".to_owned()),
    });
    let mut config = config_all();
    config.templates.sender.subject = Some("${SUBJECT} ${CONTENTINFO} ${MSGINFO}".to_owned());
    let plan = compiled(config).notifications(&f, now());
    for n in &plan.notifications {
        let head = header_block(n);
        for line in head.split("\r\n") {
            assert!(
                line.is_empty()
                    || line.starts_with(' ')
                    || !line.starts_with("Bcc") && !line.starts_with("X-Evil"),
                "injected: {line:?}"
            );
        }
        let parsed = parse(n);
        assert!(parsed.header("Bcc").is_none());
        assert!(parsed.header("X-Evil").is_none());
        assert!(
            parsed
                .subject()
                .unwrap()
                .contains("Hi Bcc: victim@example.net fake body")
        );
    }
}

#[test]
fn non_ascii_subject_becomes_encoded_words_and_body_quoted_printable_utf8() {
    let mut f = facts();
    f.headers.subject = Some("Rechnung für März — 請求書".to_owned());
    let plan = compiled(config_all()).notifications(&f, now());
    let n = for_audience(&plan, Audience::Sender)[0];
    assert!(
        n.message.is_ascii(),
        "headers and body are 7-bit on the wire"
    );
    let head = header_block(n);
    assert!(head.contains("=?UTF-8?B?"));
    assert!(head.contains("Content-Transfer-Encoding: quoted-printable\r\n"));
    let parsed = parse(n);
    assert_eq!(
        parsed.subject(),
        Some("Mail security notice about your message: Rechnung für März — 請求書")
    );
    assert!(body_of(n).contains("Subject:    Rechnung für März — 請求書"));
}

#[test]
fn each_recipient_sees_only_itself_in_msginfo() {
    let plan = compiled(config_all()).notifications(&facts(), now());
    let to_bob = for_audience(&plan, Audience::Recipient)[0];
    let body = body_of(to_bob);
    assert!(body.contains("Recipients: bob@example.org\n"), "{body}");
    assert!(!body.contains("carol"));
}

#[test]
fn who_is_told_follows_each_violation_and_sections_only_show_what_that_audience_may_see() {
    let mut config = NotificationsConfig {
        admin: Some("admin@example.org".to_owned()),
        ..NotificationsConfig::default()
    };
    config.virus = NotifyWhom {
        sender: false,
        recipients: false,
        admin: true,
    };
    config.encrypted = NotifyWhom {
        sender: true,
        recipients: false,
        admin: false,
    };
    config.content = NotifyWhom {
        sender: false,
        recipients: false,
        admin: false,
    };
    let mut f = facts();
    f.violations.push(ViolationReport {
        violation: Violation::Encrypted,
        detail: "encrypted container".to_owned(),
        part: Some("message/attachment[2] \"s.zip\"/x".to_owned()),
    });
    f.violations.push(ViolationReport {
        violation: Violation::Content,
        detail: "content rule \"secret\" matched body".to_owned(),
        part: None,
    });
    let plan = compiled(config).notifications(&f, now());
    assert!(for_audience(&plan, Audience::Recipient).is_empty());
    let admin = for_audience(&plan, Audience::Admin);
    assert_eq!(admin.len(), 1);
    assert_eq!(admin[0].violations, vec![Violation::Virus]);
    let admin_body = body_of(admin[0]);
    assert!(
        admin_body.contains("Eicar")
            && !admin_body.contains("Encrypted")
            && !admin_body.contains("secret")
    );
    let sender = for_audience(&plan, Audience::Sender);
    assert_eq!(sender[0].violations, vec![Violation::Encrypted]);
    let sender_body = body_of(sender[0]);
    assert!(sender_body.contains("Encrypted containers (cannot be checked):\n  - encrypted container in message/attachment[2] \"s.zip\"/x"), "{sender_body}");
    assert!(!sender_body.contains("Eicar") && !sender_body.contains("secret"));
}

#[test]
fn no_violation_means_no_notification() {
    let plan = compiled(config_all()).notifications(
        &MessageFacts {
            violations: vec![],
            ..facts()
        },
        now(),
    );
    assert_eq!(plan, NotificationPlan::default());
}

#[test]
fn unknown_template_tags_are_reported_by_validation_and_rejected_at_config_load() {
    assert_eq!(
        validate_template("a ${MSGINFO} ${VIRUSNAME} ${VIRUSNAME} $ {x} ${"),
        vec!["${VIRUSNAME}"]
    );
    assert!(validate_template(DEFAULT_SENDER_BODY).is_empty());
    let mut config = NotificationsConfig::default();
    config.templates.recipients.body = Some("Hello ${NAME}".to_owned());
    let err = CompiledNotifications::compile(config, "gw").unwrap_err();
    assert_eq!(
        err,
        NotifyError::UnknownTag {
            template: "templates.recipients.body".to_owned(),
            tag: "${NAME}".to_owned()
        }
    );
    assert!(err.to_string().contains("unknown tag ${NAME}"));
}

#[test]
fn unknown_template_tags_are_left_as_text_when_rendering() {
    let f = facts();
    let values = TagValues {
        facts: &f,
        audience: Audience::Admin,
        to: "admin@example.org",
        violations: &[Violation::Virus],
    };
    assert_eq!(
        render_template("${NAME} / ${DISPOSITION} / ${", &values, Context::Body),
        "${NAME} / the message was quarantined / ${"
    );
}

#[test]
fn admin_notifications_without_an_admin_address_are_a_config_error() {
    let config = NotificationsConfig {
        virus: NotifyWhom {
            admin: true,
            ..NotifyWhom::default()
        },
        ..NotificationsConfig::default()
    };
    assert_eq!(
        config.validate(),
        Err(NotifyError::NoAdminAddress { violation: "virus" })
    );
}

#[test]
fn addresses_that_could_break_a_header_are_refused() {
    let config = NotificationsConfig {
        admin: Some("admin@example.org>\r\nBcc: x@y".to_owned()),
        ..NotificationsConfig::default()
    };
    assert!(matches!(
        config.validate(),
        Err(NotifyError::BadAddress { key: "admin", .. })
    ));
    let mut f = facts();
    f.envelope_recipients = vec![
        "ok@example.org".to_owned(),
        "bad@example.org>\r\nBcc: x@y".to_owned(),
    ];
    let plan = compiled(NotificationsConfig::default()).notifications(&f, now());
    assert_eq!(plan.notifications.len(), 1);
    assert!(matches!(
        plan.suppressed[0].reason,
        Suppressed::UnusableAddress(_)
    ));
}

#[test]
fn outcome_follows_the_verdicts_decisive_action() {
    let verdict = Verdict {
        action: Action::Drop,
        reasons: vec![],
    };
    assert_eq!(Outcome::from_verdict(&verdict), Outcome::Dropped);
    let stripped = Outcome::PartsStripped {
        parts: vec!["message/attachment[2] \"a.exe\"".to_owned()],
    };
    assert_eq!(
        stripped.to_string(),
        "the message was delivered without these parts: message/attachment[2] \"a.exe\""
    );
}

#[test]
fn reasons_are_classified_by_violation() {
    use crate::part::PartPath;
    let reason = |rule| Reason {
        rule,
        part: Some(PartPath::message()),
        carrier: None,
        action: Action::Hold,
    };
    assert_eq!(
        ViolationReport::from_reason(&reason(RuleRef::Encrypted)).violation,
        Violation::Encrypted
    );
    let finding = crate::finding::Finding::NotOpened {
        path: PartPath::message(),
        format: crate::filetype::FileType::Rar,
    };
    assert_eq!(
        ViolationReport::from_reason(&reason(RuleRef::Unscannable { finding })).violation,
        Violation::Unscannable
    );
    let rule = RuleRef::BlockedExtension {
        name: "a.exe".into(),
        extension: "exe".into(),
    };
    assert_eq!(
        ViolationReport::from_reason(&reason(rule)).violation,
        Violation::Content
    );
}
