//! The end-to-end scenarios. Each is a function over a [`Bench`] that returns a pass with a
//! one-line summary (and timings), or a failure saying what did not happen; its serial and LAN
//! transcripts are in `OUT/<scenario>/`. They run in a fixed order on one disk: the wizard on
//! the fresh image first, then the others on the configured box.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use crate::bench::{Bench, CONFIG_ON_DATA, boot_marker};
use crate::disk::merge_toml;
use std::net::Ipv4Addr;

use crate::lan::{SessionReport, VirtualLan};
use crate::rig::PowerCutRig;
use crate::serial::Pattern;
use crate::smtp::client::{OutgoingMessage, Stage, Submission};

/// The scenarios, in the order a run executes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scenario {
    /// (2) The first-boot serial wizard, end to end, on the fresh image.
    Wizard,
    /// (1) Power on until the SMTP banner over the LAN, timed.
    Boot,
    /// (3) Mail from the internet is delivered to the internal server.
    Delivery,
    /// (4) A relay attempt is refused with `554 5.7.1`.
    Relay,
    /// (6) Power cut in the middle of a load: every acknowledged message is delivered.
    PowerCut,
    /// (5) A hung gateway is reset by the hardware watchdog and mail resumes.
    Watchdog,
}

impl Scenario {
    /// Every scenario, in run order.
    pub const ALL: [Scenario; 6] = [
        Scenario::Wizard,
        Scenario::Boot,
        Scenario::Delivery,
        Scenario::Relay,
        Scenario::PowerCut,
        Scenario::Watchdog,
    ];

    /// The name used on the command line and for the transcript directory.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Wizard => "wizard",
            Scenario::Boot => "boot",
            Scenario::Delivery => "delivery",
            Scenario::Relay => "relay",
            Scenario::PowerCut => "power-cut",
            Scenario::Watchdog => "watchdog",
        }
    }
}

impl std::str::FromStr for Scenario {
    type Err = String;
    fn from_str(s: &str) -> Result<Scenario, String> {
        Scenario::ALL
            .into_iter()
            .find(|x| x.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Scenario::ALL.iter().map(|x| x.name()).collect();
                format!("unknown scenario {s:?} (one of: {})", names.join(", "))
            })
    }
}

/// What a scenario found.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Which scenario.
    pub scenario: Scenario,
    /// Whether it passed.
    pub passed: bool,
    /// How long it ran.
    pub took: Duration,
    /// One line: the measurement (pass) or what went wrong (fail).
    pub summary: String,
    /// Further lines for the scenario's `result.txt`.
    pub details: Vec<String>,
}

impl Outcome {
    /// `PASS boot  93.2s  box answered 220 …`, the line `hil run` prints.
    pub fn line(&self) -> String {
        format!(
            "{} {:<10} {:>7.1}s  {}",
            if self.passed { "PASS" } else { "FAIL" },
            self.scenario.name(),
            self.took.as_secs_f64(),
            self.summary
        )
    }
}

/// A scenario's findings while it runs: details accumulate, the summary comes at the end.
#[derive(Default)]
struct Notes(Vec<String>);

impl Notes {
    fn add(&mut self, line: impl Into<String>) {
        let line = line.into();
        tracing::info!(note = %line, "scenario");
        self.0.push(line);
    }
}

type Verdict = Result<String, String>;

