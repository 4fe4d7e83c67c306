//! Mail through the gateway to real next hops: relaying, TLS, routing, retries and bounces.

use std::time::Duration;

use portcullis_e2e::dns::DnsRecord;
use portcullis_e2e::gateway::GATEWAY_HOSTNAME;
use portcullis_e2e::smtp::simple_message;
use portcullis_e2e::wait::poll_for;
use portcullis_e2e::{
    Daemon, Dns, GatewayConfig, Sink, SinkMessage, SinkOptions, SmtpClient, Swaks, wait_for,
};

const WAIT: Duration = Duration::from_secs(30);

fn lower(message: &SinkMessage) -> String {
    message.text().to_ascii_lowercase()
}

#[test]
fn mail_relayed_with_the_relay_flag_reaches_the_next_hop_with_a_received_header_and_intact_body() {
    let sink = Sink::start();
    let gateway = Daemon::start_with_args(GatewayConfig::new(), &["--relay", &sink.addr()]);

    Swaks::new(gateway.smtp_port())
        .from("alice@origin.test")
        .to("bob@remote.test")
        .header("Subject: e2e relay")
        .body("first line\n.a line that starts with a dot\n..two dots\nlast line")
        .run()
        .success();

    let message = sink.wait_for_messages(1, WAIT).remove(0);
    assert_eq!(message.mail_from, "alice@origin.test");
    assert_eq!(message.rcpt_to, ["bob@remote.test"]);
    assert!(
        message.text().starts_with("Received:"),
        "the gateway's Received header is not on top:\n{}",
        message.text()
    );
    let received = message.header("Received").unwrap();
    assert!(
        received.contains(GATEWAY_HOSTNAME),
        "Received header does not name the gateway: {received}"
    );
    assert_eq!(message.header("Subject").as_deref(), Some("e2e relay"));
    let body = String::from_utf8_lossy(message.body());
    assert!(
        body.contains(
            "first line\r\n.a line that starts with a dot\r\n..two dots\r\nlast line\r\n"
        ),
        "body changed on the way: {body:?}"
    );
}

#[test]
fn relayed_message_arrives_byte_for_byte_below_the_gateway_headers() {
    let sink = Sink::start();
    let gateway = Daemon::start(GatewayConfig::new().relay_to(&sink));
    let mut original =
        b"From: <alice@origin.test>\r\nTo: <bob@remote.test>\r\nSubject: exact\r\n".to_vec();
    original
        .extend_from_slice(b"Message-ID: <exact@e2e.test>\r\nX-Folded: first\r\n\tsecond\r\n\r\n");
    original.extend_from_slice(b".\r\n..\r\n. \r\nwhite space at end   \r\n\ttab\r\n\r\n\r\n");
    original.extend_from_slice(format!("{}\r\n", "x".repeat(990)).as_bytes());
    original.extend_from_slice(b"last\r\n");

    let mut client = SmtpClient::greeted(gateway.smtp_port());
    let reply = client
        .send_message("alice@origin.test", &["bob@remote.test"], &original)
        .expect("send");
    assert_eq!(reply.code, 250, "end of data: {reply}");
    client.quit();

    let message = sink.wait_for_messages(1, WAIT).remove(0);
    assert!(
        message.data.ends_with(&original),
        "the message was altered in transit; received:\n{}",
        message.text()
    );
    let added =
        String::from_utf8_lossy(&message.data[..message.data.len() - original.len()]).into_owned();
    assert!(
        added.starts_with("Received:"),
        "added header block does not start with Received: {added:?}"
    );
}

#[test]
fn pipelined_transaction_from_swaks_is_delivered() {
    let sink = Sink::start();
    let gateway = Daemon::start(GatewayConfig::new().relay_to(&sink));

    let run = Swaks::new(gateway.smtp_port())
        .from("alice@origin.test")
        .to("bob@remote.test,carol@remote.test")
        .arg("--pipeline")
        .run();
    run.success();
    assert!(
        run.advertised("PIPELINING"),
        "EHLO did not offer PIPELINING:\n{}",
        run.transcript
    );

    let message = sink.wait_for_messages(1, WAIT).remove(0);
    let mut recipients = message.rcpt_to.clone();
    recipients.sort();
    assert_eq!(recipients, ["bob@remote.test", "carol@remote.test"]);
}

#[test]
fn starttls_session_is_accepted_and_received_header_records_tls() {
    let sink = Sink::start();
    let gateway = Daemon::start(GatewayConfig::new().relay_to(&sink));

    let run = Swaks::new(gateway.smtp_port())
        .from("alice@origin.test")
        .to("bob@remote.test")
        .arg("-tls")
        .run();
    run.success();
    assert!(
        run.advertised("STARTTLS"),
        "EHLO did not offer STARTTLS:\n{}",
        run.transcript
    );

    let message = sink.wait_for_messages(1, WAIT).remove(0);
    let received = message.header("Received").unwrap();
    assert!(
        received.contains("TLS") || received.contains("ESMTPS"),
        "Received header does not mention TLS: {received}"
    );
}

