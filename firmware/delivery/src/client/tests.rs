use super::*;

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex};

use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpListener;

/// What the scripted server answers. Replies are written as given plus CRLF; embed "\r\n" for
/// multi-line replies.
#[derive(Clone)]
struct Script {
    greeting: String,
    /// Replaces the normal EHLO reply when set.
    ehlo: Option<String>,
    extensions: Vec<&'static str>,
    /// Offer STARTTLS with this server configuration.
    tls: Option<Arc<rustls::ServerConfig>>,
    /// Answer STARTTLS with 220 and then hang up instead of negotiating.
    break_tls: bool,
    mail: String,
    rcpt: HashMap<String, String>,
    data: String,
    end_of_data: String,
    /// Accept the connection but never say anything.
    silent: bool,
    /// Answer the end of the data, then hang up (a server that closes idle sessions early).
    close_after_message: bool,
    /// Answer DATA with `data` even when no recipient was accepted (a broken server; a real
    /// one refuses it).
    data_without_recipients: bool,
}

impl Script {
    /// This script, answering RCPT TO `address` with `reply`.
    fn answering_rcpt(mut self, address: &str, reply: &str) -> Script {
        self.rcpt.insert(address.into(), reply.into());
        self
    }
}

impl Default for Script {
    fn default() -> Script {
        Script {
            greeting: "220 mx.test ESMTP fake".into(),
            ehlo: None,
            extensions: vec![
                "PIPELINING",
                "SIZE 10485760",
                "8BITMIME",
                "SMTPUTF8",
                "ENHANCEDSTATUSCODES",
            ],
            tls: None,
            break_tls: false,
            mail: "250 2.1.0 Ok".into(),
            rcpt: HashMap::new(),
            data: "354 End data with <CR><LF>.<CR><LF>".into(),
            end_of_data: "250 2.0.0 Ok: queued as 12345".into(),
            silent: false,
            close_after_message: false,
            data_without_recipients: false,
        }
    }
}

/// What the scripted server saw.
#[derive(Debug, Default)]
struct Received {
    connections: usize,
    /// Command lines without CRLF, in order, over all connections.
    commands: Vec<String>,
    /// Raw DATA bytes as sent (still dot-stuffed), without the final ".\r\n" line.
    bodies: Vec<Vec<u8>>,
    /// For each MAIL command: whether RCPT commands had already arrived with it (pipelined).
    mail_pipelined: Vec<bool>,
    /// For each MAIL command: whether DATA had already arrived with it (pipelined).
    data_pipelined: Vec<bool>,
}

struct FakeServer {
    addr: SocketAddr,
    received: Arc<Mutex<Received>>,
}

impl FakeServer {
    async fn start(script: Script) -> FakeServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Received::default()));
        let seen = Arc::clone(&received);
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                seen.lock().unwrap().connections += 1;
                if script.silent {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    continue;
                }
                let Some(tcp) = serve(tcp, &script, &seen, false).await else {
                    continue;
                };
                let acceptor =
                    tokio_rustls::TlsAcceptor::from(Arc::clone(script.tls.as_ref().unwrap()));
                if let Ok(tls) = acceptor.accept(tcp).await {
                    serve(tls, &script, &seen, true).await;
                }
            }
        });
        FakeServer { addr, received }
    }

    fn candidate(&self) -> Candidate {
        Candidate {
            host: "mx.test".into(),
            addr: self.addr,
        }
    }

    fn received(&self) -> std::sync::MutexGuard<'_, Received> {
        self.received.lock().unwrap()
    }

    fn mail_commands(&self) -> Vec<String> {
        self.received()
            .commands
            .iter()
            .filter(|c| c.starts_with("MAIL"))
            .cloned()
            .collect()
    }
}

