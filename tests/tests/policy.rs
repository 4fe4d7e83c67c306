//! Content policies, notifications and disclaimers end to end: swaks/raw SMTP in, an aiosmtpd
//! sink out, the real binary in between.

use std::time::Duration;

use portcullis_e2e::smtp::simple_message;
use portcullis_e2e::{Daemon, GatewayConfig, Reply, Sink, SinkMessage, SmtpClient};

const WAIT: Duration = Duration::from_secs(30);
const EICAR: &str = r"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*";

fn send_from(gateway: &Daemon, from: &str, to: &[&str], message: &[u8]) -> Reply {
    let mut client = SmtpClient::greeted(gateway.smtp_port());
    let reply = client
        .send_message(from, to, message)
        .expect("SMTP exchange");
    client.quit();
    reply
}

/// A text body and one attachment (base64), as a mail client would send it.
fn with_attachment(from: &str, to: &str, subject: &str, name: &str, content: &[u8]) -> Vec<u8> {
    let b64 = base64_lines(content);
    format!(
        "From: <{from}>\r\nTo: <{to}>\r\nSubject: {subject}\r\nMessage-ID: <{n}@e2e.test>\r\n\
         MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n\
         --b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nPlease see the attachment.\r\n\
         --b1\r\nContent-Type: application/octet-stream; name=\"{name}\"\r\n\
         Content-Disposition: attachment; filename=\"{name}\"\r\nContent-Transfer-Encoding: base64\r\n\r\n\
         {b64}--b1--\r\n",
        n = rand::random::<u64>()
    )
    .into_bytes()
}

/// Base64 in 76-column lines, as MIME wants it.
fn base64_lines(data: &[u8]) -> String {
    use base64::Engine;
    let encoded = base64::engine::general_purpose::STANDARD.encode(data);
    let mut lines = String::new();
    for line in encoded.as_bytes().chunks(76) {
        lines.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        lines.push_str("\r\n");
    }
    lines
}

/// Sends a clean marker and waits until it has arrived and the queue is empty, so "nothing
/// else arrived" can be asserted without sleeping.
fn settle(gateway: &Daemon, sink: &Sink) -> Vec<SinkMessage> {
    let marker = simple_message("alice@origin.test", "bob@remote.test", "marker", "clean\n");
    assert_eq!(
        send_from(gateway, "alice@origin.test", &["bob@remote.test"], &marker).code,
        250
    );
    sink.wait_for_message("the marker", WAIT, |m| {
        m.header("Subject").as_deref() == Some("marker")
    });
    gateway.wait_queue_empty(WAIT);
    sink.messages()
        .into_iter()
        .filter(|m| m.header("Subject").as_deref() != Some("marker"))
        .collect()
}

#[test]
fn a_blocked_subject_is_refused_in_the_session_with_the_rule_named() {
    let sink = Sink::start();
    let gateway = Daemon::start(
        GatewayConfig::new()
            .relay_to(&sink)
            .set("scan.policy.subjects.patterns", vec!["*you win*"])
            .set("scan.policy.subjects.action", "reject"),
    );
    let message = simple_message(
        "alice@origin.test",
        "bob@remote.test",
        "Congratulations, you win",
        "claim now\n",
    );
    let reply = send_from(
        &gateway,
        "alice@origin.test",
        &["bob@remote.test"],
        &message,
    );
    assert_eq!(reply.code, 550, "{reply}");
    assert_eq!(reply.enhanced(), Some("5.7.1"));
    assert!(
        reply.text().contains("*you win*"),
        "the reply must name the rule: {reply}"
    );
    assert!(
        settle(&gateway, &sink).is_empty(),
        "the refused message was delivered"
    );
    assert!(gateway.queue_list().is_empty());
}

#[test]
fn a_blocked_attachment_name_is_stripped_and_the_rest_delivered() {
    let sink = Sink::start();
    let gateway = Daemon::start(GatewayConfig::new().relay_to(&sink));
    let message = with_attachment(
        "alice@origin.test",
        "bob@remote.test",
        "script inside",
        "tool.vbs",
        b"MsgBox \"hi\"\r\n",
    );
    let reply = send_from(
        &gateway,
        "alice@origin.test",
        &["bob@remote.test"],
        &message,
    );
    assert_eq!(reply.code, 250, "{reply}");
    let delivered = settle(&gateway, &sink);
    assert_eq!(delivered.len(), 1);
    let text = delivered[0].text();
    assert!(
        text.contains("Please see the attachment."),
        "the clean part is kept:\n{text}"
    );
    assert!(
        !text.contains("filename=\"tool.vbs\""),
        "the blocked attachment is still there:\n{text}"
    );
    assert!(
        delivered[0].header("X-Portcullis-Verdict").is_some(),
        "no verdict header:\n{text}"
    );
}

