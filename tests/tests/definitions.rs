//! Definitions updates while mail flows, end to end: `portcullis defs keygen/build/serve` publish
//! signed packages on loopback, the running gateway installs one after another (`defs
//! update-now`) while SMTP clients keep sending, and every swap must be invisible to them: no
//! refused or dropped connection, no temporary failure, every accepted message delivered, and the
//! new signatures in force from the swap on.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use portcullis_e2e::cli::{binary, portcullis};
use portcullis_e2e::process::die_with_parent;
use portcullis_e2e::{Daemon, GatewayConfig, Sink, SmtpClient, free_port, wait_for};

const WAIT: Duration = Duration::from_secs(60);
/// Packages published one after another; version N detects the test "viruses" 1..=N.
const VERSIONS: u64 = 4;

/// A file that only our test signatures know: `Test.Swap.N` detects blob N.
fn blob(n: u64) -> Vec<u8> {
    format!("portcullis definitions-swap test payload number {n}\n")
        .repeat(20)
        .into_bytes()
}

fn md5_hex(data: &[u8], dir: &Path) -> String {
    let file = dir.join("blob.tmp");
    std::fs::write(&file, data).unwrap();
    let out = Command::new("md5sum").arg(&file).output().expect("md5sum");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// Builds package `version` (signatures for blobs 1..=version) into `out`.
fn build_package(work: &Path, key: &Path, version: u64, out: &Path) {
    let sigs = work.join(format!("sigs-{version}"));
    std::fs::create_dir_all(&sigs).unwrap();
    let mut hdb = String::new();
    for n in 1..=version {
        let data = blob(n);
        hdb.push_str(&format!(
            "{}:{}:Test.Swap.{n}\n",
            md5_hex(&data, work),
            data.len()
        ));
    }
    std::fs::write(sigs.join("swap.hdb"), hdb).unwrap();
    let built = portcullis(&[
        "defs",
        "build",
        "--from",
        &sigs.display().to_string(),
        "--key",
        &key.display().to_string(),
        "--version",
        &version.to_string(),
        "--out",
        &out.display().to_string(),
    ]);
    assert_eq!(built.status, Some(0), "defs build: {}", built.stderr);
}

/// Publishes a built package in the served directory (file by file; the gateway is told to
/// fetch only afterwards).
fn publish(package: &Path, served: &Path) {
    for entry in std::fs::read_dir(served).unwrap() {
        std::fs::remove_file(entry.unwrap().path()).unwrap();
    }
    for entry in std::fs::read_dir(package).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), served.join(entry.file_name())).unwrap();
    }
}

fn message(subject: &str, attachment: Option<&[u8]>) -> Vec<u8> {
    let mut m = format!(
        "From: alice@origin.test\r\nTo: bob@remote.test\r\nSubject: {subject}\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\n\
         text of {subject}\r\n"
    );
    if let Some(data) = attachment {
        m.push_str(
            "--b\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; \
             filename=\"payload.bin\"\r\nContent-Transfer-Encoding: base64\r\n\r\n",
        );
        let encoded = base64::engine::general_purpose::STANDARD.encode(data);
        for line in encoded.as_bytes().chunks(76) {
            m.push_str(std::str::from_utf8(line).unwrap());
            m.push_str("\r\n");
        }
    }
    m.push_str("--b--\r\n");
    m.into_bytes()
}

/// What one client thread saw.
#[derive(Default)]
struct Load {
    accepted: Vec<String>,
    latencies: Vec<Duration>,
    failures: Vec<String>,
}

/// Sends clean messages, each on its own connection, until `stop`.
fn send_clean_until(port: u16, client: usize, stop: Arc<AtomicBool>) -> Load {
    let mut load = Load::default();
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let subject = format!("load {client}-{n}");
        let started = Instant::now();
        let outcome = SmtpClient::connect(port).and_then(|(mut c, banner)| {
            if banner.code != 220 {
                return Ok(format!("banner {banner}"));
            }
            c.command("EHLO load.test")?;
            let reply = c.send_message(
                "alice@origin.test",
                &["bob@remote.test"],
                &message(&subject, None),
            )?;
            c.quit();
            Ok(if reply.code == 250 {
                String::new()
            } else {
                format!("{reply}")
            })
        });
        match outcome {
            Ok(problem) if problem.is_empty() => {
                load.latencies.push(started.elapsed());
                load.accepted.push(subject);
            }
            Ok(problem) => load.failures.push(format!("{subject}: {problem}")),
            Err(e) => load.failures.push(format!("{subject}: {e}")),
        }
    }
    load
}