/// Runs one session; returns the stream when the client asked for STARTTLS and got "220".
async fn serve<S>(stream: S, script: &Script, seen: &Mutex<Received>, secure: bool) -> Option<S>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut reader = BufReader::new(stream);
    async fn reply<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
        reader: &mut BufReader<S>,
        text: &str,
    ) -> bool {
        let out = format!("{text}\r\n");
        reader.get_mut().write_all(out.as_bytes()).await.is_ok()
            && reader.get_mut().flush().await.is_ok()
    }
    if !secure && !reply(&mut reader, &script.greeting).await {
        return None;
    }
    if !script.greeting.starts_with('2') {
        return None;
    }
    // Like a real server: RCPT needs an accepted MAIL, DATA an accepted RCPT.
    let (mut mail_ok, mut accepted) = (false, 0usize);
    loop {
        let mut line = Vec::new();
        if reader.read_until(b'\n', &mut line).await.ok()? == 0 {
            return None;
        }
        let command = String::from_utf8_lossy(&line).trim_end().to_string();
        seen.lock().unwrap().commands.push(command.clone());
        let verb = command
            .split([' ', ':'])
            .next()
            .unwrap_or("")
            .to_ascii_uppercase();
        let answer = match verb.as_str() {
            "EHLO" => match &script.ehlo {
                Some(custom) => custom.clone(),
                None => {
                    let mut lines = vec!["mx.test greets you".to_string()];
                    lines.extend(script.extensions.iter().map(|e| e.to_string()));
                    if script.tls.is_some() && !secure {
                        lines.push("STARTTLS".into());
                    }
                    let last = lines.len() - 1;
                    lines
                        .iter()
                        .enumerate()
                        .map(|(i, l)| format!("250{}{l}", if i == last { ' ' } else { '-' }))
                        .collect::<Vec<_>>()
                        .join("\r\n")
                }
            },
            "HELO" => "250 mx.test".into(),
            "STARTTLS" => {
                reply(&mut reader, "220 2.0.0 Ready to start TLS").await;
                if script.break_tls {
                    let _ = reader.get_mut().write_all(b"this is not TLS\r\n").await;
                    return None;
                }
                return Some(reader.into_inner());
            }
            "MAIL" => {
                let buffered = String::from_utf8_lossy(reader.buffer()).into_owned();
                let mut seen = seen.lock().unwrap();
                seen.mail_pipelined.push(buffered.contains("RCPT TO"));
                seen.data_pipelined.push(buffered.contains("DATA\r\n"));
                (mail_ok, accepted) = (script.mail.starts_with('2'), 0);
                script.mail.clone()
            }
            "RCPT" if !mail_ok => "503 5.5.1 Error: need MAIL command".into(),
            "RCPT" => {
                let address = command
                    .split('<')
                    .nth(1)
                    .and_then(|s| s.split('>').next())
                    .unwrap_or("");
                let answer = script
                    .rcpt
                    .get(address)
                    .cloned()
                    .unwrap_or_else(|| "250 2.1.5 Ok".into());
                accepted += usize::from(answer.starts_with('2'));
                answer
            }
            "DATA" if accepted == 0 && !script.data_without_recipients => {
                "554 5.5.1 Error: no valid recipients".into()
            }
            "DATA" => {
                (mail_ok, accepted) = (false, 0);
                reply(&mut reader, &script.data).await;
                if !script.data.starts_with("354") {
                    continue;
                }
                let mut body = Vec::new();
                loop {
                    let mut line = Vec::new();
                    if reader.read_until(b'\n', &mut line).await.ok()? == 0 {
                        return None;
                    }
                    if line == b".\r\n" {
                        break;
                    }
                    body.extend_from_slice(&line);
                }
                seen.lock().unwrap().bodies.push(body);
                if script.close_after_message {
                    reply(&mut reader, &script.end_of_data).await;
                    return None;
                }
                script.end_of_data.clone()
            }
            "QUIT" => {
                reply(&mut reader, "221 2.0.0 Bye").await;
                return None;
            }
            "RSET" => {
                (mail_ok, accepted) = (false, 0);
                "250 2.0.0 Ok".into()
            }
            "NOOP" => "250 2.0.0 Ok".into(),
            _ => "502 5.5.2 unknown command".into(),
        };
        if !reply(&mut reader, &answer).await {
            return None;
        }
    }
}

fn self_signed_tls() -> Arc<rustls::ServerConfig> {
    let certified = rcgen::generate_simple_self_signed(vec!["mx.test".into()]).unwrap();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(certified.key_pair.serialize_der()));
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![certified.cert.der().clone()], key)
    .unwrap();
    Arc::new(config)
}

fn config() -> ClientConfig {
    ClientConfig {
        helo_name: "gw.test".into(),
        connect_timeout: Duration::from_secs(5),
        command_timeout: Duration::from_secs(5),
        data_timeout: Duration::from_secs(5),
        tls: TlsMode::Opportunistic,
    }
}

fn hop(candidates: Vec<Candidate>) -> NextHop {
    NextHop {
        key: "mx:example.test".into(),
        candidates,
    }
}

/// A spool-like file: some header bytes, then the message at the returned offset.
fn spool(message: &[u8]) -> (tempfile::NamedTempFile, MessageSource) {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    let header = b"PORTCULLIS-SPOOL 1\n{\"sender\":\"x\"}\n";
    file.write_all(header).unwrap();
    file.write_all(message).unwrap();
    file.flush().unwrap();
    let source = MessageSource::Spool {
        path: file.path().to_path_buf(),
        offset: header.len() as u64,
    };
    (file, source)
}

fn rcpts(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn tx<'a>(recipients: &'a [String]) -> Transaction<'a> {
    Transaction {
        sender: "sender@gw.test",
        recipients,
        smtputf8: false,
        eight_bit: false,
        size: 40,
    }
}

/// An address nothing listens on.
async fn closed_port() -> Candidate {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    Candidate {
        host: "down.test".into(),
        addr,
    }
}

const MESSAGE: &[u8] = b"Subject: test\r\n\r\nHello\r\n";

