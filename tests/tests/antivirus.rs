//! Antivirus end to end: detection parity with `clamscan` on ClamAV's own test files, and what an
//! infected message gets through SMTP under each `[antivirus] action`.
//!
//! Parity: every file of Debian's `clamav-testfiles`, as it is and wrapped ten ways (zip, 7z,
//! tar, gz, bz2, xz, a 7z > xz > tar > zip nest, three kinds of mail), is scanned by `clamscan` and by
//! `portcullis scan -r` with one database: ClamAV's test signature for clam.exe as an .hdb line.
//! Every difference must be a row of `EXPECTATIONS`, with its reason, and every row must hold.
//!
//! Peers: Debian `clamav` (clamscan, run only with the database file the test writes, so it never
//! needs or fetches definitions), `clamav-testfiles`, and `7zip` (7z archives are built with it).
//! Containers and messages are built by `fixtures/av_samples.py`.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use portcullis_e2e::cli::portcullis;
use portcullis_e2e::process::{run_bounded, tail};
use portcullis_e2e::smtp::simple_message;
use portcullis_e2e::{Daemon, GatewayConfig, Sink, SmtpClient, wait_for};

const WAIT: Duration = Duration::from_secs(30);

/// Where Debian's `clamav-testfiles` puts ClamAV's test files.
const TESTFILES: &str = "/usr/share/clamav-testfiles";

/// The signature name clamscan and we must both report for every copy of clam.exe.
const TEST_SIGNATURE: &str = "ClamAV-Test-File";

/// The EICAR test file (68 bytes), the built-in signature every gateway has.
const EICAR: &str = r"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*";

/// The wrappers `av_samples.py corpus` puts around every test file: directory and file suffix.
const VARIANTS: &[(&str, &str)] = &[
    ("plain", ""),
    ("zip", ".zip"),
    ("7z", ".7z"),
    ("tar", ".tar"),
    ("gz", ".gz"),
    ("bz2", ".bz2"),
    ("xz", ".xz"),
    // 7z > xz > tar > zip > file.
    ("nested", ".zip.tar.xz.7z"),
    // A text part and the file as a base64 attachment.
    ("mail", ".eml"),
    // The file in a zip attached to a message.
    ("mail-zip", ".eml"),
    // A forwarded message (message/rfc822) with the file in an attached .tar.gz.
    ("mail-forwarded", ".eml"),
];

/// Every variant.
const ALL: &[&str] = &[
    "plain",
    "zip",
    "7z",
    "tar",
    "gz",
    "bz2",
    "xz",
    "nested",
    "mail",
    "mail-zip",
    "mail-forwarded",
];

/// Every variant except the file itself.
const WRAPPED: &[&str] = &[
    "zip",
    "7z",
    "tar",
    "gz",
    "bz2",
    "xz",
    "nested",
    "mail",
    "mail-zip",
    "mail-forwarded",
];

/// One documented difference: in these variants of this test file, the result differs from
/// "clamscan finds it and so do we".
struct Expectation {
    file: &'static str,
    variants: &'static [&'static str],
    clamscan_finds: bool,
    we_find: bool,
    why: &'static str,
}

/// A file clamscan detects and we do not.
const fn gap(
    file: &'static str,
    variants: &'static [&'static str],
    why: &'static str,
) -> Expectation {
    Expectation {
        file,
        variants,
        clamscan_finds: true,
        we_find: false,
        why,
    }
}

