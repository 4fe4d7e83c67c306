//! One host the harness plays on the LAN: its own MAC, one IPv4 address, a smoltcp interface
//! over a port of the harness' switch, and the conversations (TCP) and services (UDP) it runs.

use std::collections::VecDeque;
use std::net::Ipv4Addr;

use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{self, Device, DeviceCapabilities, Medium};
use smoltcp::socket::{tcp, udp};
use smoltcp::time::{Duration as SmolDuration, Instant};
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpAddress, IpCidr, IpEndpoint};

use super::log::LanLog;
use crate::dns::Zone;

/// TCP buffers per socket: enough for a whole small message in flight.
const TCP_BUFFER: usize = 64 * 1024;
/// A peer that stops answering (power cut) is given up after this long.
const TCP_TIMEOUT: SmolDuration = SmolDuration::from_secs(30);
/// Keep-alives let the timeout notice a dead peer while we wait for a reply.
const TCP_KEEPALIVE: SmolDuration = SmolDuration::from_secs(5);
/// Listening sockets kept open per server port: concurrent connections accepted at once.
const BACKLOG: usize = 8;

/// The switch port a host's interface sends and receives on: two frame queues.
#[derive(Debug, Default)]
pub struct PortDevice {
    /// Frames for this host, waiting for the interface.
    pub rx: VecDeque<Vec<u8>>,
    /// Frames the interface sent, waiting for the switch.
    pub tx: VecDeque<Vec<u8>>,
}

/// A received frame handed to smoltcp.
pub struct PortRx(Vec<u8>);
/// Room for one frame to send.
pub struct PortTx<'a>(&'a mut VecDeque<Vec<u8>>);

impl phy::RxToken for PortRx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl phy::TxToken for PortTx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut frame = vec![0; len];
        let r = f(&mut frame);
        self.0.push_back(frame);
        r
    }
}

impl Device for PortDevice {
    type RxToken<'a> = PortRx;
    type TxToken<'a> = PortTx<'a>;

    fn receive(&mut self, _now: Instant) -> Option<(PortRx, PortTx<'_>)> {
        let frame = self.rx.pop_front()?;
        Some((PortRx(frame), PortTx(&mut self.tx)))
    }

    fn transmit(&mut self, _now: Instant) -> Option<PortTx<'_>> {
        Some(PortTx(&mut self.tx))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = 1514;
        caps
    }
}

/// An application protocol on one TCP connection: the SMTP sink, a sender, the HTTP server.
pub trait Conversation: Send {
    /// The connection is established; say hello (servers greet) into `out`.
    fn opened(&mut self, out: &mut Vec<u8>);
    /// Bytes arrived; answer into `out`.
    fn input(&mut self, data: &[u8], out: &mut Vec<u8>);
    /// The conversation has said everything; close once `out` is flushed.
    fn wants_close(&self) -> bool;
    /// The connection is over (`reason` says how); called exactly once.
    fn ended(&mut self, reason: &str);
}

/// One TCP connection and the conversation on it.
struct TcpConn {
    handle: SocketHandle,
    conversation: Box<dyn Conversation>,
    out: Vec<u8>,
    opened: bool,
    ended: bool,
}

impl TcpConn {
    /// Moves bytes between socket and conversation; `false` once the connection is over.
    fn pump(&mut self, sockets: &mut SocketSet<'static>) -> bool {
        let socket = sockets.get_mut::<tcp::Socket>(self.handle);
        if !self.opened && socket.may_send() {
            self.opened = true;
            self.conversation.opened(&mut self.out);
        }
        if self.opened {
            while socket.can_recv() {
                let conv = &mut self.conversation;
                let out = &mut self.out;
                if socket
                    .recv(|data| {
                        conv.input(data, out);
                        (data.len(), ())
                    })
                    .is_err()
                {
                    break;
                }
            }
            while !self.out.is_empty() && socket.can_send() {
                match socket.send_slice(&self.out) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        self.out.drain(..n);
                    }
                }
            }
            if self.out.is_empty() && self.conversation.wants_close() && socket.may_send() {
                socket.close();
            }
            if socket.state() == tcp::State::CloseWait && !self.conversation.wants_close() {
                // The peer closed its side first; we have nothing more to say either.
                self.end("closed by the peer");
                sockets.get_mut::<tcp::Socket>(self.handle).close();
                return true;
            }
        }
        let socket = sockets.get_mut::<tcp::Socket>(self.handle);
        if !socket.is_active() || socket.state() == tcp::State::TimeWait {
            let why = if !self.opened {
                "connection refused or timed out"
            } else if self.conversation.wants_close() {
                "closed"
            } else {
                "reset or timed out"
            };
            self.end(why);
            return false;
        }
        true
    }

    fn end(&mut self, why: &str) {
        if !self.ended {
            self.ended = true;
            self.conversation.ended(why);
        }
    }
}

