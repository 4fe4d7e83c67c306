//! The promise behind every 250: a message the gateway acknowledged survives kill -9.
//!
//! ~3000 messages arrive over 10 concurrent smtplib clients (`fixtures/load_client.py`) while the
//! daemon is killed with SIGKILL several times at random moments and restarted on the same data
//! directory. Afterwards every acknowledged message must reach the next hop at least once.

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use portcullis_e2e::process::{die_with_parent, read_lossy, wait_timeout};
use portcullis_e2e::{Daemon, GatewayConfig, Sink, fixture, python};
use rand::Rng;

/// Writes straight to the process's stderr, past libtest's output capture, so the counts show in
/// CI logs even when the test passes.
macro_rules! report {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

const MESSAGES: usize = 3000;
const CLIENTS: usize = 10;
const KILLS: usize = 4;

/// The Message-ID numbers `<load-N@e2e.test>` found in `data`'s header.
fn load_number(data: &[u8]) -> Option<u64> {
    let text = String::from_utf8_lossy(&data[..data.len().min(4096)]);
    let start = text.find("<load-")? + "<load-".len();
    let end = start + text[start..].find('@')?;
    text[start..end].parse().ok()
}

/// The X-Load-Attempt token of a load message: one per time the client sent it.
fn load_attempt(data: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(&data[..data.len().min(4096)]);
    let start = text.find("X-Load-Attempt: ")? + "X-Load-Attempt: ".len();
    let end = start + text[start..].find('\r')?;
    Some(text[start..end].to_string())
}

fn acked_numbers(path: &std::path::Path) -> BTreeSet<u64> {
    read_lossy(path)
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

#[test]
fn messages_queued_before_a_kill_9_are_delivered_after_restart() {
    const QUEUED: usize = 20;
    let sink = Sink::start_with(portcullis_e2e::SinkOptions {
        accept_all: true,
        ..Default::default()
    });
    let mut gateway = Daemon::start(GatewayConfig::new().relay_to(&sink));
    gateway.ctl(&["pause-delivery"]).success();
    let mut client = portcullis_e2e::SmtpClient::greeted(gateway.smtp_port());
    for n in 0..QUEUED {
        let message = portcullis_e2e::smtp::simple_message(
            "a@origin.test",
            "b@remote.test",
            &format!("queued {n}"),
            "hi",
        );
        assert_eq!(
            client
                .send_message("a@origin.test", &["b@remote.test"], &message)
                .unwrap()
                .code,
            250
        );
    }
    client.quit();

    gateway.kill9();
    gateway.restart();
    let messages = sink.wait_for_messages(QUEUED, Duration::from_secs(60));
    let subjects: BTreeSet<String> = messages
        .iter()
        .filter_map(|m| m.header("Subject"))
        .collect();
    assert_eq!(
        subjects.len(),
        QUEUED,
        "some queued messages were not delivered after the restart"
    );
    gateway.wait_queue_empty(Duration::from_secs(30));
}

#[test]
fn every_acknowledged_message_is_delivered_despite_repeated_kill_9() {
    let sink = Sink::start_with(portcullis_e2e::SinkOptions {
        accept_all: true,
        ..Default::default()
    });
    let config = GatewayConfig::new()
        .relay_to(&sink)
        .set("smtp.max_sessions", 40)
        .set("smtp.max_sessions_per_ip", 40)
        .set("queue.retry_schedule", vec!["1s"])
        // A message in flight at every kill would otherwise be held as a suspect after 3 crashes;
        // this test is about losing mail, not about the suspect policy.
        .set("queue.suspect_after_crashes", 1000)
        // Small log segments, so that the load runs through several prepared (zero-filled)
        // segments and the kills land in them too.
        .set("queue.log_segment_mib", 1)
        .set("delivery.max_connections", 20)
        .set("delivery.max_per_destination", 10);
    let mut gateway = Daemon::start(config);

    let acks = gateway.dir().join("acks.txt");
    let summary_path = gateway.dir().join("load-summary.json");
    let mut load = die_with_parent(
        Command::new(python())
            .arg(fixture("load_client.py"))
            .args(["--port", &gateway.smtp_port().to_string()])
            .args(["--count", &MESSAGES.to_string()])
            .args(["--concurrency", &CLIENTS.to_string()])
            .args(["--deadline", "240"])
            .arg("--acks")
            .arg(&acks)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&summary_path).expect("summary file"))
            .stderr(Stdio::inherit()),
    )
    .spawn()
    .expect("start load_client.py");

    // Kill at random points of the load, measured in acknowledgements, so the kills land while
    // mail is arriving however fast or slow this machine is.
    let mut rng = rand::thread_rng();
    let mut thresholds: Vec<usize> = (0..KILLS)
        .map(|_| rng.gen_range(MESSAGES / 20..MESSAGES * 9 / 10))
        .collect();
    thresholds.sort_unstable();
    let mut kills = 0;
    let load_deadline = Instant::now() + Duration::from_secs(300);
    let mut load_status = None;
    while Instant::now() < load_deadline {
        if let Some(status) = load.try_wait().expect("try_wait load") {
            load_status = Some(status);
            break;
        }
        let acked = acked_numbers(&acks).len();
        if kills < thresholds.len() && acked >= thresholds[kills] {
            std::thread::sleep(Duration::from_millis(rng.gen_range(0..300)));
            gateway.kill9();
            kills += 1;
            report!("crash-safety: kill -9 #{kills} after {acked} acknowledgements");
            std::thread::sleep(Duration::from_millis(rng.gen_range(0..700)));
            gateway.restart();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let load_status = load_status.or_else(|| {
        let _ = load.kill();
        wait_timeout(&mut load, Duration::from_secs(10))
    });
    let summary = read_lossy(&summary_path);
    report!(
        "crash-safety: load client {load_status:?}: {}",
        summary.trim()
    );

    let acked = acked_numbers(&acks);
    assert!(
        kills >= 3,
        "only {kills} kills happened during the load (summary: {summary})"
    );
    assert!(
        acked.len() >= MESSAGES * 9 / 10,
        "only {} of {MESSAGES} messages were acknowledged: {summary}",
        acked.len()
    );

    // Drain: every acknowledged number must show up at the sink.
    let mut seen_files = BTreeSet::new();
    let mut deliveries: BTreeMap<u64, u32> = BTreeMap::new();
    let mut copies_of_attempt: BTreeMap<String, u32> = BTreeMap::new();
    let drain_deadline = Instant::now() + Duration::from_secs(180);
    loop {
        for message in sink.new_messages(&mut seen_files) {
            if let Some(number) = load_number(&message.data) {
                *deliveries.entry(number).or_default() += 1;
            }
            if let Some(attempt) = load_attempt(&message.data) {
                *copies_of_attempt.entry(attempt).or_default() += 1;
            }
        }
        let missing = acked.iter().filter(|n| !deliveries.contains_key(n)).count();
        if missing == 0 || Instant::now() >= drain_deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let peak_rss = gateway
        .peak_rss_kib()
        .map_or("unknown".to_string(), |kib| format!("{} MiB", kib / 1024));
    let lost: Vec<u64> = acked
        .iter()
        .copied()
        .filter(|n| !deliveries.contains_key(n))
        .collect();
    let duplicates: u32 = deliveries.values().map(|count| count - 1).sum();
    // The gateway's own duplicates: one sending delivered more than once (the window between
    // the next hop's 250 and our dequeue). The rest are the client's: it sent a message again
    // because a kill took the 250 it was waiting for (RFC 1047), which no server can count.
    let gateway_duplicates: u32 = copies_of_attempt.values().map(|count| count - 1).sum();
    let unacked_delivered = deliveries.keys().filter(|n| !acked.contains(n)).count();
    // Every restart counts the attempts a kill cut short ("queue opened ... possibly_duplicated=N").
    let counted: u32 = gateway
        .log()
        .lines()
        .filter(|line| line.contains("queue opened"))
        .filter_map(|line| {
            line.split_whitespace()
                .find_map(|field| field.strip_prefix("possibly_duplicated="))
                .and_then(|n| n.parse::<u32>().ok())
        })
        .sum();
    let prepared_segments = gateway
        .log()
        .lines()
        .filter(|line| line.contains("log segment started") && line.contains("prepared=true"))
        .count();
    report!(
        "crash-safety: kills={kills} acked={} delivered_unique={} duplicates={duplicates} \
         (of one sending: {gateway_duplicates}, counted by the gateway: {counted}; the rest sent \
         again by the client after a lost 250) delivered_but_unacked={unacked_delivered} lost={} \
         prepared_log_segments={prepared_segments} peak_rss_of_last_run={peak_rss}",
        acked.len(),
        deliveries.len(),
        lost.len()
    );
    assert!(
        prepared_segments > 0,
        "no prepared log segment was used: the test does not cover them"
    );
    assert!(
        gateway_duplicates <= counted,
        "{gateway_duplicates} sendings arrived twice, but the gateway counted only {counted} \
         possible duplicates at its restarts: a duplicate went unnoticed"
    );
    if !lost.is_empty() {
        let queue = gateway.queue(&["list", "--json"]);
        panic!(
            "{} acknowledged messages never reached the next hop, e.g. {:?}\nqueue now: {}",
            lost.len(),
            &lost[..lost.len().min(20)],
            portcullis_e2e::process::tail(&queue.stdout, 40)
        );
    }
}
