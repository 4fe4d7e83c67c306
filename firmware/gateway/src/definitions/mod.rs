//! Antivirus definitions updates: the supervised part `definitions` that fetches signed packages
//! over HTTP(S), installs them into the definitions store and swaps the new engine into the
//! running gateway, plus the package server of `portcullis defs serve`.
//!
//! One attempt: fetch `manifest.sig` and `manifest.json` → [`portcullis_defs::verify_manifest`]
//! against the pinned keys and the highest version ever installed (forged, rolled back and
//! expired packages stop here, before any file is downloaded) → download each listed file into
//! a download directory through [`portcullis_defs::check_file`] with the declared size as a hard
//! limit → [`portcullis_defs::DefinitionsStore::install`] (verifies its own copy again and runs
//! the self-test) → [`EngineSwitch::swap`] → self-test of the engine the scanners now see →
//! probation: if scan errors spike, roll back on our own.
//!
//! The swap publishes a new configuration snapshot that differs only in its engine. A message
//! takes one snapshot for its whole scan, so it is scanned entirely by the old or entirely by
//! the new definitions, and nothing waits: no lock is held while scanning.

pub mod fetch;
pub mod schedule;
pub mod serve;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use portcullis_av::Engine;
use portcullis_defs::{DefinitionsStore, DefsError, FileEntry, Limits, Manifest, PinnedKey};
use rand::Rng;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::alerts::{Alert, AlertKind};
use crate::config::DefinitionsSection;
use crate::state::{Shared, Snapshot};
use fetch::{FetchError, HttpClient, PackageUrl, Timeouts};

/// How often the part wakes to check probation, staleness and the schedule.
const TICK: Duration = Duration::from_secs(5);
/// A stale-definitions alert is repeated at most this often (the alerter's own rate limit is
/// shorter, meant for bursts).
const STALE_ALERT_EVERY: Duration = Duration::from_secs(24 * 3600);
/// The download directory under the definitions store; emptied before each attempt.
const DOWNLOAD_DIR: &str = "download";

/// Replaces the antivirus engine in the published configuration snapshot.
#[derive(Clone, Debug)]
pub struct EngineSwitch {
    snapshots: Arc<watch::Sender<Arc<Snapshot>>>,
}

impl EngineSwitch {
    /// A switch over the gateway's snapshot channel (the one SIGHUP reloads publish on too;
    /// both modify it under the channel's lock, so neither undoes the other).
    pub fn new(snapshots: Arc<watch::Sender<Arc<Snapshot>>>) -> EngineSwitch {
        EngineSwitch { snapshots }
    }

    /// The engine in use.
    pub fn current(&self) -> Arc<Engine> {
        self.snapshots.borrow().engine.clone()
    }

    /// Puts `engine` in use for every scan that starts from now on and returns the one it
    /// replaced. Scans already running finish with the engine they started with.
    pub fn swap(&self, engine: Arc<Engine>) -> Arc<Engine> {
        let mut old = None;
        self.snapshots.send_modify(|snapshot| {
            old = Some(snapshot.engine.clone());
            *snapshot = Arc::new(snapshot.with_engine(engine.clone()));
        });
        old.expect("send_modify runs the closure")
    }
}

/// One installed version, as the admin sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionView {
    /// Package version.
    pub version: u64,
    /// When the publisher built it.
    pub created: DateTime<Utc>,
    /// When it expires.
    pub expires: DateTime<Utc>,
}

impl From<&portcullis_defs::InstalledVersion> for VersionView {
    fn from(v: &portcullis_defs::InstalledVersion) -> Self {
        VersionView {
            version: v.version,
            created: v.created,
            expires: v.expires,
        }
    }
}

