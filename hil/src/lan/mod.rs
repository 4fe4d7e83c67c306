//! The virtual LAN the harness plays (192.0.2.0/24, see the appliance contract): the name
//! server, the internal mail server, an "outside" mail server, the definitions server and the
//! internet senders, each its own smoltcp host with its own MAC on a small switch whose uplink
//! is the cable to the box ([`link`]).
//!
//! smoltcp is poll-based, so one thread owns every host and socket: it moves frames between
//! the cable and the hosts' ports, polls each host (which drives its conversations), and
//! sleeps in `poll(2)` on the cable until a frame arrives or a timer is due. The test thread
//! talks to it through [`VirtualLan`]: commands over a channel, results over reply channels,
//! and the mail servers' [`Mailbox`].

pub mod host;
pub mod link;
pub mod log;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use smoltcp::time::Instant as SmolInstant;
use smoltcp::wire::{EthernetAddress, EthernetFrame, IpEndpoint};

use crate::HilError;
use crate::dns::Zone;
use crate::http::FileServerSession;
use crate::smtp::Reply;
use crate::smtp::client::{ClientSession, OutgoingMessage, Submission};
use crate::smtp::server::{ReceivedMessage, SinkSession};
use host::{Conversation, Host};
use link::FrameLink;
pub use log::LanLog;

/// The longest the LAN thread sleeps when nothing happens, so commands are picked up soon.
const IDLE_WAIT: Duration = Duration::from_millis(5);

/// Who is where on the LAN. [`LanPlan::contract`] is the appliance contract's layout.
#[derive(Debug, Clone)]
pub struct LanPlan {
    /// The box under test.
    pub box_ip: Ipv4Addr,
    /// Router and name server (the box's gateway and DNS).
    pub dns: Ipv4Addr,
    /// The internal mail server (the sink mail for local domains goes to).
    pub mail_server: Ipv4Addr,
    /// A mail server outside (MX of `example.net`): mail arriving here was relayed.
    pub outside_mx: Ipv4Addr,
    /// The definitions update server (HTTP, port 80).
    pub definitions: Ipv4Addr,
    /// Directory the definitions server serves (`None`: every request is 404).
    pub definitions_dir: Option<PathBuf>,
    /// The "internet" senders, each a distinct address.
    pub senders: Vec<Ipv4Addr>,
}

impl LanPlan {
    /// The contract's addresses: box .10, DNS .1, mail .25, definitions .80, senders
    /// .101–.120; plus the outside MX at .26.
    pub fn contract() -> LanPlan {
        let ip = |last| Ipv4Addr::new(192, 0, 2, last);
        LanPlan {
            box_ip: ip(10),
            dns: ip(1),
            mail_server: ip(25),
            outside_mx: ip(26),
            definitions: ip(80),
            definitions_dir: None,
            senders: (101..=120).map(ip).collect(),
        }
    }

    /// The DNS zones served: `example.org` (local domain; MX → the internal mail server, the
    /// box as `gw1`), `example.net` (outside; MX → the outside server, the senders' names),
    /// reverse names for every host, and the blocklist `dnsbl.example.net` listing the last
    /// sender.
    pub fn zone(&self) -> Zone {
        let mut z = Zone::new()
            .origin("example.org")
            .origin("example.net")
            .origin("2.0.192.in-addr.arpa")
            .mx("example.org", 10, "mail.example.org")
            .a("mail.example.org", self.mail_server)
            .a("gw1.example.org", self.box_ip)
            .a("defs.example.org", self.definitions)
            .a("ns.example.org", self.dns)
            .mx("example.net", 10, "mx.example.net")
            .a("mx.example.net", self.outside_mx)
            .ptr(self.box_ip, "gw1.example.org")
            .ptr(self.mail_server, "mail.example.org")
            .ptr(self.outside_mx, "mx.example.net");
        for (i, &ip) in self.senders.iter().enumerate() {
            let name = format!("sender{}.example.net", i + 1);
            z = z.a(&name, ip).ptr(ip, &name);
        }
        if let Some(&listed) = self.senders.last() {
            z = z.rbl_listing(
                "dnsbl.example.net",
                listed,
                "listed by the HIL harness for tests",
            );
        }
        z
    }
}

