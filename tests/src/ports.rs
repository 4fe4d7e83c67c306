//! Free TCP/UDP ports on 127.0.0.1 for the daemon, the sinks and dnsmasq.

use std::collections::BTreeSet;
use std::net::{TcpListener, UdpSocket};
use std::sync::Mutex;

use rand::Rng;

/// Ports already handed to a test in this process: tests run in parallel threads, and a port
/// that was free when probed stays "free" until its server binds it, so never hand it out twice.
static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// A port that is free on 127.0.0.1 for both TCP and UDP right now.
///
/// Ports are drawn below the kernel's ephemeral range (32768 and up on Linux), so the outgoing
/// connections of the tests themselves cannot take a port between the probe and the server's bind.
pub fn free_port() -> u16 {
    let mut rng = rand::thread_rng();
    for _ in 0..10_000 {
        let port: u16 = rng.gen_range(20_000..32_000);
        let mut handed_out = HANDED_OUT
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if handed_out.contains(&port) {
            continue;
        }
        let tcp = TcpListener::bind(("127.0.0.1", port));
        let udp = UdpSocket::bind(("127.0.0.1", port));
        if tcp.is_ok() && udp.is_ok() {
            handed_out.insert(port);
            return port;
        }
    }
    panic!("no free port found on 127.0.0.1 in 20000..32000");
}