#[tokio::test]
async fn delivers_to_accepted_recipients_and_reports_refused_ones_per_recipient() {
    let script = Script::default()
        .answering_rcpt("bad@example.test", "550 5.1.1 no such user")
        .answering_rcpt("later@example.test", "450 4.2.1 mailbox busy");
    let server = FakeServer::start(script).await;
    let (_file, source) = spool(MESSAGE);
    let recipients = rcpts(&["ok@example.test", "bad@example.test", "later@example.test"]);
    let report = deliver_to(&server, &recipients, &source).await;

    assert_eq!(report.host.as_deref(), Some("mx.test"));
    assert_eq!(report.addr, Some(server.addr));
    assert_eq!(report.tls, None);
    assert_eq!(
        report.results,
        vec![
            ("ok@example.test".into(), RcptResult::Delivered { reply: "250 2.0.0 Ok: queued as 12345".into() }),
            (
                "bad@example.test".into(),
                RcptResult::Failed {
                    reply: "host mx.test[127.0.0.1] said: 550 5.1.1 no such user (in reply to RCPT TO command)".into()
                }
            ),
            (
                "later@example.test".into(),
                RcptResult::Deferred {
                    reply: "host mx.test[127.0.0.1] said: 450 4.2.1 mailbox busy (in reply to RCPT TO command)".into()
                }
            ),
        ]
    );
    let received = server.received();
    assert_eq!(
        received.commands.first().map(String::as_str),
        Some("EHLO gw.test")
    );
    assert_eq!(received.commands.last().map(String::as_str), Some("QUIT"));
    assert_eq!(received.bodies, vec![MESSAGE.to_vec()]);
}

#[tokio::test]
async fn mail_from_carries_size_body_and_smtputf8_when_offered() {
    let server = FakeServer::start(Script::default()).await;
    let (_file, source) = spool(MESSAGE);
    let recipients = rcpts(&["ok@example.test"]);
    let transaction = Transaction {
        smtputf8: true,
        eight_bit: true,
        size: 1234,
        ..tx(&recipients)
    };
    deliver(
        &config(),
        &hop(vec![server.candidate()]),
        &transaction,
        &source,
    )
    .await;
    assert_eq!(
        server.mail_commands(),
        ["MAIL FROM:<sender@gw.test> SIZE=1234 BODY=8BITMIME SMTPUTF8"]
    );
}

#[tokio::test]
async fn mail_from_has_no_parameters_the_server_did_not_offer() {
    let server = FakeServer::start(Script {
        extensions: vec!["PIPELINING"],
        ..Script::default()
    })
    .await;
    let (_file, source) = spool(MESSAGE);
    let recipients = rcpts(&["ok@example.test"]);
    let transaction = Transaction {
        eight_bit: true,
        ..tx(&recipients)
    };
    let report = deliver(
        &config(),
        &hop(vec![server.candidate()]),
        &transaction,
        &source,
    )
    .await;
    assert_eq!(server.mail_commands(), ["MAIL FROM:<sender@gw.test>"]);
    assert!(matches!(report.results[0].1, RcptResult::Delivered { .. }));
}

#[tokio::test]
async fn null_sender_is_sent_as_empty_reverse_path() {
    let server = FakeServer::start(Script {
        extensions: vec![],
        ..Script::default()
    })
    .await;
    let (_file, source) = spool(MESSAGE);
    let recipients = rcpts(&["ok@example.test"]);
    deliver(
        &config(),
        &hop(vec![server.candidate()]),
        &Transaction {
            sender: "",
            ..tx(&recipients)
        },
        &source,
    )
    .await;
    assert_eq!(server.mail_commands(), ["MAIL FROM:<>"]);
}

#[tokio::test]
async fn pipelining_sends_mail_and_rcpts_in_one_write_when_offered() {
    let server = FakeServer::start(Script::default()).await;
    let (_file, source) = spool(MESSAGE);
    let recipients = rcpts(&["a@example.test", "b@example.test"]);
    deliver_to(&server, &recipients, &source).await;
    assert_eq!(server.received().mail_pipelined, vec![true]);
}

#[tokio::test]
async fn commands_wait_for_each_reply_without_pipelining() {
    let server = FakeServer::start(Script {
        extensions: vec!["8BITMIME"],
        ..Script::default()
    })
    .await;
    let (_file, source) = spool(MESSAGE);
    let recipients = rcpts(&["a@example.test", "b@example.test"]);
    let report = deliver_to(&server, &recipients, &source).await;
    assert_eq!(server.received().mail_pipelined, vec![false]);
    assert!(all_delivered(&report), "{:?}", report.results);
}

#[tokio::test]
async fn many_recipients_are_pipelined_in_batches_and_all_get_results() {
    let server = FakeServer::start(Script::default()).await;
    let (_file, source) = spool(MESSAGE);
    let recipients: Vec<String> = (0..250).map(|i| format!("user{i}@example.test")).collect();
    let report = deliver_to(&server, &recipients, &source).await;
    assert_eq!(report.results.len(), 250);
    assert!(all_delivered(&report), "{:?}", report.results);
    assert_eq!(
        server
            .received()
            .commands
            .iter()
            .filter(|c| c.starts_with("RCPT"))
            .count(),
        250
    );
}