/// A message one of the LAN's mail servers received.
#[derive(Debug, Clone)]
pub struct Delivered {
    /// Which server: `mail` (internal) or `outside`.
    pub server: String,
    /// The client that delivered it (the box, normally).
    pub client: IpEndpoint,
    /// When, on the LAN's clock.
    pub at: Duration,
    /// The message.
    pub message: ReceivedMessage,
}

/// Everything the LAN's mail servers received, shared with the test thread.
#[derive(Debug, Clone, Default)]
pub struct Mailbox {
    inner: Arc<(Mutex<Vec<Delivered>>, Condvar)>,
}

impl Mailbox {
    fn push(&self, d: Delivered) {
        let (lock, cv) = &*self.inner;
        lock.lock().expect("mailbox lock").push(d);
        cv.notify_all();
    }

    /// A copy of everything received so far, in order of arrival.
    pub fn snapshot(&self) -> Vec<Delivered> {
        self.inner.0.lock().expect("mailbox lock").clone()
    }

    /// Waits until `done` holds for the messages received so far, or `timeout` passes;
    /// returns the messages either way and whether `done` held.
    pub fn wait_until(
        &self,
        timeout: Duration,
        mut done: impl FnMut(&[Delivered]) -> bool,
    ) -> (Vec<Delivered>, bool) {
        let (lock, cv) = &*self.inner;
        let deadline = std::time::Instant::now() + timeout;
        let mut guard = lock.lock().expect("mailbox lock");
        loop {
            if done(&guard) {
                return (guard.clone(), true);
            }
            let now = std::time::Instant::now();
            if now >= deadline {
                return (guard.clone(), false);
            }
            guard = cv
                .wait_timeout(guard, deadline - now)
                .expect("mailbox lock")
                .0;
        }
    }
}

/// What one sender's SMTP session achieved.
#[derive(Debug, Clone)]
pub struct SessionReport {
    /// The sender's address.
    pub sender: Ipv4Addr,
    /// The server's greeting, if one was read.
    pub greeting: Option<Reply>,
    /// Each message's outcome, by message id.
    pub outcomes: Vec<(String, Submission)>,
    /// How the connection ended.
    pub ended: String,
}

/// A session started with [`VirtualLan::send`]; wait for its report.
#[derive(Debug)]
pub struct PendingSession {
    rx: Receiver<SessionReport>,
}

impl PendingSession {
    /// Waits up to `timeout` for the session to end.
    pub fn wait(&self, timeout: Duration) -> Option<SessionReport> {
        self.rx.recv_timeout(timeout).ok()
    }
}

enum Command {
    Connect {
        sender: usize,
        to: (Ipv4Addr, u16),
        helo: String,
        messages: Vec<OutgoingMessage>,
        report: Sender<SessionReport>,
    },
    AbortSenders,
    Stop,
}

/// The running LAN (see the module docs). Dropping it stops the thread.
pub struct VirtualLan {
    plan: LanPlan,
    commands: Sender<Command>,
    thread: Option<JoinHandle<()>>,
    mailbox: Mailbox,
    log: LanLog,
    frames_from_box: Arc<AtomicU64>,
}

impl VirtualLan {
    /// Builds the hosts of `plan` and starts the LAN thread on `link`.
    pub fn start(plan: LanPlan, link: Box<dyn FrameLink>) -> Result<VirtualLan, HilError> {
        let log = LanLog::new();
        let mailbox = Mailbox::default();
        let hosts = build_hosts(&plan, &log, &mailbox);
        let (commands, rx) = mpsc::channel();
        let thread_log = log.clone();
        let frames_from_box = Arc::new(AtomicU64::new(0));
        let counter = frames_from_box.clone();
        let thread = std::thread::Builder::new()
            .name("virtual-lan".into())
            .spawn(move || Switch::new(link, hosts, thread_log, counter).run(rx))
            .map_err(|e| HilError::io("starting the virtual LAN thread", e))?;
        Ok(VirtualLan {
            plan,
            commands,
            thread: Some(thread),
            mailbox,
            log,
            frames_from_box,
        })
    }

