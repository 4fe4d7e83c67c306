//! Open SMTP sessions to next-hop hosts, kept for the next message (Postfix calls this its
//! connection cache).
//!
//! Nearly all mail goes to one next hop, the internal mail server. A new TCP connection, the
//! greeting, EHLO, maybe a TLS handshake, and QUIT for every message cost both sides more than
//! the transaction itself. After a transaction the session is parked here for a short time (an
//! unfinished transaction is reset first with `RSET`); the next message to the same host and
//! port takes it. A parked session the server has closed meanwhile is noticed at `MAIL FROM` and the
//! message goes out on a fresh connection instead.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tracing::debug;

use super::{Capabilities, Connection};

/// How long and how often sessions are reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionCacheLimits {
    /// A parked session unused this long is closed (QUIT). Zero turns the cache off.
    pub idle_time: Duration,
    /// Transactions per session before it is closed; bounds the damage of a server that degrades
    /// over a long session.
    pub max_uses: u32,
    /// Parked sessions per host and port; more are closed.
    pub max_idle_per_host: usize,
}

impl Default for SessionCacheLimits {
    fn default() -> SessionCacheLimits {
        SessionCacheLimits {
            idle_time: Duration::from_secs(2),
            max_uses: 100,
            max_idle_per_host: 10,
        }
    }
}

/// One established session: connection, what the server offered, TLS, and how often it served.
pub(super) struct Session {
    pub(super) conn: Connection,
    pub(super) caps: Capabilities,
    pub(super) tls: Option<String>,
    pub(super) uses: u32,
}

struct Parked {
    session: Session,
    since: Instant,
}

/// Sessions are kept apart by address and by whether TLS was wanted, so a plaintext session is
/// never handed to a delivery that asked for TLS.
type Key = (SocketAddr, bool);

/// The cache, shared by all deliveries.
pub struct SessionCache {
    limits: SessionCacheLimits,
    parked: Mutex<HashMap<Key, Vec<Parked>>>,
}

impl SessionCache {
    /// An empty cache.
    pub fn new(limits: SessionCacheLimits) -> SessionCache {
        SessionCache {
            limits,
            parked: Mutex::new(HashMap::new()),
        }
    }

    /// The limits it runs with.
    pub fn limits(&self) -> SessionCacheLimits {
        self.limits
    }

    /// A parked session to `addr`, the most recently used first.
    pub(super) fn take(&self, addr: SocketAddr, tls: bool) -> Option<Session> {
        let mut expired = Vec::new();
        let session = {
            let mut parked = self.parked.lock().expect("session cache lock");
            let list = parked.get_mut(&(addr, tls))?;
            let now = Instant::now();
            let (fresh, stale): (Vec<Parked>, Vec<Parked>) = list
                .drain(..)
                .partition(|p| now.duration_since(p.since) < self.limits.idle_time);
            expired.extend(stale);
            *list = fresh;
            list.pop().map(|p| p.session)
        };
        close_all(expired);
        session
    }

    /// Parks a session after a transaction, or closes it when it has served enough or the cache
    /// is full for that host. A transaction left open (`reset`: it ended before the server
    /// answered the end of the data) is reset first, and the session closed if that fails; after
    /// a complete transaction the session is already back at its start (RFC 5321 4.1.1.4) and
    /// costs no round trip: a server that hung up meanwhile is noticed at the next MAIL FROM.
    pub(super) async fn put(
        &self,
        addr: SocketAddr,
        tls: bool,
        mut session: Session,
        limit: Duration,
        reset: bool,
    ) {
        if self.limits.idle_time.is_zero() || session.uses >= self.limits.max_uses {
            session.conn.quit().await;
            return;
        }
        if reset {
            match session.conn.command("RSET\r\n", limit).await {
                Ok(reply) if reply.is_positive() => {}
                Ok(reply) => {
                    debug!(host = %addr, reply = %reply, "RSET refused; session not kept");
                    session.conn.quit().await;
                    return;
                }
                Err(_) => return,
            }
        }
        let overflow = {
            let mut parked = self.parked.lock().expect("session cache lock");
            let list = parked.entry((addr, tls)).or_default();
            list.push(Parked {
                session,
                since: Instant::now(),
            });
            if list.len() > self.limits.max_idle_per_host {
                Some(list.remove(0).session)
            } else {
                None
            }
        };
        if let Some(session) = overflow {
            session.conn.quit().await;
        }
    }

    /// Closes the sessions parked longer than the idle time; call it now and then (the delivery
    /// scheduler does on each round). Returns how many were closed.
    pub fn close_expired(&self) -> usize {
        let now = Instant::now();
        let mut expired = Vec::new();
        {
            let mut parked = self.parked.lock().expect("session cache lock");
            // Called on every turn of the scheduler: nothing is allocated unless a session expired.
            for list in parked.values_mut() {
                expired.extend(
                    list.extract_if(.., |p| now.duration_since(p.since) >= self.limits.idle_time),
                );
            }
            parked.retain(|_, list| !list.is_empty());
        }
        let closed = expired.len();
        close_all(expired);
        closed
    }

    /// Closes every parked session (at shutdown).
    pub fn close_all(&self) {
        let all: Vec<Parked> = {
            let mut parked = self.parked.lock().expect("session cache lock");
            parked.drain().flat_map(|(_, list)| list).collect()
        };
        close_all(all);
    }

    /// Sessions parked right now.
    pub fn parked(&self) -> usize {
        let parked = self.parked.lock().expect("session cache lock");
        parked.values().map(Vec::len).sum()
    }
}

/// Says QUIT on each session in the background: nobody waits for a goodbye.
fn close_all(sessions: Vec<Parked>) {
    if sessions.is_empty() {
        return;
    }
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(async move {
            for parked in sessions {
                parked.session.conn.quit().await;
            }
        });
    }
}
