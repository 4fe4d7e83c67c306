//! The cable between the virtual LAN and the box: Ethernet frames in and out.
//!
//! - [`StreamLink`]: QEMU `-netdev stream,server=off,addr.type=unix,addr.path=P`. The harness
//!   listens on `P`; QEMU connects when it starts, and again after every restart (a power
//!   cycle unplugs and replugs the cable). Each frame is a 4-byte big-endian length and the
//!   frame.
//! - [`DgramLink`]: QEMU `-netdev dgram,local.type=unix,local.path=Q,remote.type=unix,remote.path=P`.
//!   One datagram per frame, no length.
//! - [`PacketLink`]: a real box on a host NIC, through an `AF_PACKET` raw socket bound to the
//!   named interface (needs `CAP_NET_RAW`; the NIC must be cabled to the box only).
//! - [`MemoryLink`]: an in-process pair for the tests.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::{UnixDatagram, UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Largest frame accepted from the box: an Ethernet frame with a VLAN tag, plus slack.
pub const MAX_FRAME: usize = 1536;

/// Bytes queued towards a link that is not reading before new frames are dropped, like a
/// switch port's buffer; TCP on both ends recovers.
const MAX_BACKLOG: usize = 4 * 1024 * 1024;

/// A bidirectional carrier of Ethernet frames. Never blocks.
pub trait FrameLink: Send {
    /// The next frame the box sent, if one is ready.
    fn recv(&mut self) -> io::Result<Option<Vec<u8>>>;
    /// Sends a frame to the box; with no box attached it is dropped, as on an unplugged cable.
    fn send(&mut self, frame: &[u8]) -> io::Result<()>;
    /// File descriptors to wait on for incoming frames (or connections).
    fn wait_fds(&self) -> Vec<RawFd>;
    /// A change of attachment since the last call ("box connected", "box disconnected").
    fn take_event(&mut self) -> Option<String> {
        None
    }
}

/// The stream transport (see the module docs).
#[derive(Debug)]
pub struct StreamLink {
    path: PathBuf,
    listener: UnixListener,
    conn: Option<UnixStream>,
    inbox: Vec<u8>,
    outbox: Vec<u8>,
    events: VecDeque<String>,
}