/// Runs `selected` (in run order) on the bench. `configured`: the box has been through the
/// wizard already (a real box set up by hand, or a re-run), so the wizard is not run unless
/// selected. Prints each outcome line as it finishes.
pub fn run(bench: &mut Bench, selected: &[Scenario], configured: bool) -> Vec<Outcome> {
    let mut selected: Vec<Scenario> = selected.to_vec();
    selected.sort();
    selected.dedup();
    if !configured && !selected.contains(&Scenario::Wizard) {
        // The others need a configured box; the wizard is how it gets configured.
        selected.insert(0, Scenario::Wizard);
    }
    let tag = run_tag();
    let mut outcomes = Vec::new();
    // Why the remaining scenarios cannot run, once that is so (each would only wait out the boot
    // timeout on a box that does not answer).
    let mut halted: Option<String> = None;
    for scenario in selected {
        let start = Instant::now();
        let mut notes = Notes::default();
        let verdict = if let Some(why) = &halted {
            Err(format!("not run: {why}"))
        } else {
            match bench.transcripts_for(scenario.name()) {
                Err(e) => Err(e.to_string()),
                Ok(_) => match scenario {
                    Scenario::Wizard => wizard(bench, &mut notes),
                    Scenario::Boot => boot(bench, &mut notes),
                    Scenario::Delivery => delivery(bench, &mut notes, &tag),
                    Scenario::Relay => relay(bench, &mut notes, &tag),
                    Scenario::PowerCut => power_cut(bench, &mut notes, &tag),
                    Scenario::Watchdog => watchdog(bench, &mut notes, &tag),
                },
            }
        };
        let (passed, summary) = match verdict {
            Ok(s) => (true, s),
            Err(s) => (false, s),
        };
        if !passed && halted.is_none() {
            halted = unusable_box(bench, scenario);
        }
        let outcome = Outcome {
            scenario,
            passed,
            took: start.elapsed(),
            summary,
            details: notes.0,
        };
        println!("{}", outcome.line());
        let mut text = format!("{}\n", outcome.line());
        for d in &outcome.details {
            let _ = writeln!(text, "  {d}");
        }
        let dir = bench.out.join(scenario.name());
        let _ = std::fs::create_dir_all(&dir);
        let _ = std::fs::write(dir.join("result.txt"), text);
        outcomes.push(outcome);
    }
    outcomes
}

/// After `failed` failed: why the box cannot serve the remaining scenarios, if it cannot. A
/// failed wizard leaves it unconfigured; otherwise a box that is on but does not answer SMTP
/// within a short grace is not going to.
fn unusable_box(bench: &mut Bench, failed: Scenario) -> Option<String> {
    if failed == Scenario::Wizard {
        return Some("the wizard failed, so the box is not set up".into());
    }
    if bench.power.is_on() && bench.wait_smtp_ready(Duration::from_secs(30)).is_err() {
        return Some(format!(
            "after {} failed the box no longer answers SMTP",
            failed.name()
        ));
    }
    None
}

/// A short tag that makes this run's message ids unique (re-runs reuse a box's queue).
fn run_tag() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!("{:x}", t.as_secs() & 0xff_ffff)
}

/// Powers the box on if needed and waits for SMTP; the time it took from now.
fn ensure_ready(bench: &mut Bench, notes: &mut Notes) -> Result<Duration, String> {
    let was_on = bench.power.is_on();
    bench.ensure_on().map_err(|e| e.to_string())?;
    if !was_on {
        notes.add("powered the box on");
    }
    let (took, _) = bench.wait_smtp_ready(bench.rig.timeouts.boot)?;
    Ok(took)
}