/// What `portcullis defs status` shows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DefinitionsStatus {
    /// Whether automatic updates are configured (URLs and pinned keys).
    pub enabled: bool,
    /// Why they are not, when they are not.
    pub disabled_reason: Option<String>,
    /// The version in use.
    pub installed: Option<VersionView>,
    /// The version kept for rollback.
    pub previous: Option<VersionView>,
    /// The highest version ever installed: packages must be newer.
    pub highest_version: u64,
    /// Signatures in the engine in use (including the built-in EICAR one).
    pub signatures: u64,
    /// When the last attempt started.
    pub last_attempt: Option<DateTime<Utc>>,
    /// When an attempt last ended well (updated or already up to date).
    pub last_success: Option<DateTime<Utc>>,
    /// What the last attempt did, in one line.
    pub last_result: Option<String>,
    /// The last failure, in one line.
    pub last_error: Option<String>,
    /// When the next scheduled attempt is due.
    pub next_attempt: Option<DateTime<Utc>>,
    /// The new version is watched for misbehaviour until then.
    pub probation_until: Option<DateTime<Utc>>,
}

/// How an update attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpdateOutcome {
    /// A new version is installed and in use.
    Updated {
        /// The new version.
        version: u64,
        /// The version it replaced.
        from: Option<u64>,
    },
    /// The servers offer nothing newer.
    UpToDate {
        /// The highest version installed.
        version: u64,
    },
    /// Updates are not configured.
    Disabled(String),
    /// Every URL failed or was refused; the running definitions stay.
    Failed(String),
}

impl UpdateOutcome {
    /// One line for the admin.
    pub fn describe(&self) -> String {
        match self {
            UpdateOutcome::Updated {
                version,
                from: Some(from),
            } => format!("updated from version {from} to {version}"),
            UpdateOutcome::Updated {
                version,
                from: None,
            } => format!("installed version {version}"),
            UpdateOutcome::UpToDate { version } => format!("up to date (version {version})"),
            UpdateOutcome::Disabled(why) => format!("updates disabled: {why}"),
            UpdateOutcome::Failed(why) => format!("update failed: {why}"),
        }
    }
}

/// Why one URL did not give us a package.
#[derive(Debug, thiserror::Error)]
enum UrlError {
    /// Network trouble or a server error: worth a retry.
    #[error("{0}")]
    Fetch(#[from] FetchError),
    /// The package was refused (signature, rollback, expiry, size, hash, self-test).
    #[error("package refused: {0}")]
    Refused(#[from] DefsError),
    /// A local problem (disk, task).
    #[error("{0}")]
    Local(String),
}

impl UrlError {
    fn is_transient(&self) -> bool {
        matches!(self, UrlError::Fetch(e) if e.is_transient())
    }
}

/// What a URL offered.
enum Offer {
    /// Nothing newer than `version`.
    UpToDate(u64),
    /// A verified manifest whose files are all downloaded and checked in the download dir.
    Downloaded(Manifest),
}

/// The watch kept on a freshly swapped-in version.
#[derive(Debug)]
struct Probation {
    version: u64,
    until: tokio::time::Instant,
    scan_errors_at_start: u64,
}

/// The definitions updater: a supervised part plus the actions of the control API.
pub struct Updater {
    shared: Arc<Shared>,
    switch: EngineSwitch,
    status: Mutex<DefinitionsStatus>,
    /// One attempt or rollback at a time (scheduled, `update-now`, `rollback`).
    busy: tokio::sync::Mutex<()>,
    /// The engine replaced by the last update, for an immediate rollback without reloading.
    previous_engine: Mutex<Option<(u64, Arc<Engine>)>>,
    probation: Mutex<Option<Probation>>,
    last_stale_alert: Mutex<Option<tokio::time::Instant>>,
}

impl std::fmt::Debug for Updater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Updater")
            .field("status", &self.status())
            .finish()
    }
}

impl Updater {
    /// An updater for the gateway's shared state and snapshot channel.
    pub fn new(shared: Arc<Shared>, switch: EngineSwitch) -> Updater {
        Updater {
            shared,
            switch,
            status: Mutex::new(DefinitionsStatus::default()),
            busy: tokio::sync::Mutex::new(()),
            previous_engine: Mutex::new(None),
            probation: Mutex::new(None),
            last_stale_alert: Mutex::new(None),
        }
    }

