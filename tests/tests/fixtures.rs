//! The test peers on their own, without the gateway: if one of these fails, the gateway tests
//! cannot be trusted either, and the failure says which peer or install step is broken.

use std::process::Command;
use std::time::Duration;

use portcullis_e2e::dns::DnsRecord;
use portcullis_e2e::process::run_bounded;
use portcullis_e2e::smtp::simple_message;
use portcullis_e2e::{Dns, Sink, SinkOptions, SmtpClient, Swaks, fixture, python};

const WAIT: Duration = Duration::from_secs(10);

#[test]
fn sink_stores_accepted_mail_and_answers_by_recipient_rules() {
    let sink = Sink::start();
    let run = Swaks::new(sink.port())
        .from("alice@origin.test")
        .to("bob@remote.test,defer-x@remote.test,reject-y@remote.test")
        .body("hello")
        .run();
    run.success();
    assert_eq!(run.reply_to("RCPT TO:<bob@").unwrap().code, 250);
    let deferred = run.reply_to("RCPT TO:<defer-x@").unwrap();
    assert_eq!((deferred.code, deferred.enhanced()), (451, Some("4.3.0")));
    let rejected = run.reply_to("RCPT TO:<reject-y@").unwrap();
    assert_eq!((rejected.code, rejected.enhanced()), (550, Some("5.1.1")));
    assert_eq!(run.data_reply().unwrap().code, 250);

    let message = sink.wait_for_messages(1, WAIT).remove(0);
    assert_eq!(message.mail_from, "alice@origin.test");
    assert_eq!(message.rcpt_to, ["bob@remote.test"]);
    assert!(String::from_utf8_lossy(message.body()).contains("hello"));
    sink.wait_for_rcpt_verdict("reject-y@remote.test", "550", WAIT);
}

#[test]
fn sink_keeps_the_null_sender_and_exact_bytes() {
    let sink = Sink::start_with(SinkOptions {
        accept_all: true,
        ..Default::default()
    });
    let mut client = SmtpClient::greeted(sink.port());
    let original = simple_message("", "reject-me@remote.test", "exact", ".dot\n..two\nend");
    assert_eq!(
        client
            .send_message("", &["reject-me@remote.test"], &original)
            .unwrap()
            .code,
        250
    );
    client.quit();
    let message = sink.wait_for_messages(1, WAIT).remove(0);
    assert_eq!(message.mail_from, "");
    assert_eq!(message.data, original);
}

#[test]
fn refusing_sink_answers_421_at_connect() {
    let sink = Sink::start_with(SinkOptions {
        refuse_connect: true,
        ..Default::default()
    });
    let (_, greeting) = SmtpClient::connect(sink.port()).unwrap();
    assert_eq!(greeting.code, 421);
}

#[test]
fn starttls_sink_records_tls_sessions() {
    let sink = Sink::start_with(SinkOptions {
        starttls: true,
        ..Default::default()
    });
    let run = Swaks::new(sink.port())
        .from("a@origin.test")
        .to("b@remote.test")
        .arg("-tls")
        .run();
    run.success();
    assert!(run.advertised("STARTTLS"));
    assert!(sink.wait_for_messages(1, WAIT)[0].tls);
}

#[test]
fn restarted_sink_keeps_its_port_and_messages() {
    let mut sink = Sink::start();
    Swaks::new(sink.port())
        .from("a@origin.test")
        .to("b@remote.test")
        .run()
        .success();
    let port = sink.port();
    sink.restart_with(SinkOptions {
        accept_all: true,
        ..Default::default()
    });
    assert_eq!(sink.port(), port);
    Swaks::new(sink.port())
        .from("a@origin.test")
        .to("defer-now-ok@remote.test")
        .run()
        .success();
    assert_eq!(sink.wait_for_messages(2, WAIT).len(), 2);
}

#[test]
fn dnsmasq_serves_the_test_mx_records() {
    let dns = Dns::start(&[
        DnsRecord::Mx {
            domain: "mx.test".into(),
            host: "mail.mx.test".into(),
            preference: 10,
        },
        DnsRecord::Host {
            name: "mail.mx.test".into(),
            address: "127.0.0.1".into(),
        },
    ]);
    let (host, port) = dns
        .addr()
        .split_once(':')
        .map(|(h, p)| (h.to_string(), p.to_string()))
        .unwrap();
    let script = format!(
        "import socket,struct\n\
         def q(name, qtype):\n\
         \x20   s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(3)\n\
         \x20   qn = b''.join(bytes([len(p)]) + p.encode() for p in name.split('.')) + b'\\0'\n\
         \x20   s.sendto(struct.pack('>HHHHHH', 7, 0x100, 1, 0, 0, 0) + qn + struct.pack('>HH', qtype, 1), ('{host}', {port}))\n\
         \x20   d = s.recv(512); return d[3] & 15, struct.unpack('>H', d[6:8])[0]\n\
         print(q('mx.test', 15), q('mail.mx.test', 1), q('nothing.test', 1))\n"
    );
    let out = run_bounded(Command::new(python()).args(["-c", &script]), WAIT);
    assert_eq!(
        out.stdout.trim(),
        "(0, 1) (0, 1) (3, 0)",
        "dnsmasq answers: {} {}",
        out.stdout,
        out.stderr
    );
}

#[test]
fn load_client_records_every_acknowledged_message() {
    let sink = Sink::start_with(SinkOptions {
        accept_all: true,
        ..Default::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let acks = dir.path().join("acks");
    let out = run_bounded(
        Command::new(python())
            .arg(fixture("load_client.py"))
            .args([
                "--port",
                &sink.port().to_string(),
                "--count",
                "200",
                "--concurrency",
                "4",
                "--deadline",
                "60",
            ])
            .arg("--acks")
            .arg(&acks),
        Duration::from_secs(90),
    );
    assert_eq!(
        out.status,
        Some(0),
        "load_client.py: {} {}",
        out.stdout,
        out.stderr
    );
    assert_eq!(std::fs::read_to_string(&acks).unwrap().lines().count(), 200);
    assert_eq!(sink.wait_for_messages(200, WAIT).len(), 200);
}
