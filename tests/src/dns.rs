//! A DNS server for MX tests: dnsmasq on 127.0.0.1 answering only from its command line.

use std::net::UdpSocket;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use crate::process::{die_with_parent, read_lossy, tail};
use crate::wait::wait_for;

/// Where Debian's dnsmasq-base installs the server.
pub const DNSMASQ: &str = "/usr/sbin/dnsmasq";

/// A running dnsmasq on 127.0.0.1:<port> with fixed records and no upstream; killed when dropped.
pub struct Dns {
    dir: TempDir,
    port: u16,
    child: Option<Child>,
}

/// One record for [`Dns::start`].
#[derive(Debug, Clone)]
pub enum DnsRecord {
    /// `domain MX preference host`.
    Mx {
        /// The mail domain.
        domain: String,
        /// The exchanger's host name.
        host: String,
        /// Lower is tried first.
        preference: u16,
    },
    /// `name A/AAAA address`.
    Host {
        /// The host name.
        name: String,
        /// An IPv4 or IPv6 address literal.
        address: String,
    },
}

impl Dns {
    /// Starts dnsmasq serving `records`; everything else under `.test` is NXDOMAIN (`--local=/test/`).
    pub fn start(records: &[DnsRecord]) -> Dns {
        let dir = tempfile::Builder::new()
            .prefix("portcullis-dns-")
            .tempdir()
            .expect("tempdir");
        let port = crate::free_port();
        let mut command = Command::new(DNSMASQ);
        command.args([
            "--no-daemon",
            "--no-resolv",
            "--no-hosts",
            "--conf-file=/dev/null",
            "--pid-file=",
            "--bind-interfaces",
            "--listen-address=127.0.0.1",
            "--local=/test/",
            "--log-queries",
        ]);
        command.arg(format!("--port={port}"));
        for record in records {
            match record {
                DnsRecord::Mx {
                    domain,
                    host,
                    preference,
                } => command.arg(format!("--mx-host={domain},{host},{preference}")),
                DnsRecord::Host { name, address } => {
                    command.arg(format!("--host-record={name},{address}"))
                }
            };
        }
        let log = std::fs::File::create(dir.path().join("dnsmasq.log")).expect("dns log");
        let child = die_with_parent(
            command
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("dup"))
                .stderr(log),
        )
        .spawn()
        .unwrap_or_else(|error| panic!("cannot start {DNSMASQ}: {error}"));
        let dns = Dns {
            dir,
            port,
            child: Some(child),
        };
        wait_for(
            format!("dnsmasq answering on 127.0.0.1:{port}"),
            Duration::from_secs(20),
            || dns.answers().then_some(()),
        );
        dns
    }

    /// The server address for `[dns] servers`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// dnsmasq's log (with `--log-queries`, every question it was asked).
    pub fn log(&self) -> String {
        read_lossy(&self.log_path())
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("dnsmasq.log")
    }

    /// True if a query for `probe.test` MX gets any answer (NXDOMAIN counts: the server is up).
    fn answers(&self) -> bool {
        let Ok(socket) = UdpSocket::bind("127.0.0.1:0") else {
            return false;
        };
        let _ = socket.set_read_timeout(Some(Duration::from_millis(300)));
        let mut query = vec![0x4e, 0x21, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in ["probe", "test"] {
            query.push(label.len() as u8);
            query.extend_from_slice(label.as_bytes());
        }
        query.extend_from_slice(&[0, 0, 15, 0, 1]);
        if socket.send_to(&query, ("127.0.0.1", self.port)).is_err() {
            return false;
        }
        let mut answer = [0u8; 512];
        matches!(socket.recv_from(&mut answer), Ok((n, _)) if n >= 12 && answer[0] == 0x4e && answer[1] == 0x21)
    }
}

impl Drop for Dns {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "----- dnsmasq on port {} -----\n{}",
                self.port,
                tail(&self.log(), 40)
            );
        }
    }
}
