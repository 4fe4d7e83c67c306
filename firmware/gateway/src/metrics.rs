//! Prometheus metrics at `http://<metrics.listen>/metrics`.
//!
//! Counters are bumped where things happen (sessions, messages, recipients, verdicts); gauges
//! that describe state (queue sizes, disk, memory) are read at scrape time so they are never
//! stale. The endpoint listens on loopback by default: it tells an attacker too much about the
//! mail flow to be on the public interface.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

use crate::state::Shared;

type Labels = Vec<(&'static str, &'static str)>;

/// Every metric the gateway exports.
pub struct Metrics {
    registry: Registry,
    /// SMTP sessions by how they ended.
    pub sessions: Family<Labels, Counter>,
    /// Messages accepted (250 after DATA).
    pub messages_received: Counter,
    /// Recipients by delivery outcome: delivered, deferred, bounced.
    pub recipients: Family<Labels, Counter>,
    /// Messages moved to hold (admin or suspect).
    pub messages_held: Counter,
    /// Scan verdicts by verdict.
    pub verdicts: Family<Labels, Counter>,
    /// Seconds from acceptance to delivery, per delivered recipient.
    pub delivery_latency: Histogram,
    queue_size: Family<Labels, Gauge>,
    disk_free_bytes: Gauge<f64, AtomicU64>,
    disk_free_ratio: Gauge<f64, AtomicU64>,
    memory_available_ratio: Gauge<f64, AtomicU64>,
    uptime_seconds: Gauge,
    definitions_age_seconds: Gauge<f64, AtomicU64>,
    definitions_version: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("portcullis");
        let sessions = Family::<Labels, Counter>::default();
        registry.register(
            "smtp_sessions",
            "Inbound SMTP sessions by how they ended",
            sessions.clone(),
        );
        let messages_received = Counter::default();
        registry.register(
            "messages_received",
            "Messages accepted with 250 after DATA",
            messages_received.clone(),
        );
        let recipients = Family::<Labels, Counter>::default();
        registry.register(
            "recipients",
            "Delivery results per recipient by outcome",
            recipients.clone(),
        );
        let messages_held = Counter::default();
        registry.register(
            "messages_held",
            "Messages moved to the hold queue",
            messages_held.clone(),
        );
        let verdicts = Family::<Labels, Counter>::default();
        registry.register(
            "scan_verdicts",
            "Scan verdicts by verdict",
            verdicts.clone(),
        );
        let delivery_latency = Histogram::new(exponential_buckets(0.05, 2.0, 18));
        registry.register(
            "delivery_latency_seconds",
            "Time from acceptance to delivery per recipient",
            delivery_latency.clone(),
        );
        let queue_size = Family::<Labels, Gauge>::default();
        registry.register(
            "queue_messages",
            "Messages in each queue",
            queue_size.clone(),
        );
        let disk_free_bytes = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "disk_free_bytes",
            "Free bytes on the data file system",
            disk_free_bytes.clone(),
        );
        let disk_free_ratio = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "disk_free_ratio",
            "Free fraction of the data file system",
            disk_free_ratio.clone(),
        );
        let memory_available_ratio = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "memory_available_ratio",
            "Available fraction of memory",
            memory_available_ratio.clone(),
        );
        let uptime_seconds = Gauge::default();
        registry.register(
            "uptime_seconds",
            "Seconds since the process started",
            uptime_seconds.clone(),
        );
        let definitions_age_seconds = Gauge::<f64, AtomicU64>::default();
        registry.register("definitions_age_seconds", "Seconds since the installed antivirus definitions were built (absent when none are installed)", definitions_age_seconds.clone());
        let definitions_version = Gauge::default();
        registry.register(
            "definitions_version",
            "Version of the installed antivirus definitions (0 when none)",
            definitions_version.clone(),
        );
        Metrics {
            definitions_age_seconds,
            definitions_version,
            registry,
            sessions,
            messages_received,
            recipients,
            messages_held,
            verdicts,
            delivery_latency,
            queue_size,
            disk_free_bytes,
            disk_free_ratio,
            memory_available_ratio,
            uptime_seconds,
        }
    }

    /// Counts a recipient's delivery outcome.
    pub fn recipient(&self, outcome: &'static str) {
        self.recipients
            .get_or_create(&vec![("outcome", outcome)])
            .inc();
    }

    /// Renders the text exposition, refreshing the state gauges first.
    pub fn render(&self, shared: &Shared) -> String {
        let counts = shared.queue.counts();
        for (name, n) in [
            ("incoming", counts.incoming),
            ("deferred", counts.deferred),
            ("hold", counts.hold),
        ] {
            self.queue_size
                .get_or_create(&vec![("queue", name)])
                .set(n as i64);
        }
        let data_dir = shared.snapshot().config.server.data_dir.join("queue");
        if let Ok(space) = crate::housekeeping::disk_space(&data_dir) {
            self.disk_free_bytes.set(space.available as f64);
            self.disk_free_ratio.set(space.free_percent() / 100.0);
        }
        if let Some(mem) = crate::housekeeping::memory_available_percent() {
            self.memory_available_ratio.set(mem / 100.0);
        }
        self.uptime_seconds
            .set(shared.started.elapsed().as_secs() as i64);
        if let Some(updater) = shared.definitions.get() {
            self.definitions_age_seconds
                .set(updater.age_seconds().unwrap_or(0.0));
            self.definitions_version
                .set(updater.status().installed.map_or(0, |v| v.version as i64));
        }
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

async fn scrape(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    let body = shared.metrics.render(&shared);
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
}

/// Serves `/metrics` on `listener` until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", axum::routing::get(scrape))
        .with_state(shared);
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}