#[tokio::test]
async fn body_is_dot_stuffed_and_gets_a_final_crlf() {
    let server = FakeServer::start(Script::default()).await;
    let (_file, source) = spool(b".leading\r\nmiddle.\r\n..two\r\n.\r\nlast line without newline");
    let recipients = rcpts(&["ok@example.test"]);
    let report = deliver_to(&server, &recipients, &source).await;
    assert!(matches!(report.results[0].1, RcptResult::Delivered { .. }));
    assert_eq!(
        String::from_utf8(server.received().bodies[0].clone()).unwrap(),
        "..leading\r\nmiddle.\r\n...two\r\n..\r\nlast line without newline\r\n"
    );
}

#[tokio::test]
async fn large_message_is_streamed_intact() {
    let server = FakeServer::start(Script::default()).await;
    let mut message = Vec::new();
    let mut expected = Vec::new();
    for i in 0..60_000 {
        let line = if i % 7 == 0 {
            format!(".line {i} starts with a dot\r\n")
        } else {
            format!("line {i} of the body\r\n")
        };
        if line.starts_with('.') {
            expected.push(b'.');
        }
        expected.extend_from_slice(line.as_bytes());
        message.extend_from_slice(line.as_bytes());
    }
    assert!(message.len() > 1_000_000);
    let (_file, source) = spool(&message);
    let recipients = rcpts(&["ok@example.test"]);
    let report = deliver_to(&server, &recipients, &source).await;
    assert!(matches!(report.results[0].1, RcptResult::Delivered { .. }));
    assert!(
        server.received().bodies[0] == expected,
        "body differs from the dot-stuffed message"
    );
}

#[tokio::test]
async fn message_from_memory_is_sent_like_one_from_its_spool_file() {
    let mut message = Vec::new();
    for i in 0..30_000 {
        message.extend_from_slice(format!(".line {i}\r\n").as_bytes());
    }
    let mut bodies = Vec::new();
    let (_file, from_file) = spool(&message);
    for source in [
        from_file,
        MessageSource::Memory(bytes::Bytes::from(message.clone())),
    ] {
        let server = FakeServer::start(Script::default()).await;
        let recipients = rcpts(&["ok@example.test"]);
        let report = deliver_to(&server, &recipients, &source).await;
        assert!(matches!(report.results[0].1, RcptResult::Delivered { .. }));
        bodies.push(server.received().bodies[0].clone());
    }
    assert!(bodies[1].starts_with(b"..line 0\r\n"));
    assert!(
        bodies[0] == bodies[1],
        "memory and file sources sent different bytes"
    );
}

#[tokio::test]
async fn falls_back_past_refused_connection_and_4xx_greeting_to_the_next_candidate() {
    let busy = FakeServer::start(Script {
        greeting: "421 4.3.2 busy, try later".into(),
        ..Script::default()
    })
    .await;
    let good = FakeServer::start(Script::default()).await;
    let (_file, source) = spool(MESSAGE);
    let recipients = rcpts(&["ok@example.test"]);
    let candidates = vec![closed_port().await, busy.candidate(), good.candidate()];
    let report = deliver(&config(), &hop(candidates), &tx(&recipients), &source).await;
    assert_eq!(report.addr, Some(good.addr));
    assert!(matches!(report.results[0].1, RcptResult::Delivered { .. }));
    assert_eq!(busy.received().connections, 1);
    assert!(busy.mail_commands().is_empty());
}

#[tokio::test]
async fn ehlo_4xx_moves_to_the_next_candidate() {
    let first = FakeServer::start(Script {
        ehlo: Some("421 4.7.0 come back later".into()),
        ..Script::default()
    })
    .await;
    let second = FakeServer::start(Script::default()).await;
    let (_file, source) = spool(MESSAGE);
    let recipients = rcpts(&["ok@example.test"]);
    let report = deliver(
        &config(),
        &hop(vec![first.candidate(), second.candidate()]),
        &tx(&recipients),
        &source,
    )
    .await;
    assert_eq!(report.addr, Some(second.addr));
    assert!(first.mail_commands().is_empty());
}

#[tokio::test]
async fn ehlo_5xx_falls_back_to_helo_without_extensions() {
    let server = FakeServer::start(Script {
        ehlo: Some("502 5.5.2 EHLO not implemented".into()),
        ..Script::default()
    })
    .await;
    let (_file, source) = spool(MESSAGE);
    let recipients = rcpts(&["ok@example.test"]);
    let transaction = Transaction {
        eight_bit: true,
        ..tx(&recipients)
    };
    let report = deliver(
        &config(),
        &hop(vec![server.candidate()]),
        &transaction,
        &source,
    )
    .await;
    assert!(matches!(report.results[0].1, RcptResult::Delivered { .. }));
    assert!(
        server
            .received()
            .commands
            .contains(&"HELO gw.test".to_string())
    );
    assert_eq!(server.mail_commands(), ["MAIL FROM:<sender@gw.test>"]);
}

