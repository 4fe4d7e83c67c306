//! What the inbound SMTP service refuses: relaying, routing tricks, oversize mail, smuggling.

use std::time::Duration;

use portcullis_e2e::smtp::simple_message;
use portcullis_e2e::wait::poll_for;
use portcullis_e2e::{Daemon, GatewayConfig, Reply, Sink, SmtpClient};

const WAIT: Duration = Duration::from_secs(30);

/// A gateway that trusts no client network and owns only example.test: the position of an MX on the Internet.
fn non_relay_gateway(sink: &Sink) -> Daemon {
    Daemon::start(
        GatewayConfig::new()
            .relay_to(sink)
            .set("relay.relay_networks", Vec::<String>::new())
            .set("relay.local_domains", vec!["example.test"]),
    )
}

#[track_caller]
fn assert_refused(reply: &Reply, what: &str) {
    assert!(
        reply.is_permanent(),
        "{what} was not refused with 5xx: {reply}"
    );
}

#[test]
fn client_outside_relay_networks_may_send_only_to_local_domains() {
    let sink = Sink::start();
    let gateway = non_relay_gateway(&sink);
    let mut client = SmtpClient::greeted(gateway.smtp_port());

    assert_eq!(
        client
            .command("MAIL FROM:<alice@origin.test>")
            .unwrap()
            .code,
        250
    );
    let local = client.command("RCPT TO:<bob@example.test>").unwrap();
    assert_eq!(local.code, 250, "local domain refused: {local}");
    let foreign = client.command("RCPT TO:<carol@other.test>").unwrap();
    assert_eq!(
        (foreign.code, foreign.enhanced()),
        (554, Some("5.7.1")),
        "relay not denied: {foreign}"
    );
    let reply = client
        .data(&simple_message(
            "alice@origin.test",
            "bob@example.test",
            "local only",
            "hi",
        ))
        .unwrap();
    assert_eq!(reply.code, 250, "end of data: {reply}");
    client.quit();

    let message = sink.wait_for_messages(1, WAIT).remove(0);
    assert_eq!(
        message.rcpt_to,
        ["bob@example.test"],
        "the denied recipient was delivered too"
    );
}

#[test]
fn percent_hack_and_bang_path_recipients_are_refused() {
    let sink = Sink::start();
    let gateway = non_relay_gateway(&sink);
    let mut client = SmtpClient::greeted(gateway.smtp_port());
    assert_eq!(
        client
            .command("MAIL FROM:<alice@origin.test>")
            .unwrap()
            .code,
        250
    );

    assert_refused(
        &client
            .command("RCPT TO:<user%other.test@example.test>")
            .unwrap(),
        "user%other.test@example.test",
    );
    assert_refused(
        &client
            .command("RCPT TO:<other.test!user@example.test>")
            .unwrap(),
        "other.test!user@example.test",
    );
    assert_refused(
        &client.command("RCPT TO:<a!b@example.test>").unwrap(),
        "a!b@example.test",
    );
    client.quit();
}

#[test]
fn source_routed_recipient_is_refused() {
    let sink = Sink::start();
    let gateway = non_relay_gateway(&sink);
    let mut client = SmtpClient::greeted(gateway.smtp_port());
    assert_eq!(
        client
            .command("MAIL FROM:<alice@origin.test>")
            .unwrap()
            .code,
        250
    );

    let reply = client
        .command("RCPT TO:<@example.test:carol@other.test>")
        .unwrap();
    assert_refused(&reply, "the source route @example.test:carol@other.test");
    client.quit();
}

#[test]
fn mail_from_declaring_a_size_over_the_limit_gets_552() {
    let gateway = Daemon::start(GatewayConfig::new().set("smtp.max_message_size", 100_000));
    let (mut client, _) = SmtpClient::connect(gateway.smtp_port()).unwrap();
    let ehlo = client.command("EHLO client.test").unwrap();
    assert!(
        ehlo.lines.iter().any(|l| l == "SIZE 100000"),
        "EHLO does not advertise SIZE 100000: {ehlo}"
    );

    let reply = client
        .command("MAIL FROM:<alice@origin.test> SIZE=100001")
        .unwrap();
    assert_eq!(
        (reply.code, reply.enhanced()),
        (552, Some("5.3.4")),
        "oversize MAIL: {reply}"
    );
    let fits = client
        .command("MAIL FROM:<alice@origin.test> SIZE=99999")
        .unwrap();
    assert_eq!(fits.code, 250, "a SIZE under the limit was refused: {fits}");
    client.quit();
}