#[test]
fn delivery_uses_starttls_when_the_next_hop_offers_it() {
    let sink = Sink::start_with(SinkOptions {
        starttls: true,
        ..Default::default()
    });
    let gateway = Daemon::start(GatewayConfig::new().relay_to(&sink));

    Swaks::new(gateway.smtp_port())
        .from("alice@origin.test")
        .to("bob@remote.test")
        .run()
        .success();

    let message = sink.wait_for_messages(1, WAIT).remove(0);
    assert!(
        message.tls,
        "the gateway delivered in plaintext although the next hop offered STARTTLS"
    );
}

#[test]
fn next_hop_refusing_at_connect_fails_over_to_the_next_listed_host() {
    let refusing = Sink::start_with(SinkOptions {
        refuse_connect: true,
        ..Default::default()
    });
    let sink = Sink::start();
    let gateway = Daemon::start(
        GatewayConfig::new().set("delivery.default_route", vec![refusing.addr(), sink.addr()]),
    );

    Swaks::new(gateway.smtp_port())
        .from("alice@origin.test")
        .to("bob@remote.test")
        .run()
        .success();

    let message = sink.wait_for_messages(1, WAIT).remove(0);
    assert_eq!(message.rcpt_to, ["bob@remote.test"]);
    assert!(
        refusing.events().iter().any(|e| e["event"] == "refused"),
        "the first host was never tried"
    );
}

#[test]
fn next_hop_4xx_defers_the_message_and_a_retry_delivers_it_once_accepted() {
    let mut sink = Sink::start();
    let gateway = Daemon::start(
        GatewayConfig::new()
            .relay_to(&sink)
            .set("queue.retry_schedule", vec!["1s"]),
    );

    Swaks::new(gateway.smtp_port())
        .from("alice@origin.test")
        .to("defer-me@remote.test")
        .run()
        .success();

    let deferred = wait_for(
        "the message listed as deferred with its error",
        WAIT,
        || {
            gateway
                .queue_list()
                .into_iter()
                .find(|e| e.queue() == "deferred" && e.last_error().is_some())
        },
    );
    let error = deferred.last_error().unwrap();
    assert!(
        error.contains("451"),
        "last_error does not carry the next hop's 451: {error}"
    );
    assert!(
        sink.messages().is_empty(),
        "a deferred message reached the sink"
    );

    sink.restart_with(SinkOptions {
        accept_all: true,
        ..Default::default()
    });
    let message = sink.wait_for_message("the deferred message", WAIT, |m| {
        m.rcpt_to == ["defer-me@remote.test"]
    });
    assert_eq!(message.mail_from, "alice@origin.test");
    gateway.wait_queue_empty(WAIT);
}

#[test]
fn next_hop_5xx_bounces_with_an_rfc3464_dsn_to_the_sender() {
    let sink = Sink::start();
    let gateway = Daemon::start(GatewayConfig::new().relay_to(&sink));

    Swaks::new(gateway.smtp_port())
        .from("alice@origin.test")
        .to("reject-me@remote.test")
        .header("Subject: doomed")
        .run()
        .success();

    let dsn = sink.wait_for_message("a DSN to the sender", WAIT, |m| {
        m.rcpt_to == ["alice@origin.test"]
    });
    assert_eq!(dsn.mail_from, "", "a DSN must be sent with the null sender");
    assert!(
        dsn.is_dsn(),
        "not a multipart/report; report-type=delivery-status:\n{}",
        dsn.text()
    );
    let text = lower(&dsn);
    assert!(
        text.contains("content-type: message/delivery-status"),
        "no message/delivery-status part:\n{}",
        dsn.text()
    );
    assert!(
        text.contains("action: failed"),
        "no Action: failed:\n{}",
        dsn.text()
    );
    assert!(
        text.contains("status: 5.1.1"),
        "no Status: 5.1.1:\n{}",
        dsn.text()
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("final-recipient:") && l.contains("reject-me@remote.test")),
        "no Final-Recipient for reject-me@remote.test:\n{}",
        dsn.text()
    );
    gateway.wait_queue_empty(WAIT);
}

#[test]
fn bounce_of_a_null_sender_message_produces_no_dsn() {
    let sink = Sink::start();
    let gateway = Daemon::start(GatewayConfig::new().relay_to(&sink));

    Swaks::new(gateway.smtp_port())
        .from("<>")
        .to("reject-me@remote.test")
        .run()
        .success();

    sink.wait_for_rcpt_verdict("reject-me@remote.test", "550", WAIT);
    gateway.wait_queue_empty(WAIT);
    let stray = poll_for(Duration::from_secs(3), || {
        sink.messages().into_iter().next()
    });
    assert!(
        stray.is_none(),
        "a null-sender bounce produced mail: {:?}",
        stray.map(|m| m.text())
    );
}