impl StreamLink {
    /// Listens on the unix socket `path` (replacing a stale one) for QEMU to connect.
    pub fn listen(path: &Path) -> io::Result<StreamLink> {
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path)?;
        listener.set_nonblocking(true)?;
        Ok(StreamLink {
            path: path.to_path_buf(),
            listener,
            conn: None,
            inbox: Vec::new(),
            outbox: Vec::new(),
            events: VecDeque::new(),
        })
    }

    /// The socket path QEMU must connect to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn accept(&mut self) -> io::Result<()> {
        match self.listener.accept() {
            Ok((conn, _)) => {
                conn.set_nonblocking(true)?;
                if self.conn.is_some() {
                    self.events
                        .push_back("box reconnected (the previous connection is dropped)".into());
                } else {
                    self.events.push_back("box connected".into());
                }
                self.conn = Some(conn);
                self.inbox.clear();
                self.outbox.clear();
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn disconnect(&mut self, why: &str) {
        if self.conn.take().is_some() {
            self.events.push_back(format!("box disconnected ({why})"));
        }
        self.inbox.clear();
        self.outbox.clear();
    }

    fn flush(&mut self) {
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        while !self.outbox.is_empty() {
            match conn.write(&self.outbox) {
                Ok(0) => return self.disconnect("write returned 0"),
                Ok(n) => {
                    self.outbox.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return self.disconnect(&e.to_string()),
            }
        }
    }
}

impl FrameLink for StreamLink {
    fn recv(&mut self) -> io::Result<Option<Vec<u8>>> {
        self.accept()?;
        self.flush();
        loop {
            if self.inbox.len() >= 4 {
                let len = u32::from_be_bytes(self.inbox[..4].try_into().expect("4 bytes")) as usize;
                if len > MAX_FRAME * 64 {
                    self.disconnect(&format!("frame length {len} is not believable"));
                    return Ok(None);
                }
                if self.inbox.len() >= 4 + len {
                    let frame = self.inbox[4..4 + len].to_vec();
                    self.inbox.drain(..4 + len);
                    return Ok(Some(frame));
                }
            }
            let Some(conn) = self.conn.as_mut() else {
                return Ok(None);
            };
            let mut buf = [0u8; 64 * 1024];
            match conn.read(&mut buf) {
                Ok(0) => {
                    self.disconnect("end of stream: QEMU stopped");
                    return Ok(None);
                }
                Ok(n) => self.inbox.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.disconnect(&e.to_string());
                    return Ok(None);
                }
            }
        }
    }

    fn send(&mut self, frame: &[u8]) -> io::Result<()> {
        if self.conn.is_none() || self.outbox.len() > MAX_BACKLOG {
            return Ok(());
        }
        self.outbox
            .extend_from_slice(&(frame.len() as u32).to_be_bytes());
        self.outbox.extend_from_slice(frame);
        self.flush();
        Ok(())
    }

    fn wait_fds(&self) -> Vec<RawFd> {
        let mut fds = vec![self.listener.as_raw_fd()];
        fds.extend(self.conn.as_ref().map(|c| c.as_raw_fd()));
        fds
    }

    fn take_event(&mut self) -> Option<String> {
        self.events.pop_front()
    }
}

impl Drop for StreamLink {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The datagram transport (see the module docs).
#[derive(Debug)]
pub struct DgramLink {
    socket: UnixDatagram,
    ours: PathBuf,
    theirs: PathBuf,
}

impl DgramLink {
    /// Binds `ours` (QEMU's `remote.path`) and sends to `theirs` (QEMU's `local.path`).
    pub fn bind(ours: &Path, theirs: &Path) -> io::Result<DgramLink> {
        let _ = std::fs::remove_file(ours);
        let socket = UnixDatagram::bind(ours)?;
        socket.set_nonblocking(true)?;
        Ok(DgramLink {
            socket,
            ours: ours.to_path_buf(),
            theirs: theirs.to_path_buf(),
        })
    }
}

impl FrameLink for DgramLink {
    fn recv(&mut self) -> io::Result<Option<Vec<u8>>> {
        let mut buf = vec![0u8; 64 * 1024];
        match self.socket.recv(&mut buf) {
            Ok(n) => {
                buf.truncate(n);
                Ok(Some(buf))
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn send(&mut self, frame: &[u8]) -> io::Result<()> {
        match self.socket.send_to(frame, &self.theirs) {
            Ok(_) => Ok(()),
            // No QEMU bound to its end (powered off), or its queue is full: the frame is lost.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound
                        | io::ErrorKind::ConnectionRefused
                        | io::ErrorKind::WouldBlock
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    fn wait_fds(&self) -> Vec<RawFd> {
        vec![self.socket.as_raw_fd()]
    }
}

impl Drop for DgramLink {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.ours);
    }
}

/// A real box cabled to a host NIC: an `AF_PACKET` raw socket on that interface (see the
/// module docs). Frames the host's own stack sends on the NIC are seen too; keep the NIC
/// unconfigured (no address, no DHCP client) so the harness is the only talker.
#[derive(Debug)]
pub struct PacketLink {
    fd: std::os::fd::OwnedFd,
}

impl PacketLink {
    /// Opens a raw socket bound to `interface` (e.g. `enp3s0`), in promiscuous mode so frames
    /// for every harness MAC are received.
    pub fn open(interface: &str) -> io::Result<PacketLink> {
        use std::os::fd::FromRawFd;
        let name = std::ffi::CString::new(interface)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "interface name has a NUL"))?;
        // SAFETY: plain libc calls with valid arguments; every return value is checked.
        unsafe {
            let index = libc::if_nametoindex(name.as_ptr());
            if index == 0 {
                return Err(io::Error::last_os_error());
            }
            let proto = (libc::ETH_P_ALL as u16).to_be();
            let fd = libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                proto as libc::c_int,
            );
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            let fd = std::os::fd::OwnedFd::from_raw_fd(fd);
            let mut addr: libc::sockaddr_ll = std::mem::zeroed();
            addr.sll_family = libc::AF_PACKET as u16;
            addr.sll_protocol = proto;
            addr.sll_ifindex = index as i32;
            let r = libc::bind(
                fd.as_raw_fd(),
                &addr as *const libc::sockaddr_ll as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            );
            if r < 0 {
                return Err(io::Error::last_os_error());
            }
            let mut mreq: libc::packet_mreq = std::mem::zeroed();
            mreq.mr_ifindex = index as i32;
            mreq.mr_type = libc::PACKET_MR_PROMISC as u16;
            let r = libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_ADD_MEMBERSHIP,
                &mreq as *const libc::packet_mreq as *const libc::c_void,
                std::mem::size_of::<libc::packet_mreq>() as u32,
            );
            if r < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(PacketLink { fd })
        }
    }
}

impl FrameLink for PacketLink {
    fn recv(&mut self) -> io::Result<Option<Vec<u8>>> {
        let mut buf = vec![0u8; 64 * 1024];
        // SAFETY: reads into a buffer of the given length on an open socket.
        let n = unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::WouldBlock {
                Ok(None)
            } else {
                Err(e)
            };
        }
        buf.truncate(n as usize);
        Ok(Some(buf))
    }

    fn send(&mut self, frame: &[u8]) -> io::Result<()> {
        // SAFETY: writes a buffer of the given length on an open socket.
        let n = unsafe { libc::send(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::WouldBlock {
                return Err(e);
            }
        }
        Ok(())
    }

    fn wait_fds(&self) -> Vec<RawFd> {
        vec![self.fd.as_raw_fd()]
    }
}

/// One end of an in-process link (see [`MemoryLink::pair`]).
#[derive(Debug, Clone)]
pub struct MemoryLink {
    inbox: Arc<Mutex<VecDeque<Vec<u8>>>>,
    peer: Arc<Mutex<VecDeque<Vec<u8>>>>,
}

impl MemoryLink {
    /// Two connected ends: what one sends, the other receives.
    pub fn pair() -> (MemoryLink, MemoryLink) {
        let a = Arc::new(Mutex::new(VecDeque::new()));
        let b = Arc::new(Mutex::new(VecDeque::new()));
        (
            MemoryLink {
                inbox: a.clone(),
                peer: b.clone(),
            },
            MemoryLink { inbox: b, peer: a },
        )
    }
}

impl FrameLink for MemoryLink {
    fn recv(&mut self) -> io::Result<Option<Vec<u8>>> {
        Ok(self.inbox.lock().expect("link lock").pop_front())
    }

    fn send(&mut self, frame: &[u8]) -> io::Result<()> {
        self.peer
            .lock()
            .expect("link lock")
            .push_back(frame.to_vec());
        Ok(())
    }

    fn wait_fds(&self) -> Vec<RawFd> {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_frames_are_length_prefixed_and_survive_a_reconnect() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lan.sock");
        let mut link = StreamLink::listen(&path).unwrap();
        link.send(b"lost: nobody attached").unwrap();
        for round in 0..2 {
            let mut qemu = UnixStream::connect(&path).unwrap();
            // Two frames in one write, the second split across two writes.
            qemu.write_all(&[0, 0, 0, 3, b'a', b'b', b'c', 0, 0, 0, 2, b'x'])
                .unwrap();
            let mut got = Vec::new();
            for _ in 0..200 {
                if let Some(f) = link.recv().unwrap() {
                    got.push(f);
                }
                if got.len() == 1 {
                    qemu.write_all(b"y").unwrap();
                }
                if got.len() == 2 {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            assert_eq!(got, vec![b"abc".to_vec(), b"xy".to_vec()], "round {round}");
            assert_eq!(link.take_event().as_deref(), Some("box connected"));
            link.send(b"hello").unwrap();
            let mut buf = [0u8; 9];
            qemu.read_exact(&mut buf).unwrap();
            assert_eq!(&buf, b"\0\0\0\x05hello");
            drop(qemu);
            for _ in 0..200 {
                link.recv().unwrap();
                if let Some(e) = link.take_event() {
                    assert!(e.starts_with("box disconnected"), "{e}");
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        }
    }

    #[test]
    fn datagram_frames_go_to_the_peer_path_and_a_missing_peer_drops_them() {
        let dir = tempfile::tempdir().unwrap();
        let (ours, theirs) = (dir.path().join("hil.sock"), dir.path().join("qemu.sock"));
        let mut link = DgramLink::bind(&ours, &theirs).unwrap();
        link.send(b"dropped").unwrap();
        let qemu = UnixDatagram::bind(&theirs).unwrap();
        link.send(b"frame").unwrap();
        let mut buf = [0u8; 16];
        let n = qemu.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"frame");
        qemu.send_to(b"reply", &ours).unwrap();
        assert_eq!(link.recv().unwrap().as_deref(), Some(&b"reply"[..]));
        assert_eq!(link.recv().unwrap(), None);
    }
}