#[test]
fn a_virus_notification_reaches_the_recipient_from_the_null_sender() {
    let sink = Sink::start();
    let gateway = Daemon::start(
        GatewayConfig::new()
            .relay_to(&sink)
            .set("antivirus.action", "quarantine")
            .set("notifications.virus.recipients", true),
    );
    let message = with_attachment(
        "alice@origin.test",
        "bob@remote.test",
        "quarantine me",
        "eicar.txt",
        EICAR.as_bytes(),
    );
    assert_eq!(
        send_from(
            &gateway,
            "alice@origin.test",
            &["bob@remote.test"],
            &message
        )
        .code,
        250
    );
    let delivered = settle(&gateway, &sink);
    assert_eq!(
        delivered.len(),
        1,
        "exactly one notice, not the message: {:?}",
        delivered
            .iter()
            .map(|m| m.header("Subject"))
            .collect::<Vec<_>>()
    );
    let notice = &delivered[0];
    assert_eq!(notice.mail_from, "", "notifications go out from <>");
    assert_eq!(notice.rcpt_to, ["bob@remote.test"]);
    assert_eq!(
        notice.header("Auto-Submitted").as_deref(),
        Some("auto-replied")
    );
    assert!(notice.header("X-Portcullis-Notification").is_some());
    let text = notice.text();
    assert!(
        text.contains("Eicar-Test-Signature"),
        "${{VIRUSINFO}} missing:\n{text}"
    );
    assert!(
        text.to_lowercase().contains("quarantine"),
        "${{DISPOSITION}} missing:\n{text}"
    );
}

#[test]
fn no_notification_is_sent_to_the_null_sender_or_in_reply_to_a_notification() {
    let sink = Sink::start();
    let gateway = Daemon::start(
        GatewayConfig::new()
            .relay_to(&sink)
            .set("antivirus.action", "drop")
            .set("notifications.virus.sender", true)
            .set("notifications.virus.recipients", false),
    );
    let virus = with_attachment(
        "",
        "bob@remote.test",
        "from the null sender",
        "eicar.txt",
        EICAR.as_bytes(),
    );
    assert_eq!(
        send_from(&gateway, "", &["bob@remote.test"], &virus).code,
        250
    );
    let mut looped = with_attachment(
        "alice@origin.test",
        "bob@remote.test",
        "a notice itself",
        "eicar.txt",
        EICAR.as_bytes(),
    );
    let mut tagged =
        b"X-Portcullis-Notification: sender virus\r\nAuto-Submitted: auto-replied\r\n".to_vec();
    tagged.append(&mut looped);
    assert_eq!(
        send_from(&gateway, "alice@origin.test", &["bob@remote.test"], &tagged).code,
        250
    );
    let sent = settle(&gateway, &sink);
    assert!(
        sent.is_empty(),
        "a notification was sent where it must not be: {:?}",
        sent.iter()
            .map(|m| (
                m.rcpt_to.clone(),
                m.header("Subject"),
                m.header("X-Portcullis-Notification")
            ))
            .collect::<Vec<_>>()
    );
}

#[test]
fn the_disclaimer_is_added_once_to_outbound_mail_and_never_to_inbound_mail() {
    let sink = Sink::start();
    let gateway = Daemon::start(
        GatewayConfig::new()
            .relay_to(&sink)
            .set("relay.local_domains", vec!["origin.test"])
            .set("disclaimer.text", "This e-mail is confidential."),
    );
    let outbound = simple_message(
        "alice@origin.test",
        "bob@remote.test",
        "outbound",
        "Hello Bob.\n",
    );
    assert_eq!(
        send_from(
            &gateway,
            "alice@origin.test",
            &["bob@remote.test"],
            &outbound
        )
        .code,
        250
    );
    let inbound = simple_message(
        "carol@remote.test",
        "alice@origin.test",
        "inbound",
        "Hello Alice.\n",
    );
    assert_eq!(
        send_from(
            &gateway,
            "carol@remote.test",
            &["alice@origin.test"],
            &inbound
        )
        .code,
        250
    );

    let delivered = settle(&gateway, &sink);
    let out = delivered
        .iter()
        .find(|m| m.header("Subject").as_deref() == Some("outbound"))
        .expect("outbound delivered");
    let text = out.text();
    assert_eq!(
        text.matches("This e-mail is confidential.").count(),
        1,
        "disclaimer not exactly once:\n{text}"
    );
    assert!(text.contains("Hello Bob."));
    let inb = delivered
        .iter()
        .find(|m| m.header("Subject").as_deref() == Some("inbound"))
        .expect("inbound delivered");
    assert!(
        !inb.text().contains("confidential"),
        "disclaimer added to inbound mail:\n{}",
        inb.text()
    );
    assert!(inb.header("X-Portcullis-Disclaimer").is_none());
}