#[tokio::test]
async fn starttls_is_used_when_offered_and_ehlo_is_repeated_inside_tls() {
    let server = FakeServer::start(Script {
        tls: Some(self_signed_tls()),
        ..Script::default()
    })
    .await;
    let (_file, source) = spool(MESSAGE);
    let recipients = rcpts(&["ok@example.test"]);
    let report = deliver_to(&server, &recipients, &source).await;
    let tls = report.tls.expect("TLS should have been used");
    assert!(
        tls.starts_with("TLSv1.3 TLS13_") || tls.starts_with("TLSv1.2 TLS_"),
        "{tls}"
    );
    assert!(matches!(report.results[0].1, RcptResult::Delivered { .. }));
    let commands = server.received().commands.clone();
    assert_eq!(commands[..3], ["EHLO gw.test", "STARTTLS", "EHLO gw.test"]);
    assert_eq!(server.received().bodies.len(), 1);
}

#[tokio::test]
async fn disabled_tls_never_sends_starttls() {
    let server = FakeServer::start(Script {
        tls: Some(self_signed_tls()),
        ..Script::default()
    })
    .await;
    let (_file, source) = spool(MESSAGE);
    let recipients = rcpts(&["ok@example.test"]);
    let config = ClientConfig {
        tls: TlsMode::Disabled,
        ..config()
    };
    let report = deliver(
        &config,
        &hop(vec![server.candidate()]),
        &tx(&recipients),
        &source,
    )
    .await;
    assert_eq!(report.tls, None);
    assert!(!server.received().commands.iter().any(|c| c == "STARTTLS"));
}

#[tokio::test]
async fn failed_tls_handshake_retries_the_same_host_once_in_plaintext() {
    let server = FakeServer::start(Script {
        tls: Some(self_signed_tls()),
        break_tls: true,
        ..Script::default()
    })
    .await;
    let (_file, source) = spool(MESSAGE);
    let recipients = rcpts(&["ok@example.test"]);
    let report = deliver_to(&server, &recipients, &source).await;
    assert_eq!(report.tls, None);
    assert!(matches!(report.results[0].1, RcptResult::Delivered { .. }));
    let received = server.received();
    assert_eq!(received.connections, 2);
    assert_eq!(
        received
            .commands
            .iter()
            .filter(|c| *c == "STARTTLS")
            .count(),
        1
    );
}

#[tokio::test]
async fn mail_from_5xx_fails_every_recipient() {
    let server = FakeServer::start(Script {
        mail: "553 5.7.1 sender rejected".into(),
        ..Script::default()
    })
    .await;
    let (_file, source) = spool(MESSAGE);
    let recipients = rcpts(&["a@example.test", "b@example.test"]);
    let report = deliver_to(&server, &recipients, &source).await;
    let expected =
        "host mx.test[127.0.0.1] said: 553 5.7.1 sender rejected (in reply to MAIL FROM command)";
    for (_, result) in &report.results {
        assert_eq!(
            result,
            &RcptResult::Failed {
                reply: expected.into()
            }
        );
    }
    assert!(server.received().bodies.is_empty());
}

#[tokio::test]
async fn mail_from_4xx_defers_every_recipient() {
    let server = FakeServer::start(Script {
        mail: "451 4.3.0 try later".into(),
        ..Script::default()
    })
    .await;
    let (_file, source) = spool(MESSAGE);
    let recipients = rcpts(&["a@example.test"]);
    let report = deliver_to(&server, &recipients, &source).await;
    assert!(
        matches!(&report.results[0].1, RcptResult::Deferred { reply } if reply.contains("451 4.3.0"))
    );
}

#[tokio::test]
async fn no_message_is_sent_when_every_recipient_is_refused() {
    let script = Script::default().answering_rcpt("bad@example.test", "550 5.1.1 no such user");
    let server = FakeServer::start(script).await;
    let (_file, source) = spool(MESSAGE);
    let recipients = rcpts(&["bad@example.test"]);
    let report = deliver_to(&server, &recipients, &source).await;
    assert!(matches!(report.results[0].1, RcptResult::Failed { .. }));
    // DATA went out pipelined with MAIL and RCPT, and was refused: no message data followed.
    assert!(server.received().bodies.is_empty());
}

#[tokio::test]
async fn mail_rcpt_and_data_travel_in_one_write_when_the_server_pipelines() {
    let server = FakeServer::start(Script::default()).await;
    let (_file, source) = spool(MESSAGE);
    let recipients = rcpts(&["a@example.test", "b@example.test"]);
    let report = deliver_to(&server, &recipients, &source).await;
    assert!(all_delivered(&report), "{:?}", report.results);
    let seen = server.received();
    assert_eq!(seen.mail_pipelined, [true]);
    assert_eq!(seen.data_pipelined, [true]);
    assert_eq!(seen.bodies.len(), 1);
}