/// The expectation table: every test file and variant whose outcome is not "both detect".
/// Everything not listed must be detected by both. A row that stops holding (a regression, or
/// an improvement such as a new unpacker) fails the test until the table is updated.
const EXPECTATIONS: &[Expectation] = &[
    // Packed executables: ClamAV unpacks or emulates them in memory; we hash and match the bytes
    // as they are (no unpackers, no emulator). Installers (InstallShield, NSIS) are opened.
    gap("clam-aspack.exe", ALL, "packed PE (ASPack): no unpacker"),
    gap("clam-fsg.exe", ALL, "packed PE (FSG): no unpacker"),
    gap("clam-mew.exe", ALL, "packed PE (MEW): no unpacker"),
    gap("clam-pespin.exe", ALL, "packed PE (PESpin): no unpacker"),
    gap("clam-petite.exe", ALL, "packed PE (Petite): no unpacker"),
    gap("clam-upack.exe", ALL, "packed PE (Upack): no unpacker"),
    gap("clam-upx.exe", ALL, "packed PE (UPX): no unpacker"),
    gap("clam-wwpack.exe", ALL, "packed PE (WWPack32): no unpacker"),
    gap(
        "clam-yc.exe",
        ALL,
        "packed PE (yoda's crypter over UPX): no unpacker",
    ),
    gap(
        "clam.ea05.exe",
        ALL,
        "AutoIt v3 (EA05) compiled script, UPX-packed: no AutoIt extractor",
    ),
    gap(
        "clam.ea06.exe",
        ALL,
        "AutoIt v3 (EA06) compiled script, UPX-packed: no AutoIt extractor",
    ),
    // Nine tgz inside each other: 18 containers (gzip, tar), with copies of clam.exe at several
    // levels. ClamAV counts the scanned file itself as a level, so at the same number (17, its
    // default --max-recursion and our scan.limits.max_depth) it opens one container fewer than
    // we do: one wrapper more and clamscan stops short, two or more and both do.
    Expectation {
        file: "clam_cache_emax.tgz",
        variants: &["zip", "7z", "tar", "gz", "bz2", "xz", "mail", "mail-zip"],
        clamscan_finds: false,
        we_find: true,
        why: "one container level deeper than clamscan's --max-recursion = 17 reaches",
    },
    Expectation {
        file: "clam_cache_emax.tgz",
        variants: &["nested", "mail-forwarded"],
        clamscan_finds: false,
        we_find: false,
        why: "deeper than both scan.limits.max_depth = 17 and clamscan's --max-recursion = 17",
    },
];

/// What one scanner printed for one file.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Found(String),
    Clean,
    Error(String),
}

/// Parses clamscan-style lines (`PATH: NAME FOUND`, `PATH: OK`, `PATH: REASON ERROR`) into
/// outcomes keyed by the path relative to `root`.
fn parse_scan_lines(output: &str, root: &Path) -> BTreeMap<String, Outcome> {
    let prefix = format!("{}/", root.display());
    output
        .lines()
        .filter_map(|line| {
            let (path, result) = line.rsplit_once(": ")?;
            let path = path.strip_prefix(&prefix)?.to_string();
            let outcome = if let Some(name) = result.strip_suffix(" FOUND") {
                // clamscan marks names from databases it does not know as its own.
                Outcome::Found(name.trim_end_matches(".UNOFFICIAL").to_string())
            } else if result == "OK" {
                Outcome::Clean
            } else {
                Outcome::Error(result.to_string())
            };
            Some((path, outcome))
        })
        .collect()
}

/// Panics naming the Debian package to install unless one of `programs` is on PATH.
fn require(programs: &[&str], package: &str) {
    let on_path = |program: &str| {
        std::env::var_os("PATH").is_some_and(|paths| {
            std::env::split_paths(&paths).any(|dir| dir.join(program).is_file())
        })
    };
    assert!(
        programs.iter().any(|p| on_path(p)),
        "{} not found: apt-get install {package} (tests/run installs the test peers)",
        programs.join(" or ")
    );
}

/// Runs `fixtures/av_samples.py ARGS…` and panics with its output if it fails.
fn av_samples(args: &[&str]) {
    let run = run_bounded(
        Command::new(portcullis_e2e::python())
            .arg(portcullis_e2e::fixture("av_samples.py"))
            .args(args),
        Duration::from_secs(300),
    );
    assert_eq!(
        run.status,
        Some(0),
        "av_samples.py {} failed:\n{}\n{}",
        args.join(" "),
        run.stdout,
        run.stderr
    );
}