    /// Ethernet frames received from the box so far (none at all means its NIC is not up).
    pub fn frames_from_box(&self) -> u64 {
        self.frames_from_box.load(Ordering::Relaxed)
    }

    /// The layout the LAN was built from.
    pub fn plan(&self) -> &LanPlan {
        &self.plan
    }

    /// Messages the LAN's mail servers received.
    pub fn mailbox(&self) -> &Mailbox {
        &self.mailbox
    }

    /// The transcript writer (`lan.log`, `lan.pcap`).
    pub fn log(&self) -> &LanLog {
        &self.log
    }

    /// Writes the transcript to `dir/lan.log` and `dir/lan.pcap` from now on.
    pub fn transcript_to(&self, dir: &Path) -> Result<(), HilError> {
        self.log.open(dir).map_err(|e| {
            HilError::io(
                format!("opening the LAN transcript in {}", dir.display()),
                e,
            )
        })
    }

    /// Sender number `sender` (0-based) opens an SMTP session to `to` and submits `messages`.
    pub fn send(
        &self,
        sender: usize,
        to: (Ipv4Addr, u16),
        messages: Vec<OutgoingMessage>,
    ) -> PendingSession {
        let (report, rx) = mpsc::channel();
        let helo = format!("sender{}.example.net", sender + 1);
        let _ = self.commands.send(Command::Connect {
            sender,
            to,
            helo,
            messages,
            report,
        });
        PendingSession { rx }
    }

    /// Connects from sender `sender` to the box's port 25 and returns the greeting: the
    /// contract's "SMTP ready" test (a `220 ` banner read over the LAN).
    pub fn probe_smtp(&self, sender: usize, timeout: Duration) -> Option<Reply> {
        let pending = self.send(sender, (self.plan.box_ip, 25), Vec::new());
        pending.wait(timeout).and_then(|r| r.greeting)
    }

    /// Aborts every sender's connection (after a power cut: nobody answers them any more).
    pub fn abort_senders(&self) {
        let _ = self.commands.send(Command::AbortSenders);
    }
}

impl Drop for VirtualLan {
    fn drop(&mut self) {
        let _ = self.commands.send(Command::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.log.close();
    }
}

/// The hosts of a plan, in a fixed order: dns, mail, outside, defs, then the senders.
fn build_hosts(plan: &LanPlan, log: &LanLog, mailbox: &Mailbox) -> Vec<Host> {
    let mut hosts = Vec::new();
    let mut dns = Host::new("dns", plan.dns, log.clone());
    dns.serve_dns(plan.zone());
    hosts.push(dns);
    for (name, fqdn, ip) in [
        ("mail", "mail.example.org", plan.mail_server),
        ("outside", "mx.example.net", plan.outside_mx),
    ] {
        let mut host = Host::new(name, ip, log.clone());
        let (log, mailbox) = (log.clone(), mailbox.clone());
        host.serve_tcp(
            25,
            Box::new(move |peer| {
                Box::new(SinkConversation {
                    server: name,
                    session: SinkSession::new(fqdn),
                    peer,
                    mailbox: mailbox.clone(),
                    log: log.clone(),
                })
            }),
        );
        hosts.push(host);
    }
    let mut defs = Host::new("defs", plan.definitions, log.clone());
    let (root, defs_log) = (plan.definitions_dir.clone(), log.clone());
    defs.serve_tcp(
        80,
        Box::new(move |peer| {
            Box::new(HttpConversation {
                session: FileServerSession::new(root.as_deref()),
                peer,
                log: defs_log.clone(),
            })
        }),
    );
    hosts.push(defs);
    for (i, &ip) in plan.senders.iter().enumerate() {
        hosts.push(Host::new(&format!("sender{}", i + 1), ip, log.clone()));
    }
    hosts
}

/// Index of the first sender in the host list (see [`build_hosts`]).
const FIRST_SENDER: usize = 4;

/// The LAN thread's state: the cable and the hosts behind it.
struct Switch {
    link: Box<dyn FrameLink>,
    hosts: Vec<Host>,
    log: LanLog,
    start: std::time::Instant,
    frames_from_box: Arc<AtomicU64>,
}

impl Switch {
    fn new(
        link: Box<dyn FrameLink>,
        hosts: Vec<Host>,
        log: LanLog,
        frames_from_box: Arc<AtomicU64>,
    ) -> Switch {
        Switch {
            link,
            hosts,
            log,
            start: std::time::Instant::now(),
            frames_from_box,
        }
    }

