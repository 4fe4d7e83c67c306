//! The queue manager: picks due messages, routes their recipients, delivers them under the
//! connection limits, and turns the results into retries, delay notices and bounces.
//!
//! Like Postfix's qmgr it owns "when" and "how many at once"; the delivery crate owns "how".
//! Every attempt is bracketed by `begin_attempt`/`end_attempt` on the queue so that a crash in
//! the middle is noticed at the next start (counted as a possible duplicate, and as a strike
//! towards the suspect-message rule).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use chrono::Utc;
use portcullis_delivery::{
    ClientConfig, DnsConfig, DomainPattern, HostPort, MessageSource, NextHop, RcptResult, Route,
    RouteError, Router, RoutingConfig, SessionCache, SessionCacheLimits, TlsMode, Transaction,
};
use portcullis_queue::{QueueEntry, QueueId, QueueKind, RecipientStatus, TrackEvent};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::alerts::{Alert, AlertKind};
use crate::config::Config;
use crate::disposition::Applied;
use crate::dsn::{self, Notice, ReportedRecipient};
use crate::fault::{self, Fault};
use crate::state::Shared;
use crate::supervise::Heartbeat;

/// Why the delivery side could not start.
#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    /// The router (DNS resolver) could not be built.
    #[error("cannot set up routing: {0}")]
    Routing(String),
}

/// Builds the router from the configuration.
pub fn build_router(config: &Config) -> Result<Router, SchedulerError> {
    let parse_hosts = |hosts: &[String]| -> Result<Vec<HostPort>, SchedulerError> {
        hosts
            .iter()
            .map(|h| {
                h.parse::<HostPort>()
                    .map_err(|e| SchedulerError::Routing(format!("{h}: {e}")))
            })
            .collect()
    };
    let mut routes = Vec::new();
    for r in &config.delivery.routes {
        routes.push(Route {
            domain: r
                .domain
                .parse::<DomainPattern>()
                .map_err(|e| SchedulerError::Routing(format!("{}: {e}", r.domain)))?,
            hosts: parse_hosts(&r.hosts)?,
        });
    }
    let routing = RoutingConfig {
        routes,
        default_route: parse_hosts(&config.delivery.default_route)?,
        smtp_port: config.delivery.smtp_port,
    };
    let dns = DnsConfig {
        servers: config.dns.servers.clone(),
        timeout: config.dns.timeout,
        attempts: config.dns.attempts,
    };
    Router::new(routing, dns).map_err(|e| SchedulerError::Routing(e.to_string()))
}

/// The delivery scheduler.
pub struct Scheduler {
    shared: Arc<Shared>,
    router: RwLock<Arc<Router>>,
    connections: Arc<Semaphore>,
    connection_limit: usize,
    per_destination: Mutex<HashMap<String, Arc<Semaphore>>>,
    in_progress: Mutex<HashSet<QueueId>>,
    /// Open sessions to next hops, kept between messages.
    sessions: SessionCache,
}

impl Scheduler {
    /// A scheduler using `router`; limits are taken from the current snapshot.
    pub fn new(shared: Arc<Shared>, router: Router) -> Scheduler {
        let snap = shared.snapshot();
        let delivery = &snap.config.delivery;
        let limit = delivery.max_connections;
        let sessions = SessionCache::new(SessionCacheLimits {
            idle_time: delivery.session_cache_time,
            max_uses: delivery.session_reuse_limit,
            max_idle_per_host: delivery.max_per_destination,
        });
        Scheduler {
            sessions,
            shared,
            router: RwLock::new(Arc::new(router)),
            connections: Arc::new(Semaphore::new(limit)),
            connection_limit: limit,
            per_destination: Mutex::new(HashMap::new()),
            in_progress: Mutex::new(HashSet::new()),
        }
    }

    /// Replaces the router after a configuration reload. Per-destination limits take effect
    /// for new destinations; the global connection limit needs a restart.
    pub fn replace_router(&self, router: Router) {
        *self.router.write().expect("router lock") = Arc::new(router);
        self.per_destination.lock().expect("limits lock").clear();
    }

    /// Number of messages being delivered right now.
    pub fn active(&self) -> usize {
        self.in_progress.lock().expect("in-progress lock").len()
    }