    /// The current status (what `portcullis defs status` prints).
    pub fn status(&self) -> DefinitionsStatus {
        self.status.lock().expect("definitions status").clone()
    }

    /// Seconds since the installed version was built, if one is installed (the metrics gauge).
    pub fn age_seconds(&self) -> Option<f64> {
        let created = self.status().installed?.created;
        Some((Utc::now() - created).num_milliseconds().max(0) as f64 / 1000.0)
    }

    /// The supervised loop: attempts on schedule, watches probation and staleness, until
    /// `shutdown`.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) -> Result<(), String> {
        self.refresh_installed().await;
        let mut first = true;
        loop {
            let section = self.shared.snapshot().config.definitions.clone();
            let next = self.plan_next(&section, first);
            let planned_at = Utc::now();
            first = false;
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(TICK) => {}
                }
                self.check_probation().await;
                self.check_stale();
                if self.status().last_attempt.is_some_and(|at| at > planned_at) {
                    // `update-now` ran meanwhile: plan from its result.
                    break;
                }
                if format!("{:?}", self.shared.snapshot().config.definitions)
                    != format!("{section:?}")
                {
                    tracing::info!(target: "defs", "definitions settings changed: rescheduling");
                    break;
                }
                if next.is_some_and(|at| Utc::now() >= at) {
                    self.update_now().await;
                    break;
                }
            }
        }
    }

    /// Decides the next attempt: soon after start when nothing (or something stale) is
    /// installed, else on the schedule; plus jitter. `None` when updates are disabled.
    fn plan_next(&self, section: &DefinitionsSection, at_start: bool) -> Option<DateTime<Utc>> {
        let disabled = disabled_reason(section);
        let jitter = random_jitter(section.jitter);
        let next = match &disabled {
            Some(why) => {
                tracing::warn!(target: "defs", reason = %why, "automatic definitions updates are disabled");
                None
            }
            None => {
                let installed = self.status().installed;
                let stale = installed
                    .as_ref()
                    .is_none_or(|v| is_stale(v, section.stale_after));
                if at_start && stale {
                    Some(
                        Utc::now()
                            + chrono::Duration::from_std(jitter.min(Duration::from_secs(60)))
                                .unwrap_or_default(),
                    )
                } else {
                    let at = schedule::Schedule::of(section)
                        .next_after(&chrono::Local::now())
                        .with_timezone(&Utc);
                    Some(at + chrono::Duration::from_std(jitter).unwrap_or_default())
                }
            }
        };
        let mut status = self.status.lock().expect("definitions status");
        status.enabled = disabled.is_none();
        status.disabled_reason = disabled;
        status.next_attempt = next;
        if let Some(at) = next {
            tracing::info!(target: "defs", next_attempt = %at.to_rfc3339(), "next definitions update attempt scheduled");
        }
        next
    }

    /// Runs one update attempt now (scheduled, or `portcullis defs update-now`), raises the
    /// alerts and records the result.
    pub async fn update_now(&self) -> UpdateOutcome {
        let _busy = self.busy.lock().await;
        let snapshot = self.shared.snapshot();
        let section = snapshot.config.definitions.clone();
        let store_dir = snapshot.config.definitions_dir();
        drop(snapshot);
        let started = Utc::now();
        self.status.lock().expect("definitions status").last_attempt = Some(started);
        tracing::info!(target: "defs", urls = %section.urls.join(","), "definitions update attempt");
        let outcome = self.attempt(&section, &store_dir).await;
        self.refresh_installed().await;
        {
            let mut status = self.status.lock().expect("definitions status");
            status.last_result = Some(outcome.describe());
            match &outcome {
                UpdateOutcome::Updated { .. } | UpdateOutcome::UpToDate { .. } => {
                    status.last_success = Some(Utc::now());
                }
                UpdateOutcome::Failed(why) => status.last_error = Some(why.clone()),
                UpdateOutcome::Disabled(_) => {}
            }
        }
        match &outcome {
            UpdateOutcome::Updated { version, from } => {
                let installed = self.status().installed;
                tracing::info!(target: "defs", version, from = ?from, "definitions updated");
                self.shared.alert(Alert::new(
                    AlertKind::DefinitionsUpdated,
                    "",
                    format!("antivirus definitions updated to version {version}"),
                    format!(
                        "Previous version: {}\nCreated: {}\nExpires: {}\nSignatures: {}",
                        from.map(|v| v.to_string()).unwrap_or_else(|| "none".into()),
                        installed
                            .as_ref()
                            .map(|v| v.created.to_rfc3339())
                            .unwrap_or_default(),
                        installed
                            .as_ref()
                            .map(|v| v.expires.to_rfc3339())
                            .unwrap_or_default(),
                        self.status().signatures,
                    ),
                ));
            }
            UpdateOutcome::UpToDate { version } => {
                tracing::info!(target: "defs", version, "definitions are up to date");
            }
            UpdateOutcome::Disabled(why) => {
                tracing::warn!(target: "defs", reason = %why, "definitions update not attempted");
            }
            UpdateOutcome::Failed(why) => {
                tracing::error!(target: "defs", error = %why, "definitions update failed; the running definitions stay in use");
                self.shared.alert(Alert::new(
                    AlertKind::DefinitionsUpdateFailed,
                    "update",
                    "antivirus definitions update failed; the running definitions stay in use",
                    why.clone(),
                ));
            }
        }
        outcome
    }

    async fn attempt(&self, section: &DefinitionsSection, store_dir: &Path) -> UpdateOutcome {
        if let Some(why) = disabled_reason(section) {
            return UpdateOutcome::Disabled(why);
        }
        let keys = match pinned_keys(&section.pinned_keys) {
            Ok(keys) => keys,
            Err(e) => return UpdateOutcome::Failed(e.to_string()),
        };
        let timeouts = Timeouts {
            connect: section.connect_timeout,
            stall: section.stall_timeout,
            transfer: section.download_timeout,
        };
        let client = match HttpClient::new(&section.ca_file, &section.proxy, timeouts) {
            Ok(c) => c,
            Err(e) => return UpdateOutcome::Failed(e.to_string()),
        };
        let store = match blocking({
            let dir = store_dir.to_path_buf();
            move || DefinitionsStore::open(&dir).and_then(|s| s.status().map(|st| (s, st)))
        })
        .await
        {
            Ok(Ok(found)) => found,
            Ok(Err(e)) => {
                return UpdateOutcome::Failed(format!(
                    "definitions store {}: {e}",
                    store_dir.display()
                ));
            }
            Err(e) => return UpdateOutcome::Failed(e),
        };
        let (store, store_status) = store;
        let installed = match (&store_status.current, store_status.highest_version) {
            (None, 0) => None,
            (current, highest) => Some(highest.max(current.as_ref().map_or(0, |c| c.version))),
        };
        let limits = section.limits();
        let download_dir = store_dir.join(DOWNLOAD_DIR);
        let mut failures = Vec::new();
        for url in &section.urls {
            for try_number in 0..=section.retries {
                if try_number > 0 {
                    tokio::time::sleep(
                        section.retry_delay
                            + random_jitter(section.jitter.min(section.retry_delay)),
                    )
                    .await;
                }
                let offered = self
                    .fetch(&client, url, &download_dir, &keys, installed, &limits)
                    .await;
                match offered {
                    Ok(Offer::UpToDate(version)) => return UpdateOutcome::UpToDate { version },
                    Ok(Offer::Downloaded(manifest)) => {
                        return self
                            .install(&store, &download_dir, &keys, &limits, manifest)
                            .await;
                    }
                    Err(e) => {
                        tracing::warn!(target: "defs", url = %url, attempt = try_number + 1, error = %e, "definitions download failed");
                        let transient = e.is_transient();
                        failures.push(format!("{url}: {e}"));
                        if !transient {
                            break;
                        }
                    }
                }
            }
        }
        let _ = tokio::fs::remove_dir_all(&download_dir).await;
        UpdateOutcome::Failed(failures.join("; "))
    }

    /// Downloads and checks one URL's package into `download_dir`.
    async fn fetch(
        &self,
        client: &HttpClient,
        url: &str,
        download_dir: &Path,
        keys: &[PinnedKey],
        installed: Option<u64>,
        limits: &Limits,
    ) -> Result<Offer, UrlError> {
        let base = PackageUrl::parse(url)?;
        let local = |action: &str, e: std::io::Error| {
            UrlError::Local(format!("cannot {action} {}: {e}", download_dir.display()))
        };
        if tokio::fs::try_exists(download_dir).await.unwrap_or(false) {
            tokio::fs::remove_dir_all(download_dir)
                .await
                .map_err(|e| local("empty", e))?;
        }
        tokio::fs::create_dir_all(download_dir)
            .await
            .map_err(|e| local("create", e))?;
        let signature = client
            .get_bytes(
                &base.file(portcullis_defs::SIGNATURE_FILE),
                portcullis_defs::MAX_SIGNATURE_BYTES,
            )
            .await?;
        let manifest = client
            .get_bytes(
                &base.file(portcullis_defs::MANIFEST_FILE),
                limits.max_manifest_bytes,
            )
            .await?;
        tokio::fs::write(
            download_dir.join(portcullis_defs::SIGNATURE_FILE),
            &signature,
        )
        .await
        .map_err(|e| local("write into", e))?;
        tokio::fs::write(download_dir.join(portcullis_defs::MANIFEST_FILE), &manifest)
            .await
            .map_err(|e| local("write into", e))?;
        let verified = blocking({
            let (dir, keys, limits) = (download_dir.to_path_buf(), keys.to_vec(), *limits);
            move || portcullis_defs::verify_manifest(&dir, &keys, installed, Utc::now(), &limits)
        })
        .await
        .map_err(UrlError::Local)?;
        let manifest = match verified {
            Ok((manifest, signed_by)) => {
                tracing::info!(target: "defs", url = %url, version = manifest.version, files = manifest.files.len(), signed_by = ?signed_by, "definitions manifest verified");
                manifest
            }
            // The same version again is the normal "nothing new"; an older one is a replay.
            Err(DefsError::Rollback { offered, installed }) if offered == installed => {
                let _ = tokio::fs::remove_dir_all(download_dir).await;
                return Ok(Offer::UpToDate(installed));
            }
            Err(e) => return Err(e.into()),
        };
        for entry in &manifest.files {
            download_file(
                client,
                &base.file(&entry.name),
                entry,
                &download_dir.join(&entry.name),
            )
            .await?;
        }
        Ok(Offer::Downloaded(manifest))
    }

    /// Installs the downloaded package, swaps the engine in, checks it in place, and starts
    /// probation; rolls back at once if the check fails.
    async fn install(
        &self,
        store: &DefinitionsStore,
        download_dir: &Path,
        keys: &[PinnedKey],
        limits: &Limits,
        manifest: Manifest,
    ) -> UpdateOutcome {
        let result = blocking({
            let (store, dir, keys, limits) = (
                store.clone(),
                download_dir.to_path_buf(),
                keys.to_vec(),
                *limits,
            );
            move || store.install(&dir, &keys, Utc::now(), &limits)
        })
        .await;
        let _ = tokio::fs::remove_dir_all(download_dir).await;
        let installed = match result {
            Ok(Ok(i)) => i,
            Ok(Err(e)) => return UpdateOutcome::Failed(format!("package refused: {e}")),
            Err(e) => return UpdateOutcome::Failed(e),
        };
        let version = installed.version.version;
        let report = installed.report;
        let engine = Arc::new(installed.engine);
        let previous_version = self.status().installed.map(|v| v.version);
        let old = self.switch.swap(engine.clone());
        *self.previous_engine.lock().expect("previous engine") = previous_version.map(|v| (v, old));
        tracing::info!(target: "defs", version, signatures = engine.signature_counts().total(), "new definitions swapped in");

        let live = self.shared.snapshot();
        let spec = manifest.self_test.clone();
        let check = blocking(move || check_live(&live, &engine, &report, &spec))
            .await
            .and_then(|r| r);
        if let Err(reason) = check {
            let why = format!("version {version} failed its self-test after the swap: {reason}");
            let rolled = self.roll_back_locked(&why).await;
            return UpdateOutcome::Failed(match rolled {
                Ok(line) => format!("{why}; {line}"),
                Err(e) => format!("{why}; rollback failed: {e}"),
            });
        }
        let probation = self.shared.snapshot().config.definitions.probation;
        if !probation.is_zero() {
            *self.probation.lock().expect("probation") = Some(Probation {
                version,
                until: tokio::time::Instant::now() + probation,
                scan_errors_at_start: self.scan_errors(),
            });
            self.status
                .lock()
                .expect("definitions status")
                .probation_until =
                Some(Utc::now() + chrono::Duration::from_std(probation).unwrap_or_default());
        }
        UpdateOutcome::Updated {
            version,
            from: previous_version,
        }
    }

    /// `portcullis defs rollback`: back to the previous version, now.
    pub async fn roll_back(&self, reason: &str) -> Result<String, String> {
        let _busy = self.busy.lock().await;
        let result = self.roll_back_locked(reason).await;
        self.refresh_installed().await;
        result
    }

    /// Rolls the store back and swaps the previous engine in; alerts. The caller holds `busy`.
    async fn roll_back_locked(&self, reason: &str) -> Result<String, String> {
        let store_dir = self.shared.snapshot().config.definitions_dir();
        let from = self.status().installed.map(|v| v.version);
        let rolled = blocking({
            let dir = store_dir.clone();
            move || DefinitionsStore::open(&dir).and_then(|s| s.rollback())
        })
        .await?;
        let back = match rolled {
            Ok(v) => v,
            Err(e) => {
                // Without a previous version on disk, at least stop using the new engine.
                if let Some((_, engine)) =
                    self.previous_engine.lock().expect("previous engine").take()
                {
                    self.switch.swap(engine);
                }
                return Err(e.to_string());
            }
        };
        let kept = self.previous_engine.lock().expect("previous engine").take();
        let engine = match kept {
            Some((version, engine)) if version == back.version => engine,
            _ => {
                let loaded = blocking({
                    let dir = store_dir.clone();
                    move || DefinitionsStore::open(&dir).and_then(|s| s.load_current())
                })
                .await?;
                match loaded {
                    Ok(Some((engine, _))) => Arc::new(engine),
                    Ok(None) => Arc::new(Engine::builtin()),
                    Err(e) => {
                        return Err(format!(
                            "rolled back on disk to version {}, but it cannot be loaded: {e}",
                            back.version
                        ));
                    }
                }
            }
        };
        self.switch.swap(engine);
        *self.probation.lock().expect("probation") = None;
        self.status
            .lock()
            .expect("definitions status")
            .probation_until = None;
        let line = format!(
            "definitions version {} rolled back to version {}",
            from.map(|v| v.to_string()).unwrap_or_else(|| "?".into()),
            back.version
        );
        tracing::warn!(target: "defs", from = ?from, to = back.version, reason, "definitions rolled back");
        self.shared.alert(Alert::new(
            AlertKind::DefinitionsUpdateFailed,
            "rollback",
            format!("{line}: {reason}"),
            format!(
                "Reason: {reason}\nThe rolled-back version is deleted and will not be installed again; the publisher must publish a higher version."
            ),
        ));
        Ok(line)
    }

    /// Ends probation, or rolls back when scan errors spiked since the swap.
    async fn check_probation(&self) {
        let (version, errors, over) = {
            let guard = self.probation.lock().expect("probation");
            let Some(p) = guard.as_ref() else { return };
            let errors = self.scan_errors().saturating_sub(p.scan_errors_at_start);
            (p.version, errors, tokio::time::Instant::now() >= p.until)
        };
        let limit = self
            .shared
            .snapshot()
            .config
            .definitions
            .probation_max_scan_errors;
        if limit > 0 && errors >= limit {
            let _busy = self.busy.lock().await;
            let reason = format!(
                "{errors} scan errors since version {version} was swapped in (limit {limit})"
            );
            if let Err(e) = self.roll_back_locked(&reason).await {
                tracing::error!(target: "defs", error = %e, "automatic definitions rollback failed");
                *self.probation.lock().expect("probation") = None;
            }
            drop(_busy);
            self.refresh_installed().await;
        } else if over {
            tracing::info!(target: "defs", version, scan_errors = errors, "new definitions passed probation");
            *self.probation.lock().expect("probation") = None;
            self.status
                .lock()
                .expect("definitions status")
                .probation_until = None;
        }
    }

    /// Raises the stale alert when the installed version is older than `stale_after`.
    fn check_stale(&self) {
        let Some(installed) = self.status().installed else {
            return;
        };
        let stale_after = self.shared.snapshot().config.definitions.stale_after;
        if !is_stale(&installed, stale_after) {
            *self.last_stale_alert.lock().expect("stale alert") = None;
            return;
        }
        let mut last = self.last_stale_alert.lock().expect("stale alert");
        if last.is_some_and(|at| at.elapsed() < STALE_ALERT_EVERY) {
            return;
        }
        *last = Some(tokio::time::Instant::now());
        let age = Utc::now() - installed.created;
        let status = self.status();
        self.shared.alert(Alert::new(
            AlertKind::DefinitionsStale,
            "",
            format!(
                "antivirus definitions version {} are {} hours old",
                installed.version,
                age.num_hours()
            ),
            format!(
                "Created: {}\nExpires: {}\nLast attempt: {}\nLast success: {}\nLast error: {}",
                installed.created.to_rfc3339(),
                installed.expires.to_rfc3339(),
                status
                    .last_attempt
                    .map(|t| t.to_rfc3339())
                    .unwrap_or_else(|| "never".into()),
                status
                    .last_success
                    .map(|t| t.to_rfc3339())
                    .unwrap_or_else(|| "never".into()),
                status.last_error.unwrap_or_else(|| "none".into()),
            ),
        ));
    }

    /// Reads what the store has installed into the status.
    async fn refresh_installed(&self) {
        let dir = self.shared.snapshot().config.definitions_dir();
        let found = blocking(move || DefinitionsStore::open(&dir).and_then(|s| s.status())).await;
        let signatures = self.switch.current().signature_counts().total() as u64;
        let mut status = self.status.lock().expect("definitions status");
        status.signatures = signatures;
        match found {
            Ok(Ok(store)) => {
                status.installed = store.current.as_ref().map(VersionView::from);
                status.previous = store.previous.as_ref().map(VersionView::from);
                status.highest_version = store.highest_version;
            }
            Ok(Err(e)) => {
                tracing::warn!(target: "defs", error = %e, "cannot read the definitions store")
            }
            Err(e) => {
                tracing::warn!(target: "defs", error = %e, "cannot read the definitions store")
            }
        }
    }

    /// Scans that failed since start-up (the `scan_verdicts{verdict="error"}` counter).
    fn scan_errors(&self) -> u64 {
        self.shared
            .metrics
            .verdicts
            .get_or_create(&vec![("verdict", "error")])
            .get()
    }
}