#[test]
fn every_test_file_clamscan_detects_we_detect_in_every_wrapper_except_the_documented_gaps() {
    require(&["clamscan"], "clamav");
    // 7zz from Debian's 7zip, or 7z / 7za from p7zip-full.
    require(&["7zz", "7z", "7za"], "7zip");
    assert!(
        Path::new(TESTFILES).join("clam.exe").is_file(),
        "{TESTFILES}/clam.exe not found: apt-get install clamav-testfiles"
    );
    let dir = tempfile::Builder::new()
        .prefix("portcullis-av-parity-")
        .tempdir()
        .expect("tempdir");
    let corpus = dir.path().join("corpus");
    let hdb = dir.path().join("clamav-test.hdb");
    av_samples(&[
        "corpus",
        "--testfiles",
        TESTFILES,
        "--out",
        &corpus.display().to_string(),
        "--hdb",
        &hdb.display().to_string(),
    ]);
    let signature = std::fs::read_to_string(&hdb).expect("read the .hdb");
    eprintln!("signature database: {}", signature.trim());

    // The same database for both; the archive and mail flags spelt out (they are clamscan's
    // defaults) so the comparison does not depend on a clamd.conf or a future default.
    let clamscan = run_bounded(
        Command::new("clamscan")
            .args([
                "--no-summary",
                "--recursive",
                "--scan-archive=yes",
                "--scan-mail=yes",
            ])
            .args(["--max-recursion=17", "--max-files=10000", "--database"])
            .arg(&hdb)
            .arg(&corpus),
        Duration::from_secs(600),
    );
    assert_eq!(
        clamscan.status,
        Some(1),
        "clamscan should find the test signature (exit 1):\n{}\n{}",
        tail(&clamscan.stdout, 20),
        clamscan.stderr
    );
    let hdb_arg = hdb.display().to_string();
    let corpus_arg = corpus.display().to_string();
    let ours = portcullis(&["scan", "-r", "--defs", &hdb_arg, &corpus_arg]);
    assert_eq!(
        ours.status,
        Some(1),
        "portcullis scan should find the test signature (exit 1):\n{ours}"
    );

    let theirs = parse_scan_lines(&clamscan.stdout, &corpus);
    let ours = parse_scan_lines(&ours.stdout, &corpus);
    let mut names: Vec<String> = std::fs::read_dir(TESTFILES)
        .expect("read testfiles")
        .flatten()
        .filter(|e| e.path().is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();

    let mut surprises = Vec::new();
    let mut gaps = Vec::new();
    for name in &names {
        for (variant, suffix) in VARIANTS {
            let path = format!("{variant}/{name}{suffix}");
            let expected = EXPECTATIONS
                .iter()
                .find(|e| e.file == name && e.variants.contains(variant));
            let (clamscan_should, we_should) =
                expected.map_or((true, true), |e| (e.clamscan_finds, e.we_find));
            let clamscan_did = matches!(theirs.get(&path), Some(Outcome::Found(_)));
            let ours_outcome = ours.get(&path);
            let we_did = matches!(ours_outcome, Some(Outcome::Found(_)));
            for (scanner, outcome) in [
                ("clamscan", theirs.get(&path)),
                ("portcullis", ours_outcome),
            ] {
                match outcome {
                    Some(Outcome::Found(found)) if found != TEST_SIGNATURE => surprises.push(
                        format!("{path}: {scanner} found {found}, not {TEST_SIGNATURE}"),
                    ),
                    Some(Outcome::Error(reason)) => {
                        surprises.push(format!("{path}: {scanner} ERROR {reason}"))
                    }
                    None => surprises.push(format!("{path}: no line from {scanner}")),
                    _ => {}
                }
            }
            if (clamscan_did, we_did) != (clamscan_should, we_should) {
                surprises.push(format!(
                    "{path}: clamscan {}, portcullis {} (expected clamscan {}, portcullis {}{})",
                    verb(clamscan_did),
                    verb(we_did),
                    verb(clamscan_should),
                    verb(we_should),
                    expected.map_or(String::new(), |e| format!(": {}", e.why)),
                ));
            }
            if clamscan_did && !we_did {
                gaps.push(path);
            }
        }
    }
    // Rows that no longer match anything are stale and must go.
    for e in EXPECTATIONS {
        assert!(
            names.iter().any(|n| n == e.file),
            "expectation for {} names a file {TESTFILES} no longer has",
            e.file
        );
    }
    eprintln!(
        "{} files x {} variants: clamscan detects {}, portcullis {}; {} documented gaps",
        names.len(),
        VARIANTS.len(),
        theirs
            .values()
            .filter(|o| matches!(o, Outcome::Found(_)))
            .count(),
        ours.values()
            .filter(|o| matches!(o, Outcome::Found(_)))
            .count(),
        gaps.len()
    );
    assert!(
        surprises.is_empty(),
        "{} result(s) differ from the expectation table (update EXPECTATIONS with the reason if \
         this is an intended change):\n{}",
        surprises.len(),
        surprises.join("\n")
    );
}

fn verb(found: bool) -> &'static str {
    if found { "detects" } else { "misses" }
}

/// EICAR and messages carrying it, written into a temporary directory.
struct Samples {
    dir: tempfile::TempDir,
}