/// (2) The first-boot wizard: answer every prompt with the contract's values over the serial
/// line, see `Setup complete.` and the menu, see the box answer SMTP at its new address, then
/// shut it down and check what the wizard wrote (and apply the rig's `box_config`).
fn wizard(bench: &mut Bench, notes: &mut Notes) -> Verdict {
    if bench.power.is_on() {
        return Err(
            "the box is already on: the wizard needs a first boot from a fresh disk".into(),
        );
    }
    let t0 = Instant::now();
    bench.power.on().map_err(|e| e.to_string())?;
    let timeouts = bench.rig.timeouts.clone();
    bench
        .serial
        .expect(
            &Pattern::literal("Portcullis first-boot setup"),
            timeouts.boot,
        )
        .map_err(|e| e.to_string())?;
    let to_wizard = t0.elapsed();
    notes.add(format!(
        "wizard on the serial console {:.1}s after power on",
        to_wizard.as_secs_f64()
    ));

    let table = bench.rig.wizard.table();
    let mut patterns: Vec<Pattern> = table
        .iter()
        .map(|(label, _)| Pattern::regex(&format!(r"(?m)^{label}[^\r\n]*?: ")))
        .collect();
    let done_at = patterns.len();
    patterns.push(Pattern::literal("Setup complete."));
    patterns.push(Pattern::regex(r"(?m)^! ([^\r\n]*)"));
    let secret = &bench.rig.wizard.admin_password;
    let mut answered = 0;
    let mut last_prompt = String::new();
    loop {
        let (i, m) = bench
            .serial
            .expect_any(&patterns, timeouts.prompt)
            .map_err(|e| format!("after {answered} answers (last prompt {last_prompt:?}): {e}"))?;
        if i == done_at {
            break;
        }
        if i == done_at + 1 {
            return Err(format!(
                "the wizard refused the answer to {last_prompt:?}: {}",
                m.groups[0].clone().unwrap_or_default()
            ));
        }
        answered += 1;
        if answered > 40 {
            return Err("more than 40 prompts: the wizard seems to loop".into());
        }
        let answer = &table[i].1;
        last_prompt = m.text.trim_end().to_string();
        let shown = if !secret.is_empty() && answer == secret {
            "(the admin password)"
        } else {
            answer.as_str()
        };
        notes.add(format!("{last_prompt} {shown}"));
        bench.serial.send_line(answer).map_err(|e| e.to_string())?;
    }
    let setup_done = t0.elapsed();
    notes.add(format!(
        "Setup complete. after {answered} answers, {:.1}s after power on",
        setup_done.as_secs_f64()
    ));
    bench
        .serial
        .expect(&Pattern::literal("Choose [1-9]: "), timeouts.prompt)
        .map_err(|e| format!("no menu after the setup: {e}"))?;
    notes.add("the console menu is shown");
    let (ready, banner) = bench.wait_smtp_ready(timeouts.boot)?;
    notes.add(format!(
        "SMTP ready at {} {:.1}s after the setup: {banner}",
        bench.box_ip(),
        ready.as_secs_f64()
    ));

    if bench.disk.is_none() {
        return Ok(format!(
            "{answered} prompts answered; SMTP ready {:.0}s after power on",
            t0.elapsed().as_secs_f64()
        ));
    }
    bench.shut_down()?;
    notes.add("shut down with the power button");
    let fs = bench.data_partition()?;
    let read = |path: &str| {
        fs.read(path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .map_err(|e| e.to_string())
    };
    let config = read(CONFIG_ON_DATA)?;
    check_wizard_config(&config, notes)?;
    let hostname = read("/system/hostname")?;
    if hostname.trim() != "gw1" {
        return Err(format!("system/hostname is {:?}, not gw1", hostname.trim()));
    }
    read("/system/setup-complete")
        .map_err(|_| "system/setup-complete was not written".to_string())?;
    notes.add("system/hostname = gw1, system/setup-complete exists");
    if !bench.rig.box_config.is_empty() {
        let merged = merge_toml(&config, &bench.rig.box_config)?;
        fs.write(CONFIG_ON_DATA, merged.as_bytes(), 0o600)
            .map_err(|e| e.to_string())?;
        notes.add(format!(
            "test settings merged into {CONFIG_ON_DATA}: {}",
            bench.rig.box_config.to_string().replace('\n', " ")
        ));
    }
    Ok(format!(
        "{answered} prompts answered; setup complete {:.0}s and SMTP ready {:.0}s after power on; config checked",
        setup_done.as_secs_f64(),
        (setup_done + ready).as_secs_f64()
    ))
}

/// The gateway config the wizard wrote holds the contract's answers.
fn check_wizard_config(config: &str, notes: &mut Notes) -> Result<(), String> {
    let c: toml::Table =
        toml::from_str(config).map_err(|e| format!("the gateway config is not TOML: {e}"))?;
    let strings = |section: &str, key: &str| -> Vec<String> {
        c.get(section)
            .and_then(|s| s.get(key))
            .and_then(|v| v.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut problems = Vec::new();
    if !strings("smtp", "listen").iter().any(|l| l == "0.0.0.0:25") {
        problems.push("smtp.listen lacks 0.0.0.0:25".to_string());
    }
    if strings("relay", "local_domains") != ["example.org"] {
        problems.push(format!(
            "relay.local_domains is {:?}",
            strings("relay", "local_domains")
        ));
    }
    if strings("relay", "relay_networks") != ["192.0.2.25/32"] {
        problems.push(format!(
            "relay.relay_networks is {:?}",
            strings("relay", "relay_networks")
        ));
    }
    if !strings("dns", "servers")
        .iter()
        .any(|s| s.starts_with("192.0.2.1"))
    {
        problems.push(format!("dns.servers is {:?}", strings("dns", "servers")));
    }
    let watchdog = c
        .get("watchdog")
        .and_then(|w| w.get("device"))
        .and_then(|d| d.as_str());
    if watchdog != Some("/dev/watchdog0") {
        problems.push(format!(
            "watchdog.device is {watchdog:?}, not /dev/watchdog0"
        ));
    }
    if !config.contains("192.0.2.25") {
        problems.push("the internal mail server 192.0.2.25 is not routed to".to_string());
    }
    if problems.is_empty() {
        notes.add("the gateway config holds the answers (listen, local domains, relay networks, DNS, route, watchdog device)");
        Ok(())
    } else {
        Err(format!(
            "the gateway config the wizard wrote is wrong: {}",
            problems.join("; ")
        ))
    }
}

/// (1) Boot to SMTP ready: from power on until a `220` banner is read from the box's port 25
/// over the LAN; also when the kernel started (the serial line's first `Linux version`).
fn boot(bench: &mut Bench, notes: &mut Notes) -> Verdict {
    if bench.power.is_on() {
        bench.shut_down()?;
        notes.add("shut the box down first, to time a boot from power off");
    }
    bench.serial.skip_pending();
    let t0 = Instant::now();
    bench.power.on().map_err(|e| e.to_string())?;
    let kernel = bench
        .serial
        .expect(&boot_marker(), bench.rig.timeouts.boot)
        .map(|_| t0.elapsed())
        .map_err(|e| format!("the kernel did not start: {e}"))?;
    notes.add(format!(
        "kernel started {:.1}s after power on (firmware and boot loader)",
        kernel.as_secs_f64()
    ));
    let (ready, banner) =
        bench.wait_smtp_ready(bench.rig.timeouts.boot.saturating_sub(t0.elapsed()))?;
    let total = kernel + ready;
    notes.add(format!("banner: {banner}"));
    Ok(format!(
        "SMTP ready {:.1}s after power on (kernel at {:.1}s) [{}]",
        total.as_secs_f64(),
        kernel.as_secs_f64(),
        bench.arch.name()
    ))
}

/// Message ids with a prefix, e.g. `delivery-3f2a1c-2`.
fn id(prefix: &str, tag: &str, n: usize) -> String {
    format!("{prefix}-{tag}-{n}")
}

/// (3) Mail from two internet senders to local recipients reaches the internal mail server
/// with its envelope, its body byte for byte, and a Received header naming the sender's
/// address and the box.
fn delivery(bench: &mut Bench, notes: &mut Notes, tag: &str) -> Verdict {
    ensure_ready(bench, notes)?;
    let body = "Hello from the HIL harness.\r\n.A line that starts with a dot.\r\n\r\nBye.\r\n";
    let plan: Vec<(usize, OutgoingMessage)> = (0..4)
        .map(|n| {
            let sender = n % 2;
            let to = format!("user{}@example.org", n + 1);
            let subject = format!("delivery test {n}");
            (
                sender,
                OutgoingMessage::text(
                    &id("delivery", tag, n),
                    &format!("someone@sender{}.example.net", sender + 1),
                    &to,
                    &subject,
                    body,
                ),
            )
        })
        .collect();
    let pending: Vec<_> = [0usize, 1]
        .iter()
        .map(|&s| {
            let msgs: Vec<OutgoingMessage> = plan
                .iter()
                .filter(|(x, _)| *x == s)
                .map(|(_, m)| m.clone())
                .collect();
            bench.lan.send(s, (bench.box_ip(), 25), msgs)
        })
        .collect();
    let mut acknowledged = BTreeSet::new();
    for p in pending {
        let report = p
            .wait(bench.rig.timeouts.session)
            .ok_or("a sender's session did not end in time")?;
        for (mid, outcome) in &report.outcomes {
            match outcome {
                Submission::Acknowledged(r) => {
                    notes.add(format!("{mid} from {}: {r}", report.sender));
                    acknowledged.insert(mid.clone());
                }
                other => {
                    return Err(format!(
                        "{mid} from {} was not accepted: {other:?}",
                        report.sender
                    ));
                }
            }
        }
    }
    let t = Instant::now();
    let want: BTreeSet<String> = plan.iter().map(|(_, m)| m.id.clone()).collect();
    let (got, ok) = bench
        .lan
        .mailbox()
        .wait_until(bench.rig.timeouts.delivery, |m| {
            want.iter()
                .all(|w| m.iter().any(|d| d.message.hil_id().as_deref() == Some(w)))
        });
    if !ok {
        let missing: Vec<&String> = want
            .iter()
            .filter(|w| !got.iter().any(|d| d.message.hil_id().as_deref() == Some(w)))
            .collect();
        return Err(format!(
            "not delivered within {}s: {missing:?}",
            bench.rig.timeouts.delivery.as_secs()
        ));
    }
    let took = t.elapsed();
    for (sender, m) in &plan {
        let d = got
            .iter()
            .find(|d| d.message.hil_id().as_deref() == Some(&m.id))
            .expect("checked above");
        if d.server != "mail" {
            return Err(format!(
                "{} went to the {} server, not the internal one",
                m.id, d.server
            ));
        }
        if d.message.rcpt_to != m.rcpt_to || d.message.mail_from != m.mail_from {
            return Err(format!(
                "{}: envelope changed: from <{}> to {:?}, sent from <{}> to {:?}",
                m.id, d.message.mail_from, d.message.rcpt_to, m.mail_from, m.rcpt_to
            ));
        }
        if !d.message.data.ends_with(body.as_bytes()) {
            return Err(format!("{}: the body arrived changed", m.id));
        }
        let received = d.message.header("Received").unwrap_or_default();
        let sender_ip = bench.lan.plan().senders[*sender].to_string();
        if !received.contains(&format!("[{sender_ip}]")) || !received.contains("gw1") {
            return Err(format!(
                "{}: Received header {received:?} does not name [{sender_ip}] and gw1",
                m.id
            ));
        }
    }
    notes.add(format!(
        "all {} messages at the internal server; envelopes, bodies, Received headers checked",
        plan.len()
    ));
    Ok(format!(
        "{} messages from 2 senders delivered to 192.0.2.25 within {:.1}s of the last 250",
        plan.len(),
        took.as_secs_f64()
    ))
}

/// (4) A sender tries to relay to `example.net` through the box: refused at RCPT with
/// `554 5.7.1`, and nothing reaches the outside server. A local recipient in the same
/// session still works (the refusal is per recipient, not a blanket block).
fn relay(bench: &mut Bench, notes: &mut Notes, tag: &str) -> Verdict {
    ensure_ready(bench, notes)?;
    let relay_msg = OutgoingMessage::text(
        &id("relay", tag, 0),
        "spammer@sender3.example.net",
        "victim@example.net",
        "relay test",
        "Relay me.\r\n",
    );
    let local_msg = OutgoingMessage::text(
        &id("relay", tag, 1),
        "spammer@sender3.example.net",
        "user@example.org",
        "local after refusal",
        "Local.\r\n",
    );
    let report = bench
        .lan
        .send(
            2,
            (bench.box_ip(), 25),
            vec![relay_msg.clone(), local_msg.clone()],
        )
        .wait(bench.rig.timeouts.session)
        .ok_or("the session did not end in time")?;
    let outcome = |mid: &str| {
        report
            .outcomes
            .iter()
            .find(|(i, _)| i == mid)
            .map(|(_, o)| o.clone())
    };
    match outcome(&relay_msg.id) {
        Some(Submission::Refused {
            stage: Stage::Rcpt,
            reply,
        }) if reply.code == 554 && reply.first_line().starts_with("5.7.1") => {
            notes.add(format!(
                "RCPT TO:<victim@example.net> from {}: {reply}",
                report.sender
            ));
        }
        other => {
            return Err(format!(
                "the relay attempt was not refused with 554 5.7.1 at RCPT: {other:?}"
            ));
        }
    }
    match outcome(&local_msg.id) {
        Some(Submission::Acknowledged(r)) => {
            notes.add(format!("local recipient in the same session: {r}"))
        }
        other => {
            return Err(format!(
                "the local message after the refusal was not accepted: {other:?}"
            ));
        }
    }
    let (got, _) = bench
        .lan
        .mailbox()
        .wait_until(bench.rig.timeouts.delivery, |m| {
            m.iter()
                .any(|d| d.message.hil_id().as_deref() == Some(local_msg.id.as_str()))
        });
    if let Some(d) = got.iter().find(|d| d.server == "outside") {
        return Err(format!(
            "mail reached the outside server: {:?} to {:?}",
            d.message.hil_id(),
            d.message.rcpt_to
        ));
    }
    if got
        .iter()
        .any(|d| d.message.hil_id().as_deref() == Some(relay_msg.id.as_str()))
    {
        return Err("the refused message was delivered anyway".into());
    }
    notes.add("nothing reached the outside MX (192.0.2.26); the local message was delivered");
    Ok(format!(
        "relay to example.net from {} refused: 554 5.7.1",
        report.sender
    ))
}

/// Sends `messages` from `senders` senders, `per_session` per session, sessions of a sender
/// one after another; calls `tick` with the number acknowledged so far after every session
/// and stops starting sessions once it returns true. Returns every session's report.
fn send_load(
    lan: &VirtualLan,
    to: Ipv4Addr,
    messages: Vec<OutgoingMessage>,
    cfg: &PowerCutRig,
    mut stop: impl FnMut(usize) -> bool,
) -> Vec<SessionReport> {
    let (senders, per_session) = (cfg.senders, cfg.per_session);
    let mut queues: Vec<std::collections::VecDeque<Vec<OutgoingMessage>>> =
        vec![Default::default(); senders];
    for (n, chunk) in messages.chunks(per_session).enumerate() {
        queues[n % senders].push_back(chunk.to_vec());
    }
    let mut running: Vec<Option<crate::lan::PendingSession>> = (0..senders).map(|_| None).collect();
    let mut reports = Vec::new();
    let mut acked = 0usize;
    let mut stopped = false;
    loop {
        for s in 0..senders {
            if running[s].is_none()
                && !stopped
                && let Some(batch) = queues[s].pop_front()
            {
                running[s] = Some(lan.send(s, (to, 25), batch));
            }
            if let Some(p) = &running[s]
                && let Some(r) = p.wait(Duration::from_millis(10))
            {
                acked += r
                    .outcomes
                    .iter()
                    .filter(|(_, o)| o.is_acknowledged())
                    .count();
                reports.push(r);
                running[s] = None;
                if !stopped && stop(acked) {
                    stopped = true;
                }
            }
        }
        if running.iter().all(Option::is_none) && (stopped || queues.iter().all(|q| q.is_empty())) {
            return reports;
        }
    }
}

/// (6) Power cut under load: several senders submit a few hundred messages; the power is cut
/// (SIGKILL of QEMU) once a third are acknowledged, with sessions in flight; after power on,
/// every message that got `250` must reach the internal server. Duplicates are reported (the
/// gateway may deliver a message twice if the cut came between delivery and its record).
fn power_cut(bench: &mut Bench, notes: &mut Notes, tag: &str) -> Verdict {
    ensure_ready(bench, notes)?;
    let cfg = bench.rig.power_cut.clone();
    let messages: Vec<OutgoingMessage> = (0..cfg.messages)
        .map(|n| {
            let body = format!(
                "Load message {n}.\r\n{}\r\n",
                "x".repeat(200 + (n * 37) % 2000)
            );
            OutgoingMessage::text(
                &id("cut", tag, n),
                &format!("load@sender{}.example.net", n % cfg.senders + 1),
                &format!("user{}@example.org", n % 7),
                &format!("power cut load {n}"),
                &body,
            )
        })
        .collect();
    let before_cut = bench.lan.mailbox().snapshot().len();
    let t0 = Instant::now();
    // The cut happens from inside the load loop, while other sessions are mid-transaction.
    let mut cut_at: Option<(Duration, usize)> = None;
    let box_ip = bench.box_ip();
    let power = &mut bench.power;
    let lan = &bench.lan;
    let mut cut_error = None;
    let reports = send_load(lan, box_ip, messages, &cfg, |acked| {
        if acked >= cfg.cut_after && cut_at.is_none() {
            if let Err(e) = power.cut() {
                cut_error = Some(e.to_string());
            }
            lan.abort_senders();
            cut_at = Some((t0.elapsed(), acked));
            true
        } else {
            false
        }
    });
    if let Some(e) = cut_error {
        return Err(format!("could not cut the power: {e}"));
    }
    let acknowledged: BTreeSet<String> = reports
        .iter()
        .flat_map(|r| r.outcomes.iter())
        .filter(|(_, o)| o.is_acknowledged())
        .map(|(i, _)| i.clone())
        .collect();
    let unfinished = reports
        .iter()
        .flat_map(|r| r.outcomes.iter())
        .filter(|(_, o)| matches!(o, Submission::Unfinished { .. }))
        .count();
    let Some((at, acked_then)) = cut_at else {
        return Err(format!(
            "the load ended before {} messages were acknowledged ({} were): nothing to cut into",
            cfg.cut_after,
            acknowledged.len()
        ));
    };
    notes.add(format!(
        "power cut {:.1}s into the load with {acked_then} acknowledged; in the end {} acknowledged, {unfinished} cut off unacknowledged",
        at.as_secs_f64(),
        acknowledged.len()
    ));
    let delivered_before = bench.lan.mailbox().snapshot().len() - before_cut;
    notes.add(format!("{delivered_before} delivered before the cut"));
    let t1 = Instant::now();
    bench.power.on().map_err(|e| e.to_string())?;
    let (ready, _) = bench.wait_smtp_ready(bench.rig.timeouts.boot)?;
    notes.add(format!(
        "SMTP ready again {:.1}s after power on",
        ready.as_secs_f64()
    ));
    let (got, ok) = bench.lan.mailbox().wait_until(
        bench.rig.timeouts.delivery.max(Duration::from_secs(600)),
        |m| {
            let have: BTreeSet<String> = m.iter().filter_map(|d| d.message.hil_id()).collect();
            acknowledged.iter().all(|a| have.contains(a))
        },
    );
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for d in &got {
        if let Some(i) = d
            .message
            .hil_id()
            .filter(|i| i.starts_with(&format!("cut-{tag}-")))
        {
            *counts.entry(i).or_default() += 1;
        }
    }
    let duplicates: Vec<&String> = counts
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(i, _)| i)
        .collect();
    let unacked_delivered = counts.keys().filter(|i| !acknowledged.contains(*i)).count();
    notes.add(format!(
        "{} distinct load messages delivered; {} duplicates {:?}; {unacked_delivered} delivered though never acknowledged (allowed)",
        counts.len(),
        duplicates.len(),
        duplicates.iter().take(10).collect::<Vec<_>>()
    ));
    if !ok {
        let missing: Vec<&String> = acknowledged
            .iter()
            .filter(|a| !counts.contains_key(*a))
            .collect();
        return Err(format!(
            "{} of {} acknowledged messages never arrived (first: {:?})",
            missing.len(),
            acknowledged.len(),
            missing.iter().take(5).collect::<Vec<_>>()
        ));
    }
    Ok(format!(
        "cut with {acked_then} acked; all {} acknowledged delivered {:.0}s after power on; {} duplicates",
        acknowledged.len(),
        t1.elapsed().as_secs_f64(),
        duplicates.len()
    ))
}

/// (5) Watchdog: a message tagged `[fault:hang-scheduler]` (fault injection, `--test-hooks`
/// images only) stalls the gateway's delivery scheduler; the gateway reports itself stuck and
/// stops petting `/dev/watchdog0`; the i6300esb resets the box. Passes when the serial line
/// shows a new boot and a message sent afterwards is delivered.
fn watchdog(bench: &mut Bench, notes: &mut Notes, tag: &str) -> Verdict {
    ensure_ready(bench, notes)?;
    bench.serial.skip_pending();
    let hang = OutgoingMessage::text(
        &id("watchdog", tag, 0),
        "fault@sender5.example.net",
        "user@example.org",
        "[fault:hang-scheduler] watchdog test",
        "This message stalls the delivery scheduler of a --test-hooks image.\r\n",
    );
    let report = bench
        .lan
        .send(4, (bench.box_ip(), 25), vec![hang.clone()])
        .wait(bench.rig.timeouts.session)
        .ok_or("the session with the fault message did not end in time")?;
    match &report.outcomes[..] {
        [(_, Submission::Acknowledged(r))] => notes.add(format!("fault message accepted: {r}")),
        other => return Err(format!("the fault message was not accepted: {other:?}")),
    }
    let t0 = Instant::now();
    bench.serial.expect(&boot_marker(), bench.rig.timeouts.watchdog).map_err(|_| {
        format!(
            "no reboot within {}s of the hang: the hardware watchdog did not reset the box (is the image built with --test-hooks, and [watchdog] device set?)",
            bench.rig.timeouts.watchdog.as_secs()
        )
    })?;
    let reset_after = t0.elapsed();
    notes.add(format!(
        "the box rebooted {:.1}s after the fault message was accepted",
        reset_after.as_secs_f64()
    ));
    let (ready, _) = bench.wait_smtp_ready(bench.rig.timeouts.boot)?;
    notes.add(format!(
        "SMTP ready {:.1}s after the reset",
        ready.as_secs_f64()
    ));
    let after = OutgoingMessage::text(
        &id("watchdog", tag, 1),
        "after@sender5.example.net",
        "user@example.org",
        "after the watchdog reset",
        "Mail flows again.\r\n",
    );
    let report = bench
        .lan
        .send(4, (bench.box_ip(), 25), vec![after.clone()])
        .wait(bench.rig.timeouts.session)
        .ok_or("the session after the reset did not end in time")?;
    if !report.outcomes.iter().all(|(_, o)| o.is_acknowledged()) {
        return Err(format!(
            "a message after the reset was not accepted: {:?}",
            report.outcomes
        ));
    }
    let (_, delivered) = bench
        .lan
        .mailbox()
        .wait_until(bench.rig.timeouts.delivery, |m| {
            m.iter()
                .any(|d| d.message.hil_id().as_deref() == Some(after.id.as_str()))
        });
    let mut more_boots = 0;
    while bench
        .serial
        .expect(&boot_marker(), Duration::from_millis(200))
        .is_ok()
    {
        more_boots += 1;
    }
    if more_boots > 0 {
        notes.add(format!(
            "the box rebooted {more_boots} more time(s) after the first reset"
        ));
    }
    if !delivered {
        return Err(format!(
            "mail did not resume: a message accepted after the reset was not delivered within {}s{}",
            bench.rig.timeouts.delivery.as_secs(),
            if more_boots > 0 {
                format!(
                    "; the box kept rebooting ({more_boots} more resets): the fault message is still queued and stalls the scheduler again after every boot"
                )
            } else {
                String::new()
            }
        ));
    }
    Ok(format!(
        "watchdog reset {:.0}s after the hang, SMTP back {:.0}s later, mail delivered again",
        reset_after.as_secs_f64(),
        ready.as_secs_f64()
    ))
}