#[test]
fn long_deferred_message_yields_a_delay_notice_then_a_final_dsn() {
    let sink = Sink::start();
    let gateway = Daemon::start(
        GatewayConfig::new()
            .relay_to(&sink)
            .set("queue.retry_schedule", vec!["1s"])
            .set("queue.delay_notice_after", "3s")
            .set("queue.max_lifetime", "8s"),
    );

    Swaks::new(gateway.smtp_port())
        .from("alice@origin.test")
        .to("defer-forever@remote.test")
        .run()
        .success();

    let to_sender = |m: &SinkMessage| m.rcpt_to == ["alice@origin.test"];
    let delay = sink.wait_for_message("a delay notice", WAIT, |m| {
        to_sender(m) && lower(m).contains("action: delayed")
    });
    let failure = sink.wait_for_message("the final DSN", WAIT, |m| {
        to_sender(m) && lower(m).contains("action: failed")
    });
    for notice in [&delay, &failure] {
        assert_eq!(notice.mail_from, "", "notices go out with the null sender");
        assert!(
            notice.is_dsn(),
            "not an RFC 3464 report:\n{}",
            notice.text()
        );
        assert!(
            lower(notice).contains("defer-forever@remote.test"),
            "notice does not name the recipient"
        );
    }
    assert!(
        delay.file < failure.file,
        "the delay notice came after the final DSN"
    );
    let notices = sink.messages().into_iter().filter(|m| to_sender(m)).count();
    assert_eq!(notices, 2, "expected exactly one delay notice and one DSN");
    gateway.wait_queue_empty(WAIT);
}

fn mx_dns() -> Dns {
    Dns::start(&[
        DnsRecord::Mx {
            domain: "mx.test".into(),
            host: "mail.mx.test".into(),
            preference: 10,
        },
        DnsRecord::Host {
            name: "mail.mx.test".into(),
            address: "127.0.0.1".into(),
        },
    ])
}

#[test]
fn mail_for_a_domain_without_a_route_goes_to_its_mx_host() {
    let sink = Sink::start();
    let dns = mx_dns();
    let gateway = Daemon::start(
        GatewayConfig::new()
            .set("dns.servers", vec![dns.addr()])
            .set("delivery.smtp_port", i64::from(sink.port())),
    );

    Swaks::new(gateway.smtp_port())
        .from("alice@origin.test")
        .to("user@mx.test")
        .run()
        .success();

    let message = sink.wait_for_messages(1, WAIT).remove(0);
    assert_eq!(message.rcpt_to, ["user@mx.test"]);
    assert!(
        dns.log().contains("query[MX] mx.test"),
        "the gateway never asked for the MX:\n{}",
        dns.log()
    );
}

#[test]
fn routing_list_entry_overrides_the_mx_record() {
    let mx_host = Sink::start();
    let routed = Sink::start();
    let dns = mx_dns();
    let gateway = Daemon::start(
        GatewayConfig::new()
            .set("dns.servers", vec![dns.addr()])
            .set("delivery.smtp_port", i64::from(mx_host.port()))
            .route("mx.test", &[routed.addr()]),
    );

    Swaks::new(gateway.smtp_port())
        .from("alice@origin.test")
        .to("user@mx.test")
        .run()
        .success();

    let message = routed.wait_for_messages(1, WAIT).remove(0);
    assert_eq!(message.rcpt_to, ["user@mx.test"]);
    assert!(
        mx_host.messages().is_empty(),
        "the MX host got mail that the routing list sends elsewhere"
    );
}

#[test]
fn each_message_of_a_multi_message_session_is_delivered() {
    let sink = Sink::start();
    let gateway = Daemon::start(GatewayConfig::new().relay_to(&sink));
    let mut client = SmtpClient::greeted(gateway.smtp_port());
    for n in 0..5 {
        let message = simple_message(
            "alice@origin.test",
            "bob@remote.test",
            &format!("number {n}"),
            "hi",
        );
        let reply = client
            .send_message("alice@origin.test", &["bob@remote.test"], &message)
            .expect("send");
        assert_eq!(reply.code, 250, "message {n}: {reply}");
    }
    client.quit();
    let messages = sink.wait_for_messages(5, WAIT);
    let mut subjects: Vec<String> = messages
        .iter()
        .filter_map(|m| m.header("Subject"))
        .collect();
    subjects.sort();
    assert_eq!(
        subjects,
        (0..5).map(|n| format!("number {n}")).collect::<Vec<_>>()
    );
}

#[test]
fn backlog_queued_while_delivery_was_paused_is_fully_delivered_after_resume() {
    const BACKLOG: usize = 50;
    let sink = Sink::start();
    let gateway = Daemon::start(GatewayConfig::new().relay_to(&sink));
    gateway.ctl(&["pause-delivery"]).success();
    let mut client = SmtpClient::greeted(gateway.smtp_port());
    for n in 0..BACKLOG {
        let message = simple_message(
            "alice@origin.test",
            "bob@remote.test",
            &format!("backlog {n}"),
            "hi",
        );
        let reply = client
            .send_message("alice@origin.test", &["bob@remote.test"], &message)
            .expect("send");
        assert_eq!(reply.code, 250, "message {n}: {reply}");
    }
    client.quit();
    assert_eq!(gateway.queue_list().len(), BACKLOG);

    gateway.ctl(&["resume-delivery"]).success();
    sink.wait_for_messages(BACKLOG, WAIT);
    gateway.wait_queue_empty(WAIT);
}