/// Makes the conversation for a connection accepted from `peer`.
pub type ConversationFactory = Box<dyn FnMut(IpEndpoint) -> Box<dyn Conversation> + Send>;

/// A TCP service: a few listening sockets on one port and the connections they accepted.
struct TcpServer {
    port: u16,
    listening: Vec<SocketHandle>,
    factory: ConversationFactory,
}

/// A host on the virtual LAN (see the module docs).
pub struct Host {
    /// Short name for logs: `dns`, `mail`, `sender3`, …
    pub name: String,
    /// Its address.
    pub ip: Ipv4Addr,
    /// Its MAC (locally administered, derived from the address).
    pub mac: EthernetAddress,
    /// Its switch port.
    pub port: PortDevice,
    iface: Interface,
    sockets: SocketSet<'static>,
    servers: Vec<TcpServer>,
    conns: Vec<TcpConn>,
    dns: Option<(SocketHandle, Zone)>,
    next_port: u16,
    log: LanLog,
}

impl Host {
    /// A host `name` at `ip`/24 with MAC 02:00:c0:00:02:<last octet>.
    pub fn new(name: &str, ip: Ipv4Addr, log: LanLog) -> Host {
        let o = ip.octets();
        let mac = EthernetAddress([0x02, 0x00, o[0], o[1], o[2], o[3]]);
        let mut port = PortDevice::default();
        let mut config = Config::new(HardwareAddress::Ethernet(mac));
        config.random_seed = u64::from(u32::from(ip));
        let mut iface = Interface::new(config, &mut port, Instant::from_millis(0));
        iface.update_ip_addrs(|addrs| {
            addrs
                .push(IpCidr::new(IpAddress::Ipv4(ip), 24))
                .expect("one address fits");
        });
        Host {
            name: name.to_string(),
            ip,
            mac,
            port,
            iface,
            sockets: SocketSet::new(Vec::new()),
            servers: Vec::new(),
            conns: Vec::new(),
            dns: None,
            next_port: 49152,
            log,
        }
    }

    /// Runs a TCP service on `port`; `factory` makes each connection's conversation.
    pub fn serve_tcp(&mut self, port: u16, factory: ConversationFactory) {
        self.servers.push(TcpServer {
            port,
            listening: Vec::new(),
            factory,
        });
    }