#[tokio::test]
async fn data_is_not_pipelined_without_pipelining_or_past_the_first_batch_of_recipients() {
    let server = FakeServer::start(Script {
        extensions: vec!["SIZE 10485760", "8BITMIME"],
        ..Script::default()
    })
    .await;
    let (_file, source) = spool(MESSAGE);
    let recipients = rcpts(&["a@example.test"]);
    deliver_to(&server, &recipients, &source).await;
    assert_eq!(server.received().data_pipelined, [false]);

    let server = FakeServer::start(Script::default()).await;
    let many: Vec<String> = (0..PIPELINE_BATCH + 1)
        .map(|n| format!("r{n}@example.test"))
        .collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let recipients = rcpts(&many);
    let report = deliver_to(&server, &recipients, &source).await;
    assert_eq!(report.results.len(), PIPELINE_BATCH + 1);
    assert!(all_delivered(&report), "{:?}", report.results);
    let seen = server.received();
    assert_eq!(seen.data_pipelined, [false]);
    assert_eq!(seen.bodies.len(), 1);
}

#[tokio::test]
async fn a_server_that_accepts_data_without_recipients_gets_a_lone_dot_and_the_session_goes_on() {
    let script = Script {
        data_without_recipients: true,
        ..Script::default()
    }
    .answering_rcpt("ok@example.test", "550 5.1.1 no such user");
    let server = FakeServer::start(script).await;
    let cache = SessionCache::new(SessionCacheLimits::default());
    let (_file, source) = spool(MESSAGE);
    let report = deliver_through(&cache, &server, &source).await;
    assert!(matches!(report.results[0].1, RcptResult::Failed { .. }));
    {
        let seen = server.received();
        // The "." ended an empty message; nothing of ours was sent.
        assert_eq!(seen.bodies, [Vec::<u8>::new()]);
    }
    // The session is still in step: the next transaction on it gets its own answers.
    assert_eq!(cache.parked(), 1);
    let report = deliver_through(&cache, &server, &source).await;
    assert!(matches!(report.results[0].1, RcptResult::Failed { .. }));
    assert_eq!(server.received().connections, 1);
}

#[tokio::test]
async fn after_a_refused_mail_from_the_pipelined_answers_are_read_and_the_session_reused() {
    let server = FakeServer::start(Script {
        mail: "553 5.7.1 sender rejected".into(),
        ..Script::default()
    })
    .await;
    let cache = SessionCache::new(SessionCacheLimits::default());
    let (_file, source) = spool(MESSAGE);
    for _ in 0..2 {
        let report = deliver_through(&cache, &server, &source).await;
        assert!(
            matches!(&report.results[0].1, RcptResult::Failed { reply } if reply.contains("553 5.7.1")),
            "{:?}",
            report.results
        );
    }
    let seen = server.received();
    assert_eq!(seen.connections, 1, "the session was reused");
    assert!(seen.bodies.is_empty());
}

#[tokio::test]
async fn end_of_data_4xx_defers_accepted_recipients_and_keeps_refused_ones_failed() {
    let script = Script {
        end_of_data: "451 4.3.0 queue full".into(),
        ..Script::default()
    }
    .answering_rcpt("bad@example.test", "550 5.1.1 no such user");
    let server = FakeServer::start(script).await;
    let (_file, source) = spool(MESSAGE);
    let recipients = rcpts(&["ok@example.test", "bad@example.test"]);
    let report = deliver_to(&server, &recipients, &source).await;
    assert_eq!(
        report.results[0].1,
        RcptResult::Deferred {
            reply: "host mx.test[127.0.0.1] said: 451 4.3.0 queue full (in reply to end of DATA command)".into()
        }
    );
    assert!(matches!(report.results[1].1, RcptResult::Failed { .. }));
}

#[tokio::test]
async fn end_of_data_5xx_fails_accepted_recipients() {
    let server = FakeServer::start(Script {
        end_of_data: "554 5.7.1 message looks like spam".into(),
        ..Script::default()
    })
    .await;
    let (_file, source) = spool(MESSAGE);
    let recipients = rcpts(&["ok@example.test"]);
    let report = deliver_to(&server, &recipients, &source).await;
    assert!(
        matches!(&report.results[0].1, RcptResult::Failed { reply } if reply.contains("554 5.7.1 message looks like spam"))
    );
}

#[tokio::test]
async fn data_command_5xx_fails_accepted_recipients() {
    let server = FakeServer::start(Script {
        data: "554 5.5.1 no valid recipients".into(),
        ..Script::default()
    })
    .await;
    let (_file, source) = spool(MESSAGE);
    let recipients = rcpts(&["ok@example.test"]);
    let report = deliver_to(&server, &recipients, &source).await;
    assert!(
        matches!(&report.results[0].1, RcptResult::Failed { reply } if reply.ends_with("(in reply to DATA command)"))
    );
}

