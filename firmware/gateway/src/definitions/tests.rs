//! Update scenarios against a real package server on 127.0.0.1 (the `defs serve` router,
//! in-process on port 0), a tiny authenticating proxy, and concurrent scans during swaps.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use chrono::Utc;
use portcullis_av::Engine;
use portcullis_defs::{BuildOptions, PublisherKey};
use portcullis_queue::{Queue, QueueConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::alerts::AlertKind;
use crate::config::{Config, Overrides};

const OLD_SIG: &str = "oldsignature-payload";
const NEW_SIG: &str = "newsignature-payload";

/// A `.ndb` line detecting `payload` anywhere.
fn ndb(name: &str, payload: &str) -> String {
    format!(
        "{name}:0:*:{}\n",
        payload
            .bytes()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    )
}

/// Builds a signed package of one `.ndb` file into `out`.
fn package(
    key: &PublisherKey,
    version: u64,
    lines: &str,
    out: &Path,
    created: chrono::DateTime<Utc>,
    expires: chrono::DateTime<Utc>,
) {
    let src = out.with_extension("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("test.ndb"), lines).unwrap();
    let options = BuildOptions {
        version,
        created,
        expires,
        known_samples: Vec::new(),
    };
    portcullis_defs::build_with(&src, &[key], &options, out).unwrap();
}

fn fresh_package(key: &PublisherKey, version: u64, lines: &str, out: &Path) {
    package(
        key,
        version,
        lines,
        out,
        Utc::now(),
        Utc::now() + chrono::Duration::days(7),
    );
}

/// The package server on 127.0.0.1:0, serving `router` until the token is cancelled.
async fn server(
    router: axum::Router,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> (SocketAddr, CancellationToken) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let token = CancellationToken::new();
    tokio::spawn(serve::serve(listener, router, tls, token.clone()));
    (addr, token)
}

struct Gateway {
    _dir: tempfile::TempDir,
    shared: Arc<Shared>,
    updater: Arc<Updater>,
}

async fn gateway(dir: tempfile::TempDir, definitions: &str) -> Gateway {
    let retry_delay = if definitions.contains("retry_delay") {
        ""
    } else {
        "retry_delay = \"10ms\"\n"
    };
    let text = format!(
        "[server]\ndata_dir = {:?}\nhostname = \"gw.example.com\"\n[definitions]\njitter = \"0s\"\nconnect_timeout = \"2s\"\nstall_timeout = \"2s\"\n{retry_delay}{definitions}",
        dir.path().display().to_string()
    );
    let config = Config::parse(&text, "test.toml", &Overrides::default()).unwrap();
    let (queue, _) = Queue::open(&dir.path().join("queue"), QueueConfig::default()).unwrap();
    let snapshot = Snapshot::new(config, Arc::new(Engine::builtin())).unwrap();
    let (tx, rx) = watch::channel(Arc::new(snapshot));
    let shared = Arc::new(Shared::new(rx, queue, None));
    let updater = Arc::new(Updater::new(
        shared.clone(),
        EngineSwitch::new(Arc::new(tx)),
    ));
    let _ = shared.definitions.set(updater.clone());
    Gateway {
        _dir: dir,
        shared,
        updater,
    }
}

fn mail_with(payloads: &[&str]) -> Vec<u8> {
    let mut text = String::from(
        "From: a@example.com\r\nSubject: t\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n",
    );
    for (i, p) in payloads.iter().enumerate() {
        text.push_str(&format!(
            "--b\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=\"f{i}.bin\"\r\n\r\n{p}\r\n"
        ));
    }
    text.push_str("--b--\r\n");
    text.into_bytes()
}

fn viruses(shared: &Shared, mail: &[u8]) -> Vec<String> {
    let snap = shared.snapshot();
    let verdict = crate::scan::Scanners::of(&snap).evaluate(mail);
    let mut names: Vec<String> = verdict.viruses().iter().map(|v| v.to_string()).collect();
    names.sort();
    names
}

fn alerts_of(shared: &Shared, kind: AlertKind) -> Vec<crate::alerts::AlertRecord> {
    shared
        .alerter
        .recent(100)
        .into_iter()
        .filter(|a| a.kind == kind)
        .collect()
}

fn settings(addr: SocketAddr, key: &PublisherKey) -> String {
    format!(
        "urls = [\"http://{addr}/pkg/\"]\npinned_keys = [\"{}\"]\nretries = 0\n",
        key.public().to_hex()
    )
}

/// Serves `dir` under `/pkg/` (the URL path of a real mirror).
fn mirror(dir: &Path) -> axum::Router {
    axum::Router::new().nest("/pkg", serve::router(dir))
}

#[tokio::test]
async fn normal_update_installs_swaps_the_engine_and_alerts_then_reports_up_to_date() {
    let work = tempfile::tempdir().unwrap();
    let key = PublisherKey::generate();
    let pkg = work.path().join("pkg");
    fresh_package(&key, 1, &ndb("Test.New", NEW_SIG), &pkg);
    let (addr, _stop) = server(mirror(&pkg), None).await;
    let gw = gateway(tempfile::tempdir().unwrap(), &settings(addr, &key)).await;
    assert!(viruses(&gw.shared, &mail_with(&[NEW_SIG])).is_empty());

    let outcome = gw.updater.update_now().await;
    assert_eq!(
        outcome,
        UpdateOutcome::Updated {
            version: 1,
            from: None
        }
    );
    assert_eq!(
        viruses(&gw.shared, &mail_with(&[NEW_SIG])),
        vec!["Test.New"]
    );
    let status = gw.updater.status();
    assert_eq!(status.installed.as_ref().map(|v| v.version), Some(1));
    assert!(status.last_success.is_some() && status.last_attempt.is_some());
    assert_eq!(
        alerts_of(&gw.shared, AlertKind::DefinitionsUpdated).len(),
        1
    );
    assert!(gw.updater.age_seconds().is_some());

    assert_eq!(
        gw.updater.update_now().await,
        UpdateOutcome::UpToDate { version: 1 }
    );
    assert!(
        !gw.shared
            .snapshot()
            .config
            .definitions_dir()
            .join(DOWNLOAD_DIR)
            .exists()
    );
}

#[tokio::test]
async fn forged_signature_is_refused_and_the_running_engine_stays() {
    let work = tempfile::tempdir().unwrap();
    let key = PublisherKey::generate();
    let pkg = work.path().join("pkg");
    fresh_package(&key, 1, &ndb("Test.New", NEW_SIG), &pkg);
    // Tamper with the signed manifest: bump the version without re-signing.
    let manifest = std::fs::read_to_string(pkg.join("manifest.json")).unwrap();
    std::fs::write(
        pkg.join("manifest.json"),
        manifest.replacen("\"version\": 1", "\"version\": 9", 1),
    )
    .unwrap();
    let (addr, _stop) = server(mirror(&pkg), None).await;
    let gw = gateway(tempfile::tempdir().unwrap(), &settings(addr, &key)).await;

    let UpdateOutcome::Failed(why) = gw.updater.update_now().await else {
        panic!("forged package accepted")
    };
    assert!(why.contains("does not match the manifest"), "{why}");
    assert!(viruses(&gw.shared, &mail_with(&[NEW_SIG])).is_empty());
    assert!(gw.updater.status().installed.is_none());
    assert_eq!(
        alerts_of(&gw.shared, AlertKind::DefinitionsUpdateFailed).len(),
        1
    );
}

#[tokio::test]
async fn package_signed_by_an_unpinned_key_is_refused() {
    let work = tempfile::tempdir().unwrap();
    let (pinned, stranger) = (PublisherKey::generate(), PublisherKey::generate());
    let pkg = work.path().join("pkg");
    fresh_package(&stranger, 1, &ndb("Test.New", NEW_SIG), &pkg);
    let (addr, _stop) = server(mirror(&pkg), None).await;
    let gw = gateway(tempfile::tempdir().unwrap(), &settings(addr, &pinned)).await;
    let UpdateOutcome::Failed(why) = gw.updater.update_now().await else {
        panic!("accepted")
    };
    assert!(why.contains("none of them is pinned"), "{why}");
}

#[tokio::test]
async fn older_version_after_a_newer_one_is_refused_as_rollback() {
    let work = tempfile::tempdir().unwrap();
    let key = PublisherKey::generate();
    let (v5, v3) = (work.path().join("v5"), work.path().join("v3"));
    fresh_package(&key, 5, &ndb("Test.New", NEW_SIG), &v5);
    fresh_package(&key, 3, &ndb("Test.Old", OLD_SIG), &v3);
    let (addr5, _s5) = server(mirror(&v5), None).await;
    let (addr3, _s3) = server(mirror(&v3), None).await;
    let gw = gateway(tempfile::tempdir().unwrap(), &settings(addr5, &key)).await;
    assert_eq!(
        gw.updater.update_now().await,
        UpdateOutcome::Updated {
            version: 5,
            from: None
        }
    );

    // The mirror is replaced by one replaying an older, validly signed package.
    let replay = crate::config::Config {
        definitions: crate::config::DefinitionsSection {
            urls: vec![format!("http://{addr3}/pkg/")],
            ..gw.shared.snapshot().config.definitions.clone()
        },
        ..gw.shared.snapshot().config.clone()
    };
    gw.updater
        .switch
        .snapshots
        .send_modify(|s| *s = Arc::new(Snapshot::new(replay, s.engine.clone()).unwrap()));
    let UpdateOutcome::Failed(why) = gw.updater.update_now().await else {
        panic!("rollback accepted")
    };
    assert!(why.contains("not newer than installed version 5"), "{why}");
    assert_eq!(
        viruses(&gw.shared, &mail_with(&[NEW_SIG, OLD_SIG])),
        vec!["Test.New"]
    );
}

#[tokio::test]
async fn expired_package_is_refused_as_a_freeze() {
    let work = tempfile::tempdir().unwrap();
    let key = PublisherKey::generate();
    let pkg = work.path().join("pkg");
    package(
        &key,
        1,
        &ndb("Test.New", NEW_SIG),
        &pkg,
        Utc::now() - chrono::Duration::days(10),
        Utc::now() - chrono::Duration::days(1),
    );
    let (addr, _stop) = server(mirror(&pkg), None).await;
    let gw = gateway(tempfile::tempdir().unwrap(), &settings(addr, &key)).await;
    let UpdateOutcome::Failed(why) = gw.updater.update_now().await else {
        panic!("expired accepted")
    };
    assert!(why.contains("expired"), "{why}");
}

#[tokio::test]
async fn truncated_file_is_refused() {
    let work = tempfile::tempdir().unwrap();
    let key = PublisherKey::generate();
    let pkg = work.path().join("pkg");
    fresh_package(&key, 1, &ndb("Test.New", NEW_SIG), &pkg);
    let file = pkg.join("test.ndb");
    let bytes = std::fs::read(&file).unwrap();
    std::fs::write(&file, &bytes[..bytes.len() / 2]).unwrap();
    let (addr, _stop) = server(mirror(&pkg), None).await;
    let gw = gateway(tempfile::tempdir().unwrap(), &settings(addr, &key)).await;
    let UpdateOutcome::Failed(why) = gw.updater.update_now().await else {
        panic!("truncated accepted")
    };
    assert!(
        why.contains("truncated or padded") && why.contains("test.ndb"),
        "{why}"
    );
    assert!(gw.updater.status().installed.is_none());
}

#[tokio::test]
async fn endless_file_is_cut_off_just_past_its_declared_size() {
    let work = tempfile::tempdir().unwrap();
    let key = PublisherKey::generate();
    let pkg = work.path().join("pkg");
    fresh_package(&key, 1, &ndb("Test.New", NEW_SIG), &pkg);
    let served = Arc::new(AtomicUsize::new(0));
    let counter = served.clone();
    // The manifest and signature are genuine; the signature file never ends.
    let endless = axum::Router::new().route(
        "/pkg/test.ndb",
        axum::routing::get(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            async {
                axum::body::Body::from_stream(tokio_util::io::ReaderStream::new(tokio::io::repeat(
                    b'A',
                )))
            }
        }),
    );
    let (addr, _stop) = server(endless.merge(mirror(&pkg)), None).await;
    let gw = gateway(tempfile::tempdir().unwrap(), &settings(addr, &key)).await;
    let started = std::time::Instant::now();
    let UpdateOutcome::Failed(why) = gw.updater.update_now().await else {
        panic!("endless accepted")
    };
    assert!(
        why.contains("more than") && why.contains("test.ndb"),
        "{why}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    assert_eq!(served.load(Ordering::SeqCst), 1);
    assert!(
        !gw.shared
            .snapshot()
            .config
            .definitions_dir()
            .join(DOWNLOAD_DIR)
            .exists()
    );
}

#[tokio::test]
async fn server_down_is_retried_then_reported_with_a_failure_alert() {
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let key = PublisherKey::generate();
    let gw = gateway(
        tempfile::tempdir().unwrap(),
        &format!("urls = [\"http://{addr}/pkg/\"]\npinned_keys = [\"{}\"]\nretries = 2\nretry_delay = \"100ms\"\n", key.public().to_hex()),
    )
    .await;
    let started = std::time::Instant::now();
    let UpdateOutcome::Failed(why) = gw.updater.update_now().await else {
        panic!("no failure")
    };
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(200),
        "two retries wait twice"
    );
    assert_eq!(why.matches("cannot connect").count(), 3, "{why}");
    let alerts = alerts_of(&gw.shared, AlertKind::DefinitionsUpdateFailed);
    assert_eq!(alerts.len(), 1);
    assert!(alerts[0].detail.contains("cannot connect"));
    assert_eq!(
        gw.updater.status().last_error.as_deref(),
        Some(why.as_str())
    );
}

#[tokio::test]
async fn without_pinned_keys_updates_are_disabled() {
    let gw = gateway(
        tempfile::tempdir().unwrap(),
        "urls = [\"http://127.0.0.1:9/pkg/\"]\n",
    )
    .await;
    let UpdateOutcome::Disabled(why) = gw.updater.update_now().await else {
        panic!("not disabled")
    };
    assert!(why.contains("pinned"), "{why}");
}

/// A forward proxy on 127.0.0.1 that demands basic auth: `CONNECT` tunnels and absolute-form
/// requests. Counts the requests it let through.
async fn proxy(user_pass: &'static str) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let passed = Arc::new(AtomicUsize::new(0));
    let counter = passed.clone();
    let expected = format!(
        "proxy-authorization: basic {}",
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, user_pass)
    )
    .to_lowercase();
    tokio::spawn(async move {
        loop {
            let (mut client, _) = listener.accept().await.unwrap();
            let (counter, expected) = (counter.clone(), expected.clone());
            tokio::spawn(async move {
                let mut head = Vec::new();
                while !head.ends_with(b"\r\n\r\n") {
                    let mut b = [0u8; 1];
                    if client.read(&mut b).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(b[0]);
                }
                let text = String::from_utf8_lossy(&head).to_string();
                if !text.to_lowercase().lines().any(|l| l.trim() == expected) {
                    let _ = client.write_all(b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n").await;
                    return;
                }
                counter.fetch_add(1, Ordering::SeqCst);
                let target = text
                    .split_whitespace()
                    .nth(1)
                    .unwrap_or_default()
                    .to_string();
                if text.starts_with("CONNECT ") {
                    let mut upstream = TcpStream::connect(target.as_str()).await.unwrap();
                    client
                        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                        .await
                        .unwrap();
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                } else {
                    let authority = target
                        .trim_start_matches("http://")
                        .split('/')
                        .next()
                        .unwrap()
                        .to_string();
                    let mut upstream = TcpStream::connect(authority.as_str()).await.unwrap();
                    upstream.write_all(&head).await.unwrap();
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                }
            });
        }
    });
    (addr, passed)
}

/// A CA and a server certificate for 127.0.0.1 signed by it: (CA PEM path, server TLS config).
fn test_pki(dir: &Path) -> (PathBuf, Arc<rustls::ServerConfig>) {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&leaf_key, &ca, &ca_key)
        .unwrap();
    let (ca_file, cert, key) = (
        dir.join("ca.pem"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    );
    std::fs::write(&ca_file, ca.pem()).unwrap();
    std::fs::write(&cert, leaf.pem()).unwrap();
    std::fs::write(&key, leaf_key.serialize_pem()).unwrap();
    (
        ca_file,
        crate::tls::server_config(&cert, &key, dir, "localhost").unwrap(),
    )
}

#[tokio::test]
async fn https_through_a_proxy_with_basic_auth_uses_a_connect_tunnel_and_the_own_ca() {
    let work = tempfile::tempdir().unwrap();
    let key = PublisherKey::generate();
    let pkg = work.path().join("pkg");
    fresh_package(&key, 1, &ndb("Test.New", NEW_SIG), &pkg);
    let (ca_file, tls) = test_pki(work.path());
    let (addr, _stop) = server(mirror(&pkg), Some(tls)).await;
    let (proxy_addr, passed) = proxy("updater:s3cret@x").await;
    let settings = format!(
        "urls = [\"https://{addr}/pkg/\"]\npinned_keys = [\"{}\"]\nretries = 0\nca_file = {:?}\nproxy = \"http://updater:s3cret%40x@{proxy_addr}\"\n",
        key.public().to_hex(),
        ca_file.display().to_string()
    );
    let gw = gateway(tempfile::tempdir().unwrap(), &settings).await;
    assert_eq!(
        gw.updater.update_now().await,
        UpdateOutcome::Updated {
            version: 1,
            from: None
        }
    );
    // manifest.sig, manifest.json and one file: one tunnel each.
    assert_eq!(passed.load(Ordering::SeqCst), 3);
    assert_eq!(
        viruses(&gw.shared, &mail_with(&[NEW_SIG])),
        vec!["Test.New"]
    );
}

#[tokio::test]
async fn plain_http_through_a_proxy_sends_credentials_and_a_wrong_password_is_refused() {
    let work = tempfile::tempdir().unwrap();
    let key = PublisherKey::generate();
    let pkg = work.path().join("pkg");
    fresh_package(&key, 1, &ndb("Test.New", NEW_SIG), &pkg);
    let (addr, _stop) = server(mirror(&pkg), None).await;
    let (proxy_addr, passed) = proxy("updater:right").await;
    let with = |password: &str| {
        format!(
            "{}proxy = \"http://updater:{password}@{proxy_addr}\"\n",
            settings(addr, &key)
        )
    };
    let gw = gateway(tempfile::tempdir().unwrap(), &with("wrong")).await;
    let UpdateOutcome::Failed(why) = gw.updater.update_now().await else {
        panic!("no failure")
    };
    assert!(why.contains("407"), "{why}");
    assert_eq!(passed.load(Ordering::SeqCst), 0);

    let gw = gateway(tempfile::tempdir().unwrap(), &with("right")).await;
    assert_eq!(
        gw.updater.update_now().await,
        UpdateOutcome::Updated {
            version: 1,
            from: None
        }
    );
    assert_eq!(passed.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn https_server_not_signed_by_the_configured_ca_is_refused() {
    let work = tempfile::tempdir().unwrap();
    let key = PublisherKey::generate();
    let pkg = work.path().join("pkg");
    fresh_package(&key, 1, &ndb("Test.New", NEW_SIG), &pkg);
    let (_, tls) = test_pki(&work.path().join("a").tap_mkdir());
    let (other_ca, _) = test_pki(&work.path().join("b").tap_mkdir());
    let (addr, _stop) = server(mirror(&pkg), Some(tls)).await;
    let settings = format!(
        "urls = [\"https://{addr}/pkg/\"]\npinned_keys = [\"{}\"]\nretries = 0\nca_file = {:?}\n",
        key.public().to_hex(),
        other_ca.display().to_string()
    );
    let gw = gateway(tempfile::tempdir().unwrap(), &settings).await;
    let UpdateOutcome::Failed(why) = gw.updater.update_now().await else {
        panic!("untrusted server accepted")
    };
    assert!(why.contains("TLS"), "{why}");
}

trait TapMkdir {
    fn tap_mkdir(self) -> Self;
}

impl TapMkdir for PathBuf {
    fn tap_mkdir(self) -> Self {
        std::fs::create_dir_all(&self).unwrap();
        self
    }
}

#[tokio::test]
async fn manual_rollback_returns_to_the_previous_version_and_alerts() {
    let work = tempfile::tempdir().unwrap();
    let key = PublisherKey::generate();
    let pkg = work.path().join("pkg");
    fresh_package(&key, 1, &ndb("Test.Old", OLD_SIG), &pkg);
    let served = work.path().join("served");
    std::fs::rename(&pkg, &served).unwrap();
    let (addr, _stop) = server(mirror(&served), None).await;
    let gw = gateway(tempfile::tempdir().unwrap(), &settings(addr, &key)).await;
    assert_eq!(
        gw.updater.update_now().await,
        UpdateOutcome::Updated {
            version: 1,
            from: None
        }
    );
    // Publish version 2 in the served directory.
    let v2 = work.path().join("v2");
    fresh_package(&key, 2, &ndb("Test.New", NEW_SIG), &v2);
    std::fs::remove_dir_all(&served).unwrap();
    std::fs::rename(&v2, &served).unwrap();
    assert_eq!(
        gw.updater.update_now().await,
        UpdateOutcome::Updated {
            version: 2,
            from: Some(1)
        }
    );
    assert_eq!(
        viruses(&gw.shared, &mail_with(&[NEW_SIG, OLD_SIG])),
        vec!["Test.New"]
    );

    let line = gw.updater.roll_back("test").await.unwrap();
    assert!(
        line.contains("version 2 rolled back to version 1"),
        "{line}"
    );
    assert_eq!(
        viruses(&gw.shared, &mail_with(&[NEW_SIG, OLD_SIG])),
        vec!["Test.Old"]
    );
    assert_eq!(gw.updater.status().installed.map(|v| v.version), Some(1));
    assert!(
        alerts_of(&gw.shared, AlertKind::DefinitionsUpdateFailed)
            .iter()
            .any(|a| a.summary.contains("rolled back"))
    );
    // The bad version is never taken again: the same package is "nothing new".
    assert_eq!(
        gw.updater.update_now().await,
        UpdateOutcome::UpToDate { version: 2 }
    );
}

#[tokio::test]
async fn scan_errors_during_probation_roll_back_automatically() {
    let work = tempfile::tempdir().unwrap();
    let key = PublisherKey::generate();
    let served = work.path().join("served");
    fresh_package(&key, 1, &ndb("Test.Old", OLD_SIG), &served);
    let (addr, _stop) = server(mirror(&served), None).await;
    let gw = gateway(
        tempfile::tempdir().unwrap(),
        &format!(
            "{}probation = \"1h\"\nprobation_max_scan_errors = 3\n",
            settings(addr, &key)
        ),
    )
    .await;
    assert!(matches!(
        gw.updater.update_now().await,
        UpdateOutcome::Updated { version: 1, .. }
    ));
    let v2 = work.path().join("v2");
    fresh_package(&key, 2, &ndb("Test.New", NEW_SIG), &v2);
    std::fs::remove_dir_all(&served).unwrap();
    std::fs::rename(&v2, &served).unwrap();
    assert!(matches!(
        gw.updater.update_now().await,
        UpdateOutcome::Updated { version: 2, .. }
    ));
    assert!(gw.updater.status().probation_until.is_some());

    let errors = gw
        .shared
        .metrics
        .verdicts
        .get_or_create(&vec![("verdict", "error")]);
    errors.inc();
    gw.updater.check_probation().await;
    assert_eq!(
        gw.updater.status().installed.map(|v| v.version),
        Some(2),
        "two errors fewer than the limit"
    );
    errors.inc();
    errors.inc();
    gw.updater.check_probation().await;
    assert_eq!(gw.updater.status().installed.map(|v| v.version), Some(1));
    assert_eq!(
        viruses(&gw.shared, &mail_with(&[NEW_SIG, OLD_SIG])),
        vec!["Test.Old"]
    );
    assert!(gw.updater.status().probation_until.is_none());
}

#[test]
fn concurrent_scans_during_swaps_see_the_old_or_the_new_engine_never_a_mix() {
    let load = |line: String| {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("s.ndb"), line).unwrap();
        Arc::new(Engine::load(dir.path()).unwrap().0)
    };
    let old = load(ndb("Test.Old", OLD_SIG));
    let new = load(ndb("Test.New", NEW_SIG));
    let config = Config::parse("", "test.toml", &Overrides::default()).unwrap();
    let (tx, rx) = watch::channel(Arc::new(Snapshot::new(config, old.clone()).unwrap()));
    let switch = EngineSwitch::new(Arc::new(tx));
    let mail = mail_with(&[OLD_SIG, NEW_SIG]);
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let scanners: Vec<_> = (0..3)
        .map(|_| {
            let (rx, mail) = (rx.clone(), mail.clone());
            std::thread::spawn(move || {
                let mut seen = std::collections::BTreeMap::<Vec<String>, usize>::new();
                for _ in 0..300 {
                    // Read once per message, as the scan stage does.
                    let snap = rx.borrow().clone();
                    let verdict = crate::scan::Scanners::of(&snap).evaluate(&mail);
                    *seen
                        .entry(verdict.viruses().iter().map(|v| v.to_string()).collect())
                        .or_default() += 1;
                }
                seen
            })
        })
        .collect();
    let swapper = {
        let (switch, done) = (switch.clone(), done.clone());
        std::thread::spawn(move || {
            let mut swaps = 0;
            while !done.load(Ordering::SeqCst) {
                switch.swap(if swaps % 2 == 0 {
                    new.clone()
                } else {
                    old.clone()
                });
                swaps += 1;
                std::thread::sleep(std::time::Duration::from_micros(200));
            }
            swaps
        })
    };
    let mut all = std::collections::BTreeMap::<Vec<String>, usize>::new();
    for s in scanners {
        for (k, v) in s.join().unwrap() {
            *all.entry(k).or_default() += v;
        }
    }
    done.store(true, Ordering::SeqCst);
    assert!(swapper.join().unwrap() > 10);
    let allowed = [vec!["Test.Old".to_string()], vec!["Test.New".to_string()]];
    for (names, count) in &all {
        assert!(allowed.contains(names), "{count} scan(s) saw {names:?}");
    }
    assert_eq!(all.values().sum::<usize>(), 900);
    assert_eq!(
        all.len(),
        2,
        "both engines were in use during the run: {all:?}"
    );
}