impl Samples {
    fn new() -> Samples {
        let dir = tempfile::Builder::new()
            .prefix("portcullis-av-samples-")
            .tempdir()
            .expect("tempdir");
        std::fs::write(dir.path().join("eicar.txt"), EICAR).expect("write eicar");
        std::fs::write(
            dir.path().join("report.txt"),
            "Quarterly figures, nothing to see here.\r\n",
        )
        .expect("write clean attachment");
        Samples { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    /// A message with the text part "The clean text part." and the given attachments
    /// (`PATH[=NAME]` as `av_samples.py message --attach` takes them).
    fn message(&self, subject: &str, attachments: &[String]) -> Vec<u8> {
        let out = self.path(&format!("{}.eml", subject.replace(' ', "-")));
        let mut args = vec!["message", "--out", &out, "--subject", subject];
        for a in attachments {
            args.extend_from_slice(&["--attach", a]);
        }
        av_samples(&args);
        std::fs::read(&out).expect("read message")
    }

    /// eicar.txt attached as it is.
    fn eicar_attachment(&self) -> String {
        self.path("eicar.txt")
    }

    /// A zip holding eicar.txt, attached as invoice.zip.
    fn eicar_zip(&self) -> String {
        let zip = self.path("invoice.zip");
        av_samples(&["zip", &zip, &self.eicar_attachment()]);
        zip
    }

    /// A clean text attachment.
    fn clean_attachment(&self) -> String {
        self.path("report.txt")
    }
}

/// Sends `message` from alice@origin.test to bob@remote.test; the reply to the end of data.
fn send(gateway: &Daemon, message: &[u8]) -> portcullis_e2e::Reply {
    let mut client = SmtpClient::greeted(gateway.smtp_port());
    let reply = client
        .send_message("alice@origin.test", &["bob@remote.test"], message)
        .expect("SMTP transaction");
    client.quit();
    reply
}

/// Sends a clean message and waits for it at the sink: everything accepted before it has had
/// its chance to arrive, so "nothing else arrived" is a fact rather than a guess.
fn send_marker_and_wait(gateway: &Daemon, sink: &Sink) -> usize {
    let marker = simple_message("alice@origin.test", "bob@remote.test", "marker", "clean\n");
    let reply = send(gateway, &marker);
    assert_eq!(reply.code, 250, "the clean marker was refused: {reply}");
    sink.wait_for_message("the marker message", WAIT, |m| {
        m.header("Subject").as_deref() == Some("marker")
    });
    gateway.wait_queue_empty(WAIT);
    sink.messages().len()
}

/// True if `text` carries EICAR, as it is or base64-encoded (as an attachment would).
fn carries_eicar(text: &str) -> bool {
    // The first 48 bytes of EICAR in base64, aligned at the start of the attachment.
    text.contains("EICAR-STANDARD-ANTIVIRUS-TEST-FILE")
        || text.contains("WDVPIVAlQEFQWzRcUFpYNTQoUF4pN0NDKTd9JEVJQ0FS")
}

#[test]
fn eicar_attachment_plain_or_zipped_is_refused_554_5_7_0_at_data_and_nothing_is_delivered() {
    let samples = Samples::new();
    let sink = Sink::start();
    let gateway = Daemon::start(GatewayConfig::new().relay_to(&sink));
    for (subject, attachment) in [
        ("eicar plain", samples.eicar_attachment()),
        ("eicar zipped", samples.eicar_zip()),
    ] {
        let reply = send(&gateway, &samples.message(subject, &[attachment]));
        assert_eq!(reply.code, 554, "{subject}: {reply}");
        assert_eq!(reply.enhanced(), Some("5.7.0"), "{subject}: {reply}");
        assert!(
            reply.text().contains("Eicar-Test-Signature"),
            "{subject}: the refusal should name the virus: {reply}"
        );
    }
    assert_eq!(
        send_marker_and_wait(&gateway, &sink),
        1,
        "only the clean marker may reach the sink"
    );
}

#[test]
fn with_action_strip_the_clean_parts_arrive_and_the_infected_attachment_becomes_a_note() {
    let samples = Samples::new();
    let sink = Sink::start();
    let gateway = Daemon::start(
        GatewayConfig::new()
            .relay_to(&sink)
            .set("antivirus.action", "strip"),
    );
    for (subject, infected) in [
        ("strip plain", samples.eicar_attachment()),
        ("strip zipped", samples.eicar_zip()),
    ] {
        let message = samples.message(subject, &[samples.clean_attachment(), infected]);
        let reply = send(&gateway, &message);
        assert_eq!(reply.code, 250, "{subject}: {reply}");
        let delivered = sink.wait_for_message(subject, WAIT, |m| {
            m.header("Subject").as_deref() == Some(subject)
        });
        let text = delivered.text();
        assert!(
            text.contains("The clean text part."),
            "{subject}: the text part is missing:\n{text}"
        );
        assert!(
            text.contains("UXVhcnRlcmx5IGZpZ3VyZXM") || text.contains("Quarterly figures"),
            "{subject}: the clean attachment is missing:\n{text}"
        );
        assert!(
            !carries_eicar(&text),
            "{subject}: EICAR was delivered:\n{text}"
        );
        assert!(
            text.contains("Portcullis removed the attachment")
                && text.contains("Eicar-Test-Signature"),
            "{subject}: no note naming the virus in place of the attachment:\n{text}"
        );
    }
}

#[test]
fn the_note_in_place_of_a_stripped_attachment_is_the_configured_one() {
    let samples = Samples::new();
    let sink = Sink::start();
    let gateway = Daemon::start(
        GatewayConfig::new()
            .relay_to(&sink)
            .set("antivirus.action", "strip")
            .set(
                "scan.removal_note",
                "ATTACHMENT %FILENAME% WITHHELD %REASONS%",
            ),
    );
    let subject = "custom note";
    let message = samples.message(subject, &[samples.clean_attachment(), samples.eicar_zip()]);
    let reply = send(&gateway, &message);
    assert_eq!(reply.code, 250, "{reply}");
    let delivered = sink.wait_for_message(subject, WAIT, |m| {
        m.header("Subject").as_deref() == Some(subject)
    });
    let text = delivered.text();
    assert!(
        text.contains("ATTACHMENT invoice.zip WITHHELD - ")
            && text.contains("Eicar-Test-Signature"),
        "the configured note is missing:\n{text}"
    );
    assert!(
        !text.contains("Portcullis removed the attachment"),
        "{text}"
    );
    assert!(!carries_eicar(&text), "EICAR was delivered:\n{text}");
}

#[test]
fn with_action_quarantine_the_message_is_listed_and_release_delivers_it() {
    let samples = Samples::new();
    let sink = Sink::start();
    let gateway = Daemon::start(
        GatewayConfig::new()
            .relay_to(&sink)
            .set("antivirus.action", "quarantine"),
    );
    let subject = "quarantine me";
    let reply = send(&gateway, &samples.message(subject, &[samples.eicar_zip()]));
    assert_eq!(reply.code, 250, "{reply}");

    let record = wait_for("the message in quarantine list --json", WAIT, || {
        let listed = gateway.cli_raw(&["quarantine", "list", "--json"]);
        listed.success();
        listed
            .json()
            .as_array()?
            .iter()
            .find(|r| r["subject"].as_str() == Some(subject))
            .cloned()
    });
    let id = record["id"].as_str().expect("quarantine id").to_string();
    let reasons = record["verdict"]["reasons"].to_string();
    assert!(
        reasons.contains("Eicar-Test-Signature"),
        "the quarantine record should name the virus: {record}"
    );
    let listed = gateway.cli_raw(&["quarantine", "list"]);
    assert!(
        listed.success().stdout.contains(&id),
        "the plain listing should show {id}:\n{listed}"
    );
    assert_eq!(
        send_marker_and_wait(&gateway, &sink),
        1,
        "a quarantined message must not be delivered"
    );

    gateway.cli_raw(&["quarantine", "release", &id]).success();
    let released = sink.wait_for_message("the released message", WAIT, |m| {
        m.header("Subject").as_deref() == Some(subject)
    });
    assert_eq!(released.rcpt_to, ["bob@remote.test"]);
    let after = gateway.cli_raw(&["quarantine", "list", "--json"]);
    assert!(
        !after.success().stdout.contains(&id),
        "a released message should leave the quarantine:\n{after}"
    );
}

#[test]
fn the_third_infected_message_within_the_window_raises_one_outbreak_alert_mailed_to_the_admin() {
    let samples = Samples::new();
    let sink = Sink::start();
    let gateway = Daemon::start(
        GatewayConfig::new()
            .relay_to(&sink)
            .set("antivirus.outbreak_messages", 3i64)
            .set("antivirus.outbreak_window", "10m")
            .set("alerts.to", vec!["admin@remote.test"]),
    );
    let outbreaks = || {
        let log = gateway.cli_raw(&["alerts", "--json", "--limit", "100"]);
        log.stdout.matches("virus outbreak").count()
    };
    for n in 1..=4 {
        let message = samples.message(&format!("worm {n}"), &[samples.eicar_attachment()]);
        assert_eq!(send(&gateway, &message).code, 554);
        if n == 2 {
            assert_eq!(outbreaks(), 0, "two infected messages are no outbreak");
        }
    }
    let alert = sink.wait_for_message("the outbreak alert mail", WAIT, |m| {
        m.text().contains("virus outbreak")
    });
    assert!(
        alert.text().contains("3 infected messages within 10m")
            && alert.text().contains("Eicar-Test-Signature (3)"),
        "{}",
        alert.text()
    );
    assert!(alert.rcpt_to.iter().any(|r| r == "admin@remote.test"));
    send_marker_and_wait(&gateway, &sink);
    assert_eq!(outbreaks(), 1, "one alert per window, not one per message");
}