    /// Runs until `shutdown`, then waits up to `grace` for running attempts to record results.
    pub async fn run(self: Arc<Self>, hb: Heartbeat, shutdown: CancellationToken, grace: Duration) {
        let wake = self.shared.queue.notify_new();
        // Attempts share the connection limit: a message being delivered holds one slot.
        let slots = Arc::new(Semaphore::new(self.connection_limit));
        tracing::info!(
            max_connections = self.connection_limit,
            "delivery scheduler started"
        );
        loop {
            hb.beat();
            let poll = self.shared.snapshot().config.queue.poll_interval;
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = wake.notified() => {}
                _ = tokio::time::sleep(poll) => {}
            }
            self.sessions.close_expired();
            if self.shared.switches.delivery_paused() {
                continue;
            }
            let free = slots.available_permits();
            if free == 0 {
                continue;
            }
            // Passed over before they are read: messages an SMTP session is still scanning
            // (left to it), and messages whose attempt task is starting (they wait in the
            // schedule until their attempt is marked). Unscanned messages (scan budget used up,
            // or rebuilt after a crash) go first.
            let scan = &self.shared.scan;
            let mut due = {
                let starting = self.in_progress.lock().expect("in-progress lock");
                self.shared.queue.due_except(Utc::now(), free, |id| {
                    starting.contains(id) || scan.is_claimed(id)
                })
            };
            due.sort_by_key(|e| e.scanned);
            if due
                .iter()
                .any(|e| fault::requested_once(Fault::PanicScheduler, e.subject.as_deref()))
            {
                panic!("injected fault: the delivery scheduler panics");
            }
            if let Some(poison) = due
                .iter()
                .find(|e| fault::requested(Fault::HangScheduler, e.subject.as_deref()))
            {
                // Like a real hang while handling this message: its attempt is marked first, so
                // a restart (or the hardware watchdog's reset) counts it towards the suspect
                // rule and a message that hangs us every time ends up on hold, not in a loop.
                let marked = self.shared.queue.begin_attempt(&poison.id).await;
                tracing::warn!(queue_id = %poison.id, marked = marked.is_ok(), "injected fault: the delivery scheduler stalls");
                shutdown.cancelled().await;
                break;
            }
            for entry in due {
                let Ok(permit) = slots.clone().try_acquire_owned() else {
                    break;
                };
                if !self
                    .in_progress
                    .lock()
                    .expect("in-progress lock")
                    .insert(entry.id.clone())
                {
                    continue;
                }
                let me = self.clone();
                tokio::spawn(async move { me.supervise_attempt(entry.id, permit).await });
            }
        }
        tracing::info!(active = self.active(), "delivery scheduler stopping");
        let deadline = tokio::time::Instant::now() + grace;
        while self.active() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.sessions.close_all();
    }

    /// Runs one attempt so that a panic or a hang in it is contained (the panic caught, the hang
    /// cut off after `queue.attempt_timeout`), and counts either as a crash towards the
    /// suspect-message rule.
    async fn supervise_attempt(self: Arc<Self>, id: QueueId, _permit: OwnedSemaphorePermit) {
        let entry = match self.shared.queue.begin_attempt(&id).await {
            Ok(e) => e,
            Err(e) => {
                tracing::debug!(queue_id = %id, error = %e, "message no longer deliverable");
                self.finish(&id);
                return;
            }
        };
        let snap = self.shared.snapshot();
        let timeout = snap.config.queue.attempt_timeout;
        let before = entry.clone();
        // In this task rather than one of its own: a task per attempt cost an allocation and a
        // hand-off per message, and catching the panic here contains it just the same.
        let attempt = catch_panic(self.clone().attempt(entry));
        let failure = match tokio::time::timeout(timeout, attempt).await {
            Ok(Ok(ended)) => {
                if let Some((entry, what)) = ended {
                    self.store_result(entry, what).await;
                }
                None
            }
            Ok(Err(Panicked)) => Some("processing panicked".to_string()),
            Err(_) => Some(format!(
                "processing took longer than {}",
                humantime::format_duration(timeout)
            )),
        };
        if let Some(reason) = failure {
            self.record_crash(before, &reason).await;
        }
        self.finish(&id);
    }

    /// Stores what an attempt left (see [`Scheduler::attempt`]): in this task, outside the
    /// attempt's time limit, so the store is never cut off half-way and needs no task of its own.
    async fn store_result(&self, entry: QueueEntry, what: &str) {
        let id = entry.id.clone();
        match catch_panic(self.shared.queue.end_attempt_here(entry)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(queue_id = %id, error = %e, "{what}"),
            Err(Panicked) => tracing::error!(queue_id = %id, "{what}: the store panicked"),
        }
    }

    fn finish(&self, id: &QueueId) {
        self.in_progress
            .lock()
            .expect("in-progress lock")
            .remove(id);
        // Wake the loop: a slot is free and more may be due.
        self.shared.queue.notify_new().notify_one();
    }

    async fn record_crash(&self, mut entry: QueueEntry, reason: &str) {
        let snap = self.shared.snapshot();
        let q = &snap.config.queue;
        entry.crashes += 1;
        entry.last_error = Some(reason.to_string());
        entry.next_attempt =
            Utc::now() + chrono_duration(retry_delay(&q.retry_schedule, entry.attempts));
        entry.kind = QueueKind::Deferred;
        let id = entry.id.clone();
        let crashes = entry.crashes;
        tracing::error!(queue_id = %id, crashes, reason, "delivery attempt failed abnormally");
        if let Err(e) = self.shared.queue.end_attempt(entry).await {
            tracing::error!(queue_id = %id, error = %e, "cannot record the failed attempt");
            return;
        }
        if crashes >= q.suspect_after_crashes {
            let why =
                format!("suspect message: processing failed {crashes} times (last: {reason})");
            match self.shared.queue.hold(&id, &why).await {
                Ok(()) => {
                    self.shared.metrics.messages_held.inc();
                    tracing::warn!(queue_id = %id, reason = %why, "suspect message moved to hold");
                    self.shared.alert(Alert::new(
                        AlertKind::SuspectMessageHeld,
                        id.to_string(),
                        format!("message {id} held"),
                        why,
                    ));
                }
                Err(e) => {
                    tracing::error!(queue_id = %id, error = %e, "cannot hold suspect message")
                }
            }
        }
    }

    fn track(&self, id: &QueueId, kind: &str, recipient: Option<&str>, detail: &str) {
        self.shared.queue.tracking().event(
            id,
            TrackEvent {
                at: Utc::now(),
                kind: kind.into(),
                recipient: recipient.map(str::to_string),
                detail: detail.into(),
            },
        );
    }

    fn destination_limit(&self, key: &str, per_destination: usize) -> Arc<Semaphore> {
        self.per_destination
            .lock()
            .expect("limits lock")
            .entry(key.to_string())
            .or_insert_with(|| Arc::new(Semaphore::new(per_destination)))
            .clone()
    }

    /// One delivery attempt of one message: every recipient not yet final is tried once. Returns
    /// the entry to store (with what to log if storing fails), which the caller stores outside
    /// the attempt's time limit; `None` when there is nothing to store.
    async fn attempt(self: Arc<Self>, mut entry: QueueEntry) -> Option<(QueueEntry, &'static str)> {
        if fault::requested(Fault::PanicInDelivery, entry.subject.as_deref()) {
            panic!("injected fault: panic while delivering {}", entry.id);
        }
        if fault::requested(Fault::HangInDelivery, entry.subject.as_deref()) {
            std::future::pending::<()>().await;
        }
        if !entry.scanned {
            match self.scan_before_delivery(&entry).await {
                ScanOutcome::Deliver => {}
                ScanOutcome::Done => {
                    // Dropped, quarantined, held or replaced by a rewritten copy: clear the
                    // attempt mark on whatever is left (nothing, or the held entry).
                    return Some((entry, "cannot record the scan result"));
                }
                ScanOutcome::Failed(reason) => {
                    let q = &self.shared.snapshot().config.queue;
                    entry.last_error = Some(reason);
                    entry.next_attempt = Utc::now()
                        + chrono_duration(retry_delay(&q.retry_schedule, entry.attempts + 1));
                    return Some((entry, "cannot record the failed scan"));
                }
            }
        }
        let snap = self.shared.snapshot();
        let config = &snap.config;
        let router = self.router.read().expect("router lock").clone();
        let client = ClientConfig {
            helo_name: config.helo_name().to_string(),
            connect_timeout: config.delivery.connect_timeout,
            command_timeout: config.delivery.command_timeout,
            data_timeout: config.delivery.data_timeout,
            tls: if config.delivery.tls == "disabled" {
                TlsMode::Disabled
            } else {
                TlsMode::Opportunistic
            },
        };
        let source = match self.shared.queue.small_message(&entry.id).await {
            Some(bytes) => MessageSource::Memory(bytes),
            None => {
                let Some((path, offset)) = self.shared.queue.message_path(&entry.id) else {
                    tracing::warn!(queue_id = %entry.id, "spool file vanished during delivery");
                    return None;
                };
                MessageSource::Spool { path, offset }
            }
        };

        // Group the open recipients by next hop, so one connection carries all recipients that
        // go the same way (e.g. everything through the default route).
        let mut by_domain: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        let mut attempted = Vec::new();
        for (i, r) in entry.recipients.iter().enumerate() {
            if matches!(
                r.status,
                RecipientStatus::Pending | RecipientStatus::Deferred { .. }
            ) {
                let domain = r
                    .address
                    .rsplit_once('@')
                    .map(|(_, d)| d.to_ascii_lowercase())
                    .unwrap_or_default();
                by_domain.entry(domain).or_default().push(i);
                attempted.push(i);
            }
        }
        let mut hops: BTreeMap<String, (NextHop, Vec<usize>)> = BTreeMap::new();
        for (domain, idx) in by_domain {
            match router.next_hop(&domain).await {
                Ok(hop) => hops
                    .entry(hop.key.clone())
                    .or_insert_with(|| (hop, Vec::new()))
                    .1
                    .extend(idx),
                Err(e) => {
                    let now = Utc::now();
                    let reply = route_reply(&domain, &e);
                    for i in idx {
                        entry.recipients[i].status = if e.is_permanent() {
                            RecipientStatus::Bounced {
                                at: now,
                                reply: reply.clone(),
                            }
                        } else {
                            RecipientStatus::Deferred {
                                at: now,
                                reply: reply.clone(),
                            }
                        };
                    }
                }
            }
        }
        for (key, (hop, idx)) in hops {
            let recipients: Vec<String> = idx
                .iter()
                .map(|&i| entry.recipients[i].address.clone())
                .collect();
            let tx = Transaction {
                sender: &entry.envelope.sender,
                recipients: &recipients,
                smtputf8: entry.envelope.smtputf8,
                eight_bit: entry.envelope.eight_bit,
                size: entry.size,
            };
            let limit = self.destination_limit(&key, config.delivery.max_per_destination);
            let _dest = limit.acquire_owned().await.expect("semaphore never closed");
            let _conn = self
                .connections
                .clone()
                .acquire_owned()
                .await
                .expect("semaphore never closed");
            let report = portcullis_delivery::deliver_reusing(
                &client,
                Some(&self.sessions),
                &hop,
                &tx,
                &source,
            )
            .await;
            let now = Utc::now();
            // Internet MX hosts are down all the time; only our own next hops (the internal
            // mail server, via a route or the default route) are worth waking the admin for.
            let own_next_hop = key == "default" || key.starts_with("route:");
            if report.addr.is_none() && own_next_hop {
                let why = report
                    .results
                    .first()
                    .map(|(_, r)| r.reply().to_string())
                    .unwrap_or_default();
                self.shared.alert(Alert::new(
                    AlertKind::InternalServerUnreachable,
                    key.clone(),
                    format!("cannot connect to next hop {key}"),
                    why,
                ));
            }
            for (n, (rcpt, result)) in report.results.iter().enumerate() {
                let Some(&i) = idx.get(n) else { break };
                debug_assert_eq!(&entry.recipients[i].address, rcpt);
                let (status, kind, reply) = match result {
                    RcptResult::Delivered { reply } => (
                        RecipientStatus::Delivered {
                            at: now,
                            reply: reply.clone(),
                        },
                        "delivered",
                        reply,
                    ),
                    RcptResult::Deferred { reply } => (
                        RecipientStatus::Deferred {
                            at: now,
                            reply: reply.clone(),
                        },
                        "deferred",
                        reply,
                    ),
                    RcptResult::Failed { reply } => (
                        RecipientStatus::Bounced {
                            at: now,
                            reply: reply.clone(),
                        },
                        "bounced",
                        reply,
                    ),
                };
                tracing::info!(
                    queue_id = %entry.id,
                    rcpt = %rcpt,
                    next_hop = %key,
                    relay = report.host.as_deref().unwrap_or("none"),
                    addr = %report.addr.map(|a| a.to_string()).unwrap_or_default(),
                    tls = report.tls.as_deref().unwrap_or("none"),
                    status = kind,
                    reply = %reply,
                    "delivery result"
                );
                self.shared.metrics.recipient(kind);
                if kind == "delivered" {
                    let latency = (now - entry.envelope.received_at)
                        .to_std()
                        .unwrap_or_default();
                    self.shared
                        .metrics
                        .delivery_latency
                        .observe(latency.as_secs_f64());
                }
                entry.recipients[i].status = status;
            }
        }
        Some(self.conclude(entry, &snap.config, &attempted).await)
    }

    /// Scans a message that was queued without a verdict and applies it. A reject is a drop
    /// here: the `250` has been given, and a bounce could go to a forged sender.
    async fn scan_before_delivery(&self, entry: &QueueEntry) -> ScanOutcome {
        let snap = self.shared.snapshot();
        let verdict = match crate::scan::inspect(snap, &self.shared.queue, &entry.id).await {
            Ok(v) => v,
            Err(e) => {
                self.shared
                    .metrics
                    .verdicts
                    .get_or_create(&vec![("verdict", "error")])
                    .inc();
                tracing::error!(queue_id = %entry.id, error = %e, "scan before delivery failed; retried later");
                return ScanOutcome::Failed(format!("scan failed: {e}"));
            }
        };
        match crate::disposition::apply(&self.shared, entry, &verdict, false).await {
            Ok(Applied::Queued(id)) if id == entry.id => ScanOutcome::Deliver,
            Ok(_) => ScanOutcome::Done,
            Err(e) => {
                tracing::error!(queue_id = %entry.id, error = %e, "cannot apply the scan verdict; retried later");
                ScanOutcome::Failed(format!("cannot apply the scan verdict: {e}"))
            }
        }
    }

    /// Turns the recipients' states into the next step: done, retry, delay notice or bounce.
    /// Returns the entry to store and what to log if storing fails.
    async fn conclude(
        &self,
        mut entry: QueueEntry,
        config: &Config,
        attempted: &[usize],
    ) -> (QueueEntry, &'static str) {
        let now = Utc::now();
        let age = (now - entry.envelope.received_at)
            .to_std()
            .unwrap_or_default();
        let q = &config.queue;
        let expired = age >= q.max_lifetime;
        let mut bounced = Vec::new();
        let mut deferred = Vec::new();
        for (i, r) in entry.recipients.iter_mut().enumerate() {
            if !attempted.contains(&i) {
                continue;
            }
            match &r.status {
                RecipientStatus::Deferred { reply, .. } if expired => {
                    let reply = format!(
                        "message expired after {} in the queue; last error: {reply}",
                        humantime::format_duration(Duration::from_secs(age.as_secs()))
                    );
                    self.track(&entry.id, "bounced", Some(&r.address), &reply);
                    bounced.push(ReportedRecipient {
                        address: r.address.clone(),
                        status: dsn::status_of(&reply, true),
                        diagnostic: reply.clone(),
                    });
                    r.status = RecipientStatus::Bounced { at: now, reply };
                }
                RecipientStatus::Deferred { reply, .. } => {
                    self.track(&entry.id, "deferred", Some(&r.address), reply);
                    deferred.push(ReportedRecipient {
                        address: r.address.clone(),
                        status: dsn::status_of(reply, false),
                        diagnostic: reply.clone(),
                    });
                }
                RecipientStatus::Bounced { reply, .. } => {
                    self.track(&entry.id, "bounced", Some(&r.address), reply);
                    bounced.push(ReportedRecipient {
                        address: r.address.clone(),
                        status: dsn::status_of(reply, true),
                        diagnostic: reply.clone(),
                    });
                }
                RecipientStatus::Delivered { reply, .. } => {
                    self.track(&entry.id, "delivered", Some(&r.address), reply);
                }
                RecipientStatus::Pending => {}
            }
        }
        // Bounces are queued (durably) before the original's state is written, so a crash in
        // between can only repeat a bounce, never lose one.
        if !bounced.is_empty() {
            if let Err(e) = dsn::send_notice(&self.shared, &entry, Notice::Failure, &bounced).await
            {
                tracing::error!(queue_id = %entry.id, error = %e, "cannot queue the bounce; will retry");
                // Keep the bounced recipients open so the next attempt reports them again.
                for r in entry.recipients.iter_mut() {
                    if let RecipientStatus::Bounced { at, reply } = &r.status {
                        if bounced.iter().any(|b| b.address == r.address) {
                            r.status = RecipientStatus::Deferred {
                                at: *at,
                                reply: reply.clone(),
                            };
                        }
                    }
                }
            }
        }
        let open = entry.recipients.iter().any(|r| {
            matches!(
                r.status,
                RecipientStatus::Pending | RecipientStatus::Deferred { .. }
            )
        });
        if open {
            entry.attempts += 1;
            let wait = retry_delay(&q.retry_schedule, entry.attempts);
            entry.next_attempt = now + chrono_duration(wait);
            entry.kind = QueueKind::Deferred;
            entry.last_error = deferred.last().map(|d| d.diagnostic.clone());
            if !entry.delay_notice_sent && age >= q.delay_notice_after && !deferred.is_empty() {
                let until = entry.envelope.received_at + chrono_duration(q.max_lifetime);
                match dsn::send_notice(&self.shared, &entry, Notice::Delay { until }, &deferred)
                    .await
                {
                    Ok(_) => entry.delay_notice_sent = true,
                    Err(e) => {
                        tracing::error!(queue_id = %entry.id, error = %e, "cannot queue the delay notice")
                    }
                }
            }
            tracing::info!(queue_id = %entry.id, attempts = entry.attempts, next_attempt = %entry.next_attempt, "message deferred");
        } else {
            // The queue records the final outcome in the tracking log when it removes the message.
            let delivered = entry
                .recipients
                .iter()
                .filter(|r| matches!(r.status, RecipientStatus::Delivered { .. }))
                .count();
            tracing::info!(queue_id = %entry.id, delivered, total = entry.recipients.len(), "message done; removed from queue");
        }
        (entry, "cannot record delivery results")
    }
}