#[tokio::test]
async fn multi_line_final_reply_is_joined_with_slashes() {
    let server = FakeServer::start(Script {
        end_of_data: "250-2.0.0 Ok\r\n250 2.0.0 queued as 77".into(),
        ..Script::default()
    })
    .await;
    let (_file, source) = spool(MESSAGE);
    let recipients = rcpts(&["ok@example.test"]);
    let report = deliver_to(&server, &recipients, &source).await;
    assert_eq!(
        report.results[0].1,
        RcptResult::Delivered {
            reply: "250 2.0.0 Ok / queued as 77".into()
        }
    );
}

#[tokio::test]
async fn smtputf8_message_to_a_server_without_smtputf8_fails_with_5_6_7() {
    let server = FakeServer::start(Script {
        extensions: vec!["PIPELINING", "8BITMIME"],
        ..Script::default()
    })
    .await;
    let (_file, source) = spool(MESSAGE);
    let recipients = rcpts(&["j\u{f6}rg@example.test"]);
    let transaction = Transaction {
        smtputf8: true,
        ..tx(&recipients)
    };
    let report = deliver(
        &config(),
        &hop(vec![server.candidate()]),
        &transaction,
        &source,
    )
    .await;
    assert!(
        matches!(&report.results[0].1, RcptResult::Failed { reply } if reply.starts_with("550 5.6.7 "))
    );
    assert!(server.mail_commands().is_empty());
}

#[tokio::test]
async fn message_over_the_servers_size_limit_fails_with_5_3_4() {
    let server = FakeServer::start(Script {
        extensions: vec!["SIZE 100"],
        ..Script::default()
    })
    .await;
    let (_file, source) = spool(MESSAGE);
    let recipients = rcpts(&["ok@example.test"]);
    let transaction = Transaction {
        size: 101,
        ..tx(&recipients)
    };
    let report = deliver(
        &config(),
        &hop(vec![server.candidate()]),
        &transaction,
        &source,
    )
    .await;
    assert!(
        matches!(&report.results[0].1, RcptResult::Failed { reply } if reply.starts_with("552 5.3.4 "))
    );
    assert!(server.mail_commands().is_empty());
}

#[tokio::test]
async fn all_candidates_unreachable_defers_every_recipient_with_the_last_error() {
    let first = closed_port().await;
    let last = closed_port().await;
    let (_file, source) = spool(MESSAGE);
    let recipients = rcpts(&["a@example.test", "b@example.test"]);
    let report = deliver(
        &config(),
        &hop(vec![first, last.clone()]),
        &tx(&recipients),
        &source,
    )
    .await;
    assert_eq!(report.host, None);
    let expected_prefix = format!("connect to down.test[127.0.0.1]:{}: ", last.addr.port());
    for (_, result) in &report.results {
        assert!(
            matches!(result, RcptResult::Deferred { reply } if reply.starts_with(&expected_prefix)),
            "{result:?}"
        );
    }
}

#[tokio::test]
async fn malformed_reply_defers_instead_of_panicking() {
    let server = FakeServer::start(Script {
        mail: "garbage from a broken server".into(),
        ..Script::default()
    })
    .await;
    let (_file, source) = spool(MESSAGE);
    let recipients = rcpts(&["ok@example.test"]);
    let report = deliver_to(&server, &recipients, &source).await;
    assert!(
        matches!(&report.results[0].1, RcptResult::Deferred { reply } if reply.contains("malformed reply")),
        "{:?}",
        report.results
    );
}

#[tokio::test]
async fn silent_server_times_out_and_the_recipient_is_deferred() {
    let server = FakeServer::start(Script {
        silent: true,
        ..Script::default()
    })
    .await;
    let (_file, source) = spool(MESSAGE);
    let recipients = rcpts(&["ok@example.test"]);
    let config = ClientConfig {
        command_timeout: Duration::from_millis(300),
        ..config()
    };
    let report = deliver(
        &config,
        &hop(vec![server.candidate()]),
        &tx(&recipients),
        &source,
    )
    .await;
    assert_eq!(
        report.results[0].1,
        RcptResult::Deferred {
            reply: "conversation with mx.test[127.0.0.1] timed out while receiving the initial server greeting".into()
        }
    );
}

#[tokio::test]
async fn missing_queue_file_defers_without_connecting() {
    let server = FakeServer::start(Script::default()).await;
    let source = MessageSource::Spool {
        path: "/nonexistent/portcullis/queue/file".into(),
        offset: 0,
    };
    let recipients = rcpts(&["ok@example.test"]);
    let report = deliver_to(&server, &recipients, &source).await;
    assert!(
        matches!(&report.results[0].1, RcptResult::Deferred { reply } if reply.starts_with("local error"))
    );
    assert_eq!(server.received().connections, 0);
}