/// Why updates are off, if they are.
fn disabled_reason(section: &DefinitionsSection) -> Option<String> {
    if section.urls.is_empty() {
        Some("definitions.urls is empty".into())
    } else if section.pinned_keys.is_empty() {
        Some("no publisher key is pinned (definitions.pinned_keys is empty): nothing could be trusted".into())
    } else {
        None
    }
}

/// Parses `definitions.pinned_keys`: 64 hex digits, or the path of a public key file.
pub fn pinned_keys(entries: &[String]) -> Result<Vec<PinnedKey>, DefsError> {
    entries
        .iter()
        .map(|entry| {
            let text = entry.trim();
            if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
                PinnedKey::from_text(text)
            } else {
                PinnedKey::load(Path::new(text))
            }
        })
        .collect()
}

fn is_stale(version: &VersionView, stale_after: Duration) -> bool {
    let now = Utc::now();
    now >= version.expires
        || (now - version.created)
            .to_std()
            .is_ok_and(|age| age > stale_after)
}

fn random_jitter(max: Duration) -> Duration {
    if max.is_zero() {
        return Duration::ZERO;
    }
    Duration::from_millis(
        rand::thread_rng().gen_range(0..=max.as_millis().min(u64::MAX as u128) as u64),
    )
}

/// Runs blocking work (file system, hashing, loading) on the blocking pool.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| format!("internal error: {e}"))
}