/// The reply to a message carrying blob `n`.
fn send_payload(port: u16, n: u64) -> portcullis_e2e::Reply {
    let mut client = SmtpClient::greeted(port);
    let reply = client
        .send_message(
            "alice@origin.test",
            &["bob@remote.test"],
            &message(&format!("payload {n}"), Some(&blob(n))),
        )
        .expect("SMTP transaction");
    client.quit();
    reply
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn definitions_swapped_under_smtp_load_drop_nothing_and_take_effect_at_once() {
    let work = tempfile::tempdir().unwrap();
    let key: PathBuf = work.path().join("publisher.key");
    let made = portcullis(&["defs", "keygen", &key.display().to_string()]);
    assert_eq!(made.status, Some(0), "defs keygen: {}", made.stderr);
    let packages: Vec<PathBuf> = (1..=VERSIONS)
        .map(|v| {
            let out = work.path().join(format!("package-{v}"));
            build_package(work.path(), &key, v, &out);
            out
        })
        .collect();
    let served = work.path().join("served");
    std::fs::create_dir_all(&served).unwrap();
    let port = free_port();
    let mut serve = Command::new(binary());
    serve
        .args(["defs", "serve", &served.display().to_string(), "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let _server = Server(die_with_parent(&mut serve).spawn().expect("defs serve"));

    let sink = Sink::start();
    let pub_key = format!("{}.pub", key.display());
    let gateway = Daemon::start(
        GatewayConfig::new()
            .relay_to(&sink)
            // All clients come from 127.0.0.1; the default of 5 per address is for the internet.
            .set("smtp.max_sessions_per_ip", 50i64)
            .set(
                "definitions.urls",
                vec![format!("http://127.0.0.1:{port}/")],
            )
            .set("definitions.pinned_keys", vec![pub_key])
            .set("definitions.jitter", "0s")
            .set("definitions.retry_delay", "1s"),
    );
    let smtp = gateway.smtp_port();
    assert_eq!(
        send_payload(smtp, 1).code,
        250,
        "no definitions yet: blob 1 passes"
    );

    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|c| {
            let stop = stop.clone();
            std::thread::spawn(move || send_clean_until(smtp, c, stop))
        })
        .collect();
    let mut swap_times = Vec::new();
    for (i, package) in packages.iter().enumerate() {
        let version = i as u64 + 1;
        std::thread::sleep(Duration::from_millis(700));
        publish(package, &served);
        let started = Instant::now();
        let update = gateway.cli_raw(&["defs", "update-now"]);
        swap_times.push(started.elapsed());
        assert_eq!(
            update.status,
            Some(0),
            "update to {version}: {}{}",
            update.stdout,
            update.stderr
        );
        // From the swap on, the newest signature is in force, and the older ones still are.
        for n in [1, version] {
            let reply = send_payload(smtp, n);
            assert_eq!(
                reply.code, 554,
                "blob {n} after installing version {version}: {reply}"
            );
            assert!(reply.text().contains(&format!("Test.Swap.{n}")), "{reply}");
        }
        if version < VERSIONS {
            assert_eq!(
                send_payload(smtp, version + 1).code,
                250,
                "blob {} is not known yet",
                version + 1
            );
        }
    }
    std::thread::sleep(Duration::from_millis(700));
    stop.store(true, Ordering::Relaxed);
    let loads: Vec<Load> = clients.into_iter().map(|c| c.join().unwrap()).collect();

    let failures: Vec<&String> = loads.iter().flat_map(|l| &l.failures).collect();
    assert!(
        failures.is_empty(),
        "SMTP failures during the swaps: {failures:?}"
    );
    let accepted: Vec<&String> = loads.iter().flat_map(|l| &l.accepted).collect();
    assert!(
        accepted.len() >= 20,
        "too little load to mean anything: {}",
        accepted.len()
    );
    // The payloads accepted while their signature was not yet installed (blob 1 before any
    // definitions, blob N+1 under version N), plus every accepted load message, and nothing else.
    let expected = accepted.len() + VERSIONS as usize;
    wait_for("every accepted message at the sink", WAIT, || {
        (sink.messages().len() >= expected).then_some(())
    });
    let arrived: Vec<String> = sink
        .messages()
        .iter()
        .filter_map(|m| m.header("Subject"))
        .collect();
    for subject in &accepted {
        assert!(
            arrived.contains(subject),
            "{subject} was accepted but never delivered"
        );
    }
    assert_eq!(arrived.len(), expected, "{arrived:?}");
    let mut latencies: Vec<Duration> = loads.iter().flat_map(|l| l.latencies.clone()).collect();
    latencies.sort();
    let p = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    eprintln!(
        "definitions swaps: {VERSIONS} updates (update-now took {swap_times:?}); {} messages accepted \
         meanwhile over 4 clients, 0 failed; session latency p50 {:?}, p99 {:?}, max {:?}",
        accepted.len(),
        p(0.5),
        p(0.99),
        latencies.last().unwrap()
    );
}