#[tokio::test]
async fn recipient_with_a_line_break_is_failed_and_never_sent() {
    let server = FakeServer::start(Script::default()).await;
    let (_file, source) = spool(MESSAGE);
    let recipients = rcpts(&[
        "evil@example.test>\r\nRSET\r\nRCPT TO:<x@y",
        "ok@example.test",
    ]);
    let report = deliver_to(&server, &recipients, &source).await;
    assert!(matches!(report.results[0].1, RcptResult::Failed { .. }));
    assert!(matches!(report.results[1].1, RcptResult::Delivered { .. }));
    assert!(!server.received().commands.iter().any(|c| c == "RSET"));
}

/// Whether every recipient of `report` was delivered.
fn all_delivered(report: &DeliveryReport) -> bool {
    report
        .results
        .iter()
        .all(|(_, r)| matches!(r, RcptResult::Delivered { .. }))
}

/// Delivers `recipients` through `server`, the only candidate, with the default client settings.
async fn deliver_to(
    server: &FakeServer,
    recipients: &[String],
    source: &MessageSource,
) -> DeliveryReport {
    deliver(
        &config(),
        &hop(vec![server.candidate()]),
        &tx(recipients),
        source,
    )
    .await
}

async fn deliver_through(
    cache: &SessionCache,
    server: &FakeServer,
    source: &MessageSource,
) -> DeliveryReport {
    let recipients = rcpts(&["ok@example.test"]);
    deliver_reusing(
        &config(),
        Some(cache),
        &hop(vec![server.candidate()]),
        &tx(&recipients),
        source,
    )
    .await
}

#[tokio::test]
async fn consecutive_messages_to_one_host_share_one_session_without_a_reset_between_them() {
    let server = FakeServer::start(Script::default()).await;
    let cache = SessionCache::new(SessionCacheLimits::default());
    let (_file, source) = spool(MESSAGE);
    for _ in 0..3 {
        let report = deliver_through(&cache, &server, &source).await;
        assert!(matches!(report.results[0].1, RcptResult::Delivered { .. }));
    }
    assert_eq!(cache.parked(), 1);
    {
        let seen = server.received();
        assert_eq!(seen.connections, 1, "{:?}", seen.commands);
        assert_eq!(seen.bodies.len(), 3);
        let ehlo = seen
            .commands
            .iter()
            .filter(|c| c.starts_with("EHLO"))
            .count();
        let rset = seen.commands.iter().filter(|c| *c == "RSET").count();
        // Each transaction ended with the reply to the data: nothing to reset.
        assert_eq!((ehlo, rset), (1, 0));
        assert!(!seen.commands.iter().any(|c| c == "QUIT"));
    }
    cache.close_all();
    assert_eq!(cache.parked(), 0);
    for _ in 0..50 {
        if server.received().commands.iter().any(|c| c == "QUIT") {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("closing the cache did not say QUIT");
}

#[tokio::test]
async fn a_transaction_cut_short_is_reset_before_its_session_is_parked() {
    let server = FakeServer::start(
        Script::default().answering_rcpt("ok@example.test", "550 5.1.1 no such user"),
    )
    .await;
    let cache = SessionCache::new(SessionCacheLimits::default());
    let (_file, source) = spool(MESSAGE);
    let report = deliver_through(&cache, &server, &source).await;
    assert!(matches!(report.results[0].1, RcptResult::Failed { .. }));
    let seen = server.received();
    assert_eq!(seen.commands.iter().filter(|c| *c == "RSET").count(), 1);
    assert_eq!(cache.parked(), 1);
}

#[tokio::test]
async fn a_parked_session_the_server_closed_is_replaced_by_a_fresh_connection() {
    let server = FakeServer::start(Script {
        close_after_message: true,
        ..Script::default()
    })
    .await;
    let cache = SessionCache::new(SessionCacheLimits::default());
    let (_file, source) = spool(MESSAGE);
    for _ in 0..2 {
        let report = deliver_through(&cache, &server, &source).await;
        assert!(
            matches!(report.results[0].1, RcptResult::Delivered { .. }),
            "{:?}",
            report.results
        );
    }
    assert_eq!(server.received().connections, 2);
    assert_eq!(server.received().bodies.len(), 2);
}

#[tokio::test]
async fn a_session_is_closed_after_its_reuse_limit_and_none_is_kept_when_the_cache_is_off() {
    let server = FakeServer::start(Script::default()).await;
    let limits = SessionCacheLimits {
        max_uses: 2,
        ..SessionCacheLimits::default()
    };
    let cache = SessionCache::new(limits);
    let (_file, source) = spool(MESSAGE);
    for _ in 0..3 {
        deliver_through(&cache, &server, &source).await;
    }
    assert_eq!(server.received().connections, 2);
    // The scripted server serves one connection at a time: let the parked one go first.
    cache.close_all();

    let off = SessionCache::new(SessionCacheLimits {
        idle_time: Duration::ZERO,
        ..SessionCacheLimits::default()
    });
    let report = deliver_through(&off, &server, &source).await;
    assert!(matches!(report.results[0].1, RcptResult::Delivered { .. }));
    assert_eq!(off.parked(), 0);
    assert_eq!(server.received().connections, 3);
}