/// Checks the engine the scanners now see: it is the new one, it passes the package's
/// self-test, and a whole message with EICAR through the live scanners is detected.
fn check_live(
    live: &Snapshot,
    engine: &Arc<Engine>,
    report: &portcullis_av::LoadReport,
    spec: &portcullis_defs::SelfTestSpec,
) -> Result<(), String> {
    if !Arc::ptr_eq(&live.engine, engine) {
        return Err("the scanners do not see the new engine".into());
    }
    portcullis_defs::self_test(&live.engine, report, spec).map_err(|e| e.to_string())?;
    if live.config.antivirus.enabled {
        let eicar = std::str::from_utf8(portcullis_av::EICAR).unwrap_or_default();
        let probe = format!(
            "From: selftest@portcullis\r\nSubject: definitions self-test\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nself-test\r\n--b\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=\"eicar.com\"\r\n\r\n{eicar}\r\n--b--\r\n"
        );
        let verdict = crate::scan::Scanners::of(live).evaluate(probe.as_bytes());
        if !verdict.viruses().contains(&portcullis_av::EICAR_NAME) {
            return Err("the EICAR test message was not detected by the live scanners".into());
        }
    }
    Ok(())
}

/// Downloads one package file into `path` through [`portcullis_defs::check_file`], which reads
/// at most one byte more than declared; the download itself is cut at the declared size too.
async fn download_file(
    client: &HttpClient,
    url: &str,
    entry: &FileEntry,
    path: &Path,
) -> Result<(), UrlError> {
    let mut download = client.get(url, entry.size).await?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(16);
    let checker = tokio::task::spawn_blocking({
        let (entry, path) = (entry.clone(), path.to_path_buf());
        move || -> Result<(), UrlError> {
            let file = std::fs::File::create(&path)
                .map_err(|e| UrlError::Local(format!("cannot create {}: {e}", path.display())))?;
            portcullis_defs::check_file(
                &entry,
                ChannelReader {
                    rx,
                    current: Bytes::new(),
                },
                &file,
            )?;
            file.sync_all()
                .map_err(|e| UrlError::Local(format!("cannot write {}: {e}", path.display())))
        }
    });
    let mut network = None;
    loop {
        match download.chunk().await {
            Ok(Some(data)) => {
                if tx.send(data).await.is_err() {
                    break; // the checker has seen enough (or failed)
                }
            }
            Ok(None) => break,
            Err(e) => {
                network = Some(e);
                break;
            }
        }
    }
    drop(tx);
    drop(download);
    let checked = checker
        .await
        .map_err(|e| UrlError::Local(format!("internal error: {e}")))?;
    match network {
        Some(FetchError::TooLarge { .. }) => Err(UrlError::Refused(DefsError::FileSizeMismatch {
            name: entry.name.clone(),
            expected: entry.size,
            actual: format!("more than {} (the server kept sending)", entry.size),
        })),
        Some(e) => Err(e.into()),
        None => checked,
    }
}

/// Feeds downloaded chunks to a blocking reader.
struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<Bytes>,
    current: Bytes,
}

impl std::io::Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(next) => self.current = next,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

#[cfg(test)]
mod tests;