#[test]
fn message_data_over_the_size_limit_gets_552_and_is_not_delivered() {
    let sink = Sink::start();
    let gateway = Daemon::start(
        GatewayConfig::new()
            .relay_to(&sink)
            .set("smtp.max_message_size", 100_000),
    );
    let mut client = SmtpClient::greeted(gateway.smtp_port());

    let body: Vec<String> = (0..2_000)
        .map(|n| format!("{n:05} {}", "y".repeat(90)))
        .collect();
    let body = body.join("\n");
    let big = simple_message("alice@origin.test", "bob@remote.test", "too big", &body);
    assert!(big.len() > 150_000);
    let reply = client
        .send_message("alice@origin.test", &["bob@remote.test"], &big)
        .unwrap();
    assert_eq!(
        (reply.code, reply.enhanced()),
        (552, Some("5.3.4")),
        "oversize DATA: {reply}"
    );

    // The session goes on; a small message after it proves the gateway has drained the big one.
    let small = simple_message("alice@origin.test", "bob@remote.test", "small", "fits");
    let reply = client
        .send_message("alice@origin.test", &["bob@remote.test"], &small)
        .unwrap();
    assert_eq!(reply.code, 250, "message after the oversize one: {reply}");
    client.quit();

    let delivered = sink.wait_for_messages(1, WAIT);
    std::thread::sleep(Duration::from_secs(1));
    let subjects: Vec<_> = sink
        .messages()
        .iter()
        .filter_map(|m| m.header("Subject"))
        .collect();
    assert_eq!(
        subjects,
        ["small"],
        "the oversize message was delivered ({} seen first)",
        delivered.len()
    );
}

/// The end-of-data look-alikes of the SMTP smuggling research (SEC Consult, 2023).
const SMUGGLING_ENDINGS: &[(&str, &[u8])] = &[
    ("LF.LF", b"\n.\n"),
    ("LF.CRLF", b"\n.\r\n"),
    ("CRLF.LF", b"\r\n.\n"),
    ("CR.CR", b"\r.\r"),
    ("CR.CRLF", b"\r.\r\n"),
    ("CRLF.CR", b"\r\n.\r"),
    ("LF.CR", b"\n.\r"),
];

#[test]
fn smtp_smuggling_variants_are_refused_and_the_smuggled_message_never_delivered() {
    let sink = Sink::start();
    let gateway = Daemon::start(GatewayConfig::new().relay_to(&sink));

    for (index, (name, ending)) in SMUGGLING_ENDINGS.iter().enumerate() {
        let mut client = SmtpClient::greeted(gateway.smtp_port());
        assert_eq!(
            client
                .command("MAIL FROM:<alice@origin.test>")
                .unwrap()
                .code,
            250
        );
        assert_eq!(
            client.command("RCPT TO:<bob@remote.test>").unwrap().code,
            250
        );
        assert_eq!(client.command("DATA").unwrap().code, 354);

        let mut payload =
            format!("From: <alice@origin.test>\r\nSubject: carrier {index}\r\n\r\ncarrier body")
                .into_bytes();
        payload.extend_from_slice(ending);
        payload.extend_from_slice(
            format!(
                "MAIL FROM:<admin@bank.test>\r\nRCPT TO:<smuggled-{index}@victim.test>\r\nDATA\r\n\
                 From: <admin@bank.test>\r\nSubject: smuggled {index}\r\n\r\nsmuggled\r\n.\r\nQUIT\r\n"
            )
            .as_bytes(),
        );
        // The server may answer and close before all bytes are written: that is a refusal too.
        let outcome = client.send_raw(&payload).and_then(|()| client.read_reply());
        match outcome {
            Ok(reply) => {
                assert!(
                    reply.is_permanent(),
                    "{name}: bare line ending in DATA was answered {reply}, not 5xx"
                );
                assert!(
                    client.is_closed(Duration::from_secs(5)),
                    "{name}: connection left open after {reply}"
                );
            }
            Err(error) => println!("{name}: connection closed without a reply ({error})"),
        }
    }

    // A clean message afterwards: once it has arrived, anything smuggled before it would have too.
    let mut client = SmtpClient::greeted(gateway.smtp_port());
    let canary = simple_message("alice@origin.test", "bob@remote.test", "canary", "clean");
    assert_eq!(
        client
            .send_message("alice@origin.test", &["bob@remote.test"], &canary)
            .unwrap()
            .code,
        250
    );
    client.quit();
    sink.wait_for_message("the canary", WAIT, |m| {
        m.header("Subject").as_deref() == Some("canary")
    });
    let smuggled = poll_for(Duration::from_secs(2), || {
        sink.messages().into_iter().find(|m| {
            m.rcpt_to.iter().any(|r| r.starts_with("smuggled-")) || m.mail_from == "admin@bank.test"
        })
    });
    assert!(
        smuggled.is_none(),
        "a smuggled message was delivered:\n{}",
        smuggled.unwrap().text()
    );
    let carriers: Vec<String> = sink
        .messages()
        .iter()
        .filter_map(|m| m.header("Subject"))
        .filter(|s| s.starts_with("carrier"))
        .collect();
    assert!(
        carriers.is_empty(),
        "messages with bare line endings were accepted and delivered: {carriers:?}"
    );
}