/// What scanning before delivery decided.
enum ScanOutcome {
    /// Deliver the message now (it is marked scanned).
    Deliver,
    /// Nothing left to deliver under this id.
    Done,
    /// The scan or its disposition failed; try again later.
    Failed(String),
}

/// The wait before the next attempt after `attempts` failed ones (the last interval repeats).
pub fn retry_delay(schedule: &[Duration], attempts: u32) -> Duration {
    let i = (attempts.max(1) as usize - 1).min(schedule.len().saturating_sub(1));
    schedule.get(i).copied().unwrap_or(Duration::from_secs(300))
}

fn chrono_duration(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::days(365))
}

fn route_reply(domain: &str, e: &RouteError) -> String {
    format!("cannot route to domain {domain}: {e} ({})", e.enhanced())
}

/// A panic caught by [`catch_panic`].
#[derive(Debug)]
struct Panicked;

/// Runs `future`, turning a panic while it is polled into `Err(Panicked)`; the future is then
/// dropped, never polled again (what a runtime does with a task that panicked).
async fn catch_panic<F: std::future::Future>(future: F) -> Result<F::Output, Panicked> {
    let mut future = std::pin::pin!(future);
    std::future::poll_fn(move |cx| {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| future.as_mut().poll(cx))) {
            Ok(std::task::Poll::Ready(output)) => std::task::Poll::Ready(Ok(output)),
            Ok(std::task::Poll::Pending) => std::task::Poll::Pending,
            Err(_) => std::task::Poll::Ready(Err(Panicked)),
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_schedule_steps_through_and_repeats_the_last_interval() {
        let s = [Duration::from_secs(60), Duration::from_secs(300)];
        assert_eq!(retry_delay(&s, 1), Duration::from_secs(60));
        assert_eq!(retry_delay(&s, 2), Duration::from_secs(300));
        assert_eq!(retry_delay(&s, 9), Duration::from_secs(300));
    }

    #[tokio::test]
    async fn a_panic_in_an_attempt_is_caught_even_after_it_waited() {
        assert_eq!(catch_panic(async { 7 }).await.unwrap(), 7);
        let panicking = async {
            tokio::task::yield_now().await;
            if std::hint::black_box(true) {
                panic!("injected");
            }
        };
        assert!(catch_panic(panicking).await.is_err());
        // The task that caught it goes on.
        assert_eq!(catch_panic(async { "after" }).await.unwrap(), "after");
    }
}
