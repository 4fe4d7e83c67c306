//! The virtual LAN against a fake box built from the same smoltcp host type, in-process: ARP,
//! TCP both ways, the sink, the senders and their acknowledged set, and aborting on power cut.

use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use portcullis_hil::lan::host::{Conversation, Host};
use portcullis_hil::lan::link::{FrameLink, MemoryLink};
use portcullis_hil::lan::{LanLog, LanPlan, VirtualLan};
use portcullis_hil::smtp::client::{ClientSession, OutgoingMessage, Submission};
use portcullis_hil::smtp::server::SinkSession;

/// The fake box: one host at 192.0.2.10 driven by a thread, cabled to the LAN's uplink.
struct FakeBox {
    stop: Arc<Mutex<bool>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

type Setup = Box<dyn FnOnce(&mut Host) + Send>;

impl FakeBox {
    fn start(mut cable: MemoryLink, setup: Setup) -> FakeBox {
        let stop = Arc::new(Mutex::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut host = Host::new("box", Ipv4Addr::new(192, 0, 2, 10), LanLog::new());
            setup(&mut host);
            let start = Instant::now();
            while !*flag.lock().unwrap() {
                while let Some(f) = cable.recv().unwrap() {
                    host.port.rx.push_back(f);
                }
                host.poll(smoltcp::time::Instant::from_micros(
                    start.elapsed().as_micros() as i64,
                ));
                while let Some(f) = host.port.tx.pop_front() {
                    cable.send(&f).unwrap();
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        FakeBox {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for FakeBox {
    fn drop(&mut self) {
        *self.stop.lock().unwrap() = true;
        let _ = self.thread.take().unwrap().join();
    }
}

/// The fake box's SMTP server: accepts everything, like a gateway would.
struct BoxSmtp(SinkSession);

impl Conversation for BoxSmtp {
    fn opened(&mut self, out: &mut Vec<u8>) {
        self.0.greeting(out);
    }
    fn input(&mut self, data: &[u8], out: &mut Vec<u8>) {
        self.0.on_bytes(data, out);
    }
    fn wants_close(&self) -> bool {
        self.0.is_done()
    }
    fn ended(&mut self, _reason: &str) {}
}

/// The fake box relaying one message to the internal mail server.
struct BoxRelay(ClientSession);

impl Conversation for BoxRelay {
    fn opened(&mut self, _out: &mut Vec<u8>) {}
    fn input(&mut self, data: &[u8], out: &mut Vec<u8>) {
        self.0.on_bytes(data, out);
    }
    fn wants_close(&self) -> bool {
        self.0.is_done()
    }
    fn ended(&mut self, reason: &str) {
        self.0.connection_lost(reason);
    }
}

#[test]
fn senders_reach_the_box_and_the_box_reaches_the_internal_mail_server() {
    let (lan_end, box_end) = MemoryLink::pair();
    let dir = tempfile::tempdir().unwrap();
    let lan = VirtualLan::start(LanPlan::contract(), Box::new(lan_end)).unwrap();
    lan.transcript_to(dir.path()).unwrap();
    let _fake = FakeBox::start(
        box_end,
        Box::new(|host| {
            host.serve_tcp(
                25,
                Box::new(|_| Box::new(BoxSmtp(SinkSession::new("gw1.example.org")))),
            );
            let msg = OutgoingMessage::text(
                "relayed-1",
                "a@example.net",
                "b@example.org",
                "hi",
                "body\r\n.dot\r\n",
            );
            host.connect(
                (Ipv4Addr::new(192, 0, 2, 25), 25),
                Box::new(BoxRelay(ClientSession::new("gw1", vec![msg]))),
            );
        }),
    );

    let banner = lan
        .probe_smtp(0, Duration::from_secs(20))
        .expect("a banner from the box");
    assert_eq!(banner.code, 220);
    assert!(banner.first_line().starts_with("gw1.example.org"));

    let messages: Vec<_> = (0..3)
        .map(|i| {
            OutgoingMessage::text(
                &format!("in-{i}"),
                "x@example.net",
                "y@example.org",
                "s",
                "b",
            )
        })
        .collect();
    let pending: Vec<_> = (0..4)
        .map(|s| lan.send(s, (Ipv4Addr::new(192, 0, 2, 10), 25), messages.clone()))
        .collect();
    for p in pending {
        let report = p.wait(Duration::from_secs(20)).expect("the session ends");
        assert_eq!(report.outcomes.len(), 3, "{report:?}");
        assert!(
            report.outcomes.iter().all(|(_, o)| o.is_acknowledged()),
            "{report:?}"
        );
        assert_eq!(report.ended, "closed");
    }

    let (got, ok) = lan
        .mailbox()
        .wait_until(Duration::from_secs(20), |m| !m.is_empty());
    assert!(ok, "the internal mail server got the box's message");
    assert_eq!(got[0].server, "mail");
    assert_eq!(got[0].client.addr.to_string(), "192.0.2.10");
    assert_eq!(got[0].message.hil_id().as_deref(), Some("relayed-1"));
    assert!(got[0].message.data.ends_with(b"body\r\n.dot\r\n"));

    assert!(
        lan.frames_from_box() > 10,
        "frames from the box are counted"
    );
    drop(lan);
    let log = std::fs::read_to_string(dir.path().join("lan.log")).unwrap();
    assert!(log.contains("mail       192.0.2.10:"), "{log}");
    assert!(log.contains("delivered relayed-1"), "{log}");
    assert!(log.contains("sender1    < 220 gw1.example.org"), "{log}");
    assert!(
        std::fs::metadata(dir.path().join("lan.pcap"))
            .unwrap()
            .len()
            > 1000
    );
}

#[test]
fn sessions_to_a_box_that_is_gone_end_unacknowledged_when_aborted() {
    let (lan_end, _unplugged) = MemoryLink::pair();
    let lan = VirtualLan::start(LanPlan::contract(), Box::new(lan_end)).unwrap();
    let msg = OutgoingMessage::text("lost-1", "x@example.net", "y@example.org", "s", "b");
    let pending = lan.send(2, (Ipv4Addr::new(192, 0, 2, 10), 25), vec![msg]);
    std::thread::sleep(Duration::from_millis(300));
    lan.abort_senders();
    let report = pending
        .wait(Duration::from_secs(10))
        .expect("aborting ends the session");
    assert_eq!(report.sender, Ipv4Addr::new(192, 0, 2, 103));
    assert!(report.greeting.is_none());
    assert!(
        matches!(report.outcomes[0].1, Submission::Unfinished { .. }),
        "{report:?}"
    );
}