    fn run(mut self, commands: Receiver<Command>) {
        loop {
            loop {
                match commands.try_recv() {
                    Ok(Command::Stop) | Err(mpsc::TryRecvError::Disconnected) => return,
                    Ok(c) => self.command(c),
                    Err(mpsc::TryRecvError::Empty) => break,
                }
            }
            let moved = self.move_frames();
            let now = SmolInstant::from_micros(self.start.elapsed().as_micros() as i64);
            let mut wait = IDLE_WAIT;
            for host in &mut self.hosts {
                if let Some(d) = host.poll(now) {
                    wait = wait.min(Duration::from_micros(d.total_micros()));
                }
            }
            let moved = self.move_frames() || moved;
            if !moved {
                self.sleep(wait);
            }
        }
    }

    fn command(&mut self, command: Command) {
        match command {
            Command::Connect {
                sender,
                to,
                helo,
                messages,
                report,
            } => {
                let Some(host) = self.hosts.get_mut(FIRST_SENDER + sender) else {
                    let _ = report.send(SessionReport {
                        sender: Ipv4Addr::UNSPECIFIED,
                        greeting: None,
                        outcomes: Vec::new(),
                        ended: format!("there is no sender number {}", sender + 1),
                    });
                    return;
                };
                let ids: Vec<&str> = messages.iter().map(|m| m.id.as_str()).collect();
                self.log.line(
                    &host.name,
                    &format!(
                        "connecting to {}:{} to send {} message(s) {}",
                        to.0,
                        to.1,
                        ids.len(),
                        ids.join(" ")
                    ),
                );
                let conversation = SenderConversation {
                    host: host.name.clone(),
                    sender: host.ip,
                    session: Some(ClientSession::new(&helo, messages)),
                    report: Some(report),
                    log: self.log.clone(),
                };
                host.connect(to, Box::new(conversation));
            }
            Command::AbortSenders => {
                for host in &mut self.hosts[FIRST_SENDER..] {
                    host.abort_all();
                }
            }
            Command::Stop => {}
        }
    }

    /// Cable → ports and ports → cable (and port → port); whether any frame moved.
    fn move_frames(&mut self) -> bool {
        let mut moved = false;
        while let Some(event) = self.link.take_event() {
            self.log.line("link", &event);
            tracing::info!(event = %event, "virtual LAN link");
        }
        loop {
            match self.link.recv() {
                Ok(Some(frame)) => {
                    moved = true;
                    self.frames_from_box.fetch_add(1, Ordering::Relaxed);
                    self.log.frame(&frame);
                    self.deliver(&frame, None);
                }
                Ok(None) => break,
                Err(e) => {
                    self.log.line("link", &format!("receive error: {e}"));
                    break;
                }
            }
        }
        for i in 0..self.hosts.len() {
            while let Some(frame) = self.hosts[i].port.tx.pop_front() {
                moved = true;
                self.log.frame(&frame);
                let dst = destination(&frame);
                if dst
                    .is_none_or(|d| d.is_broadcast() || d.is_multicast() || !self.is_harness_mac(d))
                    && let Err(e) = self.link.send(&frame)
                {
                    self.log.line("link", &format!("send error: {e}"));
                }
                self.deliver(&frame, Some(i));
            }
        }
        moved
    }

    fn is_harness_mac(&self, mac: EthernetAddress) -> bool {
        self.hosts.iter().any(|h| h.mac == mac)
    }

    /// Queues `frame` for every host it is addressed to, except its sender `from`.
    fn deliver(&mut self, frame: &[u8], from: Option<usize>) {
        let Some(dst) = destination(frame) else {
            return;
        };
        for (i, host) in self.hosts.iter_mut().enumerate() {
            if Some(i) != from && (dst == host.mac || dst.is_broadcast() || dst.is_multicast()) {
                host.port.rx.push_back(frame.to_vec());
            }
        }
    }