    /// Answers DNS queries on UDP port 53 from `zone`.
    pub fn serve_dns(&mut self, zone: Zone) {
        let socket = udp::Socket::new(
            udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 32], vec![0; 32 * 1024]),
            udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 32], vec![0; 32 * 1024]),
        );
        let handle = self.sockets.add(socket);
        self.sockets
            .get_mut::<udp::Socket>(handle)
            .bind(53)
            .expect("port 53 is free on a new host");
        self.dns = Some((handle, zone));
    }

    /// Opens a TCP connection to `to` and runs `conversation` on it.
    pub fn connect(&mut self, to: (Ipv4Addr, u16), conversation: Box<dyn Conversation>) {
        let handle = self.sockets.add(new_tcp_socket());
        let local = self.next_port;
        self.next_port = if self.next_port == u16::MAX {
            49152
        } else {
            self.next_port + 1
        };
        let socket = self.sockets.get_mut::<tcp::Socket>(handle);
        let mut conversation = conversation;
        if let Err(e) = socket.connect(self.iface.context(), (IpAddress::Ipv4(to.0), to.1), local) {
            conversation.ended(&format!("cannot connect: {e}"));
            self.sockets.remove(handle);
            return;
        }
        self.conns.push(TcpConn {
            handle,
            conversation,
            out: Vec::new(),
            opened: false,
            ended: false,
        });
    }

    /// Aborts every connection this host opened or accepted (sends RST).
    pub fn abort_all(&mut self) {
        for c in &mut self.conns {
            self.sockets.get_mut::<tcp::Socket>(c.handle).abort();
            c.end("aborted by the harness");
        }
    }

    /// Connections open right now.
    pub fn open_connections(&self) -> usize {
        self.conns.len()
    }

    /// Runs the stack and every conversation once; returns when smoltcp wants to be polled
    /// again at the latest.
    pub fn poll(&mut self, now: Instant) -> Option<SmolDuration> {
        self.refill_listeners();
        self.iface.poll(now, &mut self.port, &mut self.sockets);
        self.accept_connections();
        self.conns.retain_mut(|c| {
            let alive = c.pump(&mut self.sockets);
            if !alive {
                self.sockets.remove(c.handle);
            }
            alive
        });
        self.answer_dns();
        self.iface.poll(now, &mut self.port, &mut self.sockets);
        self.iface.poll_delay(now, &self.sockets)
    }

    fn refill_listeners(&mut self) {
        for server in &mut self.servers {
            while server.listening.len() < BACKLOG {
                let handle = self.sockets.add(new_tcp_socket());
                self.sockets
                    .get_mut::<tcp::Socket>(handle)
                    .listen(server.port)
                    .expect("a new socket can listen");
                server.listening.push(handle);
            }
        }
    }

    fn accept_connections(&mut self) {
        for server in &mut self.servers {
            let sockets = &mut self.sockets;
            let mut accepted = Vec::new();
            server.listening.retain(|&h| {
                let s = sockets.get::<tcp::Socket>(h);
                if s.state() == tcp::State::Listen {
                    return true;
                }
                accepted.push((h, s.remote_endpoint()));
                false
            });
            for (handle, peer) in accepted {
                let Some(peer) = peer else {
                    sockets.remove(handle);
                    continue;
                };
                self.log.line(
                    &self.name,
                    &format!("accepted {peer} on port {}", server.port),
                );
                self.conns.push(TcpConn {
                    handle,
                    conversation: (server.factory)(peer),
                    out: Vec::new(),
                    opened: false,
                    ended: false,
                });
            }
        }
    }

    fn answer_dns(&mut self) {
        let Some((handle, zone)) = self.dns.as_ref() else {
            return;
        };
        let socket = self.sockets.get_mut::<udp::Socket>(*handle);
        while let Ok((query, meta)) = socket.recv() {
            let endpoint = meta.endpoint;
            let summary = summarize_query(query);
            match zone.answer(query) {
                Some(answer) => {
                    self.log.line(
                        &self.name,
                        &format!("{endpoint} asks {summary}: {}", summarize_answer(&answer)),
                    );
                    let _ = socket.send_slice(&answer, endpoint);
                }
                None => self.log.line(
                    &self.name,
                    &format!("{endpoint} sent a malformed query (dropped)"),
                ),
            }
        }
    }
}

fn new_tcp_socket() -> tcp::Socket<'static> {
    let mut s = tcp::Socket::new(
        tcp::SocketBuffer::new(vec![0; TCP_BUFFER]),
        tcp::SocketBuffer::new(vec![0; TCP_BUFFER]),
    );
    s.set_timeout(Some(TCP_TIMEOUT));
    s.set_keep_alive(Some(TCP_KEEPALIVE));
    s.set_nagle_enabled(false);
    s
}

fn summarize_query(query: &[u8]) -> String {
    match hickory_proto::op::Message::from_vec(query) {
        Ok(m) => m
            .queries()
            .iter()
            .map(|q| format!("{} {}", q.query_type(), q.name()))
            .collect::<Vec<_>>()
            .join(", "),
        Err(e) => format!("(unparseable: {e})"),
    }
}

fn summarize_answer(answer: &[u8]) -> String {
    match hickory_proto::op::Message::from_vec(answer) {
        Ok(m) => {
            let records: Vec<String> = m
                .answers()
                .iter()
                .filter_map(|r| r.data().map(|d| d.to_string()))
                .collect();
            format!("{} [{}]", m.response_code(), records.join(", "))
        }
        Err(e) => format!("(unparseable: {e})"),
    }
}