    fn sleep(&self, wait: Duration) {
        let fds = self.link.wait_fds();
        if fds.is_empty() {
            std::thread::sleep(wait.min(Duration::from_millis(1)));
            return;
        }
        let mut pollfds: Vec<libc::pollfd> = fds
            .iter()
            .map(|&fd| libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        // SAFETY: poll on a valid array of pollfd of the given length.
        unsafe {
            libc::poll(
                pollfds.as_mut_ptr(),
                pollfds.len() as libc::nfds_t,
                wait.as_millis().max(1) as libc::c_int,
            );
        }
    }
}

fn destination(frame: &[u8]) -> Option<EthernetAddress> {
    EthernetFrame::new_checked(frame).ok().map(|f| f.dst_addr())
}

/// The internal (or outside) mail server's side of one connection.
struct SinkConversation {
    server: &'static str,
    session: SinkSession,
    peer: IpEndpoint,
    mailbox: Mailbox,
    log: LanLog,
}

impl SinkConversation {
    fn flush_transcript(&mut self) {
        for line in self.session.drain_transcript() {
            self.log.line(self.server, &format!("{} {line}", self.peer));
        }
    }
}

impl Conversation for SinkConversation {
    fn opened(&mut self, out: &mut Vec<u8>) {
        self.session.greeting(out);
        self.flush_transcript();
    }

    fn input(&mut self, data: &[u8], out: &mut Vec<u8>) {
        let received = self.session.on_bytes(data, out);
        self.flush_transcript();
        for message in received {
            self.log.line(
                self.server,
                &format!(
                    "{} delivered {} from <{}> to {:?}",
                    self.peer,
                    message.hil_id().unwrap_or_else(|| "(no X-HIL-Id)".into()),
                    message.mail_from,
                    message.rcpt_to
                ),
            );
            self.mailbox.push(Delivered {
                server: self.server.to_string(),
                client: self.peer,
                at: self.log.elapsed(),
                message,
            });
        }
    }

    fn wants_close(&self) -> bool {
        self.session.is_done()
    }

    fn ended(&mut self, reason: &str) {
        self.log
            .line(self.server, &format!("{} connection {reason}", self.peer));
    }
}

/// The definitions server's side of one connection.
struct HttpConversation {
    session: FileServerSession,
    peer: IpEndpoint,
    log: LanLog,
}

impl Conversation for HttpConversation {
    fn opened(&mut self, _out: &mut Vec<u8>) {}

    fn input(&mut self, data: &[u8], out: &mut Vec<u8>) {
        self.session.on_bytes(data, out);
        if let Some(summary) = self.session.summary() {
            self.log.line("defs", &format!("{} {summary}", self.peer));
        }
    }

    fn wants_close(&self) -> bool {
        self.session.is_done()
    }

    fn ended(&mut self, _reason: &str) {}
}

/// A sender's side of one SMTP session; reports its outcome when the connection ends.
struct SenderConversation {
    host: String,
    sender: Ipv4Addr,
    session: Option<ClientSession>,
    report: Option<Sender<SessionReport>>,
    log: LanLog,
}

impl SenderConversation {
    fn flush_transcript(&mut self) {
        if let Some(s) = self.session.as_mut() {
            for line in s.drain_transcript() {
                self.log.line(&self.host, &line);
            }
        }
    }
}

impl Conversation for SenderConversation {
    fn opened(&mut self, _out: &mut Vec<u8>) {}

    fn input(&mut self, data: &[u8], out: &mut Vec<u8>) {
        if let Some(s) = self.session.as_mut() {
            s.on_bytes(data, out);
        }
        self.flush_transcript();
    }

    fn wants_close(&self) -> bool {
        self.session.as_ref().is_none_or(|s| s.is_done())
    }

    fn ended(&mut self, reason: &str) {
        let Some(mut session) = self.session.take() else {
            return;
        };
        session.connection_lost(reason);
        for line in session.drain_transcript() {
            self.log.line(&self.host, &line);
        }
        self.log
            .line(&self.host, &format!("session ended: {reason}"));
        let (greeting, outcomes) = session.finish();
        if let Some(report) = self.report.take() {
            let _ = report.send(SessionReport {
                sender: self.sender,
                greeting,
                outcomes,
                ended: reason.to_string(),
            });
        }
    }
}
