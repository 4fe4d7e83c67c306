//! Supervision, watchdogs, alerts and the disk floor, on the real binary with real peers.
//!
//! Faults are injected with `PORTCULLIS_FAULT_INJECTION=1` and a `[fault:…]` tag in a message's
//! Subject (see `gateway::fault`); everything else is the appliance as an admin runs it.

use std::time::Duration;

use portcullis_e2e::smtp::{Reply, simple_message};
use portcullis_e2e::wait::poll_for;
use portcullis_e2e::{Daemon, GatewayConfig, Launch, Sink, SinkMessage, SmtpClient, Swaks};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);
const FAULTS: &[(&str, &str)] = &[("PORTCULLIS_FAULT_INJECTION", "1")];
const ADMIN: &str = "admin@ops.test";

/// A gateway relaying to `sink`, mailing alerts to ADMIN, retrying fast.
fn config(sink: &Sink) -> GatewayConfig {
    GatewayConfig::new()
        .relay_to(sink)
        .set("queue.retry_schedule", vec!["1s"])
        .set("queue.poll_interval", "200ms")
        .set("alerts.to", vec![ADMIN])
        .set("alerts.check_interval", "1s")
}

fn alert_mails(sink: &Sink, kind: &str) -> Vec<SinkMessage> {
    sink.messages()
        .into_iter()
        .filter(|m| m.header("X-Portcullis-Alert").as_deref() == Some(kind))
        .collect()
}

fn wait_for_alert_mail(sink: &Sink, kind: &str) -> SinkMessage {
    poll_for(WAIT, || alert_mails(sink, kind).into_iter().next())
        .unwrap_or_else(|| panic!("no {kind} alert mail at the sink within {WAIT:?}"))
}

fn status(gateway: &Daemon) -> Value {
    let out = gateway.cli_raw(&["status", "--json"]);
    assert_eq!(
        out.status,
        Some(0),
        "portcullis status failed: {}",
        out.stderr
    );
    serde_json::from_str(&out.stdout).expect("status --json is JSON")
}

fn part<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["parts"]
        .as_array()
        .expect("parts")
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no part {name} in {status}"))
}

#[test]
fn a_panic_while_delivering_one_message_holds_it_as_suspect_and_other_mail_flows() {
    let sink = Sink::start();
    let gateway = Daemon::start_with_env(config(&sink), FAULTS);

    Swaks::new(gateway.smtp_port())
        .to("victim@remote.test")
        .header("Subject: poison [fault:panic-in-delivery]")
        .run()
        .success();
    Swaks::new(gateway.smtp_port())
        .to("bob@remote.test")
        .header("Subject: ordinary mail")
        .run()
        .success();

    // The ordinary message is delivered while the poisonous one keeps crashing its attempts.
    let ordinary = sink.wait_for_message("the ordinary message", WAIT, |m| {
        m.header("Subject").as_deref() == Some("ordinary mail")
    });
    assert_eq!(ordinary.rcpt_to, ["bob@remote.test"]);

    let held = poll_for(WAIT, || {
        gateway
            .queue_list()
            .into_iter()
            .find(|e| e.0["queue"] == "hold")
    })
    .expect("the poisonous message was not moved to hold");
    let reason = held.0["hold_reason"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        reason.contains("suspect message") && reason.contains("3 times"),
        "hold reason: {reason}"
    );

    let alert = wait_for_alert_mail(&sink, "suspect-message-held");
    assert_eq!(alert.mail_from, "", "alerts go out with the null sender");
    assert_eq!(alert.rcpt_to, [ADMIN]);
    assert!(
        alert
            .header("Subject")
            .unwrap()
            .contains("suspect message held")
    );

    // Sessions still work after the panics.
    Swaks::new(gateway.smtp_port())
        .to("carol@remote.test")
        .header("Subject: after the panics")
        .run()
        .success();
    sink.wait_for_message("mail sent after the panics", WAIT, |m| {
        m.header("Subject").as_deref() == Some("after the panics")
    });
    assert_eq!(part(&status(&gateway), "delivery")["state"], "running");
}

#[test]
fn a_panicking_part_is_restarted_counted_and_reported_to_the_admin() {
    let sink = Sink::start();
    let gateway = Daemon::start_with_env(config(&sink), FAULTS);

    Swaks::new(gateway.smtp_port())
        .to("bob@remote.test")
        .header("Subject: trips the scheduler [fault:panic-scheduler]")
        .run()
        .success();

    let restarted = poll_for(WAIT, || {
        let s = status(&gateway);
        let p = part(&s, "delivery").clone();
        (p["restarts"].as_u64() == Some(1) && p["state"] == "running").then_some(p)
    })
    .expect("delivery part was not restarted");
    assert!(
        restarted["last_error"]
            .as_str()
            .unwrap()
            .contains("panicked"),
        "{restarted}"
    );

    // The restarted scheduler delivers the very message that tripped it.
    sink.wait_for_message("the message that tripped the scheduler", WAIT, |m| {
        m.rcpt_to == ["bob@remote.test"]
    });
    let alert = wait_for_alert_mail(&sink, "component-failure");
    assert!(alert.text().contains("delivery"), "{}", alert.text());
}

#[test]
fn a_stalled_scheduler_is_reported_stuck_and_the_watchdog_stops_being_petted_until_magic_close() {
    let sink = Sink::start();
    let device = tempfile::NamedTempFile::new().expect("fake watchdog device");
    let mut gateway = Daemon::start_with_env(
        config(&sink)
            .set("watchdog.device", device.path().display().to_string())
            .set("watchdog.pet_interval", "1s")
            .set("watchdog.timeout", "30s")
            .set("watchdog.stuck_after", "3s"),
        FAULTS,
    );
    let size = || {
        std::fs::metadata(device.path())
            .map(|m| m.len())
            .unwrap_or(0)
    };

    // Healthy: the device is petted about once a second.
    let before = size();
    std::thread::sleep(Duration::from_millis(3500));
    assert!(
        size() >= before + 2,
        "watchdog not petted while healthy ({before} -> {})",
        size()
    );
    assert_eq!(status(&gateway)["healthy"], true);

    Swaks::new(gateway.smtp_port())
        .to("bob@remote.test")
        .header("Subject: stall [fault:hang-scheduler]")
        .run()
        .success();
    let stuck = poll_for(WAIT, || {
        let s = status(&gateway);
        (part(&s, "delivery")["state"] == "stuck").then_some(s)
    })
    .expect("the stalled delivery part was never reported stuck");
    assert_eq!(stuck["healthy"], false);

    // No more pets while unhealthy.
    let frozen = size();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        size(),
        frozen,
        "the watchdog was petted while a part was stuck"
    );
    // The alert cannot be mailed while delivery is stalled, but it is in the alert log.
    let alerts = gateway.cli_raw(&["alerts", "--json"]);
    assert!(
        alerts.stdout.contains("component-failure") && alerts.stdout.contains("stuck"),
        "{}",
        alerts.stdout
    );

    // A deliberate stop disarms the device with the magic 'V'.
    let exit = gateway.terminate(Duration::from_secs(30));
    assert!(exit.success(), "portcullis exited with {exit}");
    let bytes = std::fs::read(device.path()).unwrap();
    assert_eq!(bytes.last(), Some(&b'V'), "no magic close on a clean stop");
    assert!(
        bytes[..bytes.len() - 1].iter().all(|&b| b == 0),
        "pets are NUL bytes"
    );
}

#[test]
fn a_message_that_stalls_the_scheduler_is_held_as_suspect_after_the_reset_and_mail_resumes() {
    let sink = Sink::start();
    let mut gateway = Daemon::start_with_env(
        config(&sink)
            .set("watchdog.stuck_after", "3s")
            .set("queue.suspect_after_crashes", 1i64),
        FAULTS,
    );
    Swaks::new(gateway.smtp_port())
        .to("bob@remote.test")
        .header("Subject: poison [fault:hang-scheduler]")
        .run()
        .success();
    poll_for(WAIT, || {
        (part(&status(&gateway), "delivery")["state"] == "stuck").then_some(())
    })
    .expect("the stalled delivery part was never reported stuck");

    // What the hardware watchdog does to a stuck box: no goodbye, a cold start.
    gateway.kill9();
    gateway.restart();
    let held = poll_for(WAIT, || {
        gateway
            .queue_list()
            .into_iter()
            .find(|e| e.queue() == "hold")
    })
    .expect("the message that stalled the scheduler was not put on hold");
    assert!(
        gateway.log().contains("suspects_held=1"),
        "the restart did not report a suspect: {}",
        portcullis_e2e::process::tail(&gateway.log(), 20)
    );
    // Mail flows again: the poison message no longer reaches the scheduler.
    Swaks::new(gateway.smtp_port())
        .to("carol@remote.test")
        .header("Subject: after the reset")
        .run()
        .success();
    sink.wait_for_message("mail after the reset", WAIT, |m| {
        m.rcpt_to == ["carol@remote.test"]
    });
    assert_eq!(part(&status(&gateway), "delivery")["state"], "running");
    assert_eq!(
        gateway.queue_list().len(),
        1,
        "only the held message: {}",
        held.id()
    );
}

#[test]
fn alerts_are_mailed_to_the_admin_rate_limited_and_kept_in_the_alert_log() {
    let sink = Sink::start();
    let gateway = Daemon::start(
        config(&sink)
            .set("relay.relay_networks", Vec::<String>::new())
            .set("relay.local_domains", vec!["ours.test"]),
    );

    let start = wait_for_alert_mail(&sink, "service-start");
    assert_eq!(start.mail_from, "");
    assert_eq!(
        start.header("Auto-Submitted").as_deref(),
        Some("auto-generated")
    );
    assert!(start.header("From").unwrap().contains("portcullis@"));

    for _ in 0..3 {
        let run = Swaks::new(gateway.smtp_port())
            .to("victim@elsewhere.test")
            .run();
        assert_eq!(run.reply_to("RCPT").expect("RCPT reply").code, 554);
    }
    let relay = wait_for_alert_mail(&sink, "unauthorized-access");
    assert!(
        relay.text().contains("victim@elsewhere.test"),
        "{}",
        relay.text()
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        alert_mails(&sink, "unauthorized-access").len(),
        1,
        "repeats within min_interval must not be mailed"
    );

    let log = gateway.cli_raw(&["alerts", "--json", "--limit", "50"]);
    let alerts: Vec<Value> = serde_json::from_str(&log.stdout).expect("alerts --json");
    let relay_alerts: Vec<&Value> = alerts
        .iter()
        .filter(|a| a["kind"] == "unauthorized-access")
        .collect();
    assert_eq!(
        relay_alerts.len(),
        3,
        "every occurrence is in the alert log: {alerts:?}"
    );
    assert_eq!(
        relay_alerts.iter().filter(|a| a["mailed"] == true).count(),
        1
    );
}

#[test]
fn an_improper_shutdown_is_detected_and_alerted_at_the_next_start() {
    let sink = Sink::start();
    let mut gateway = Daemon::start(config(&sink));
    wait_for_alert_mail(&sink, "service-start");
    gateway.kill9();
    gateway.restart();
    let alert = wait_for_alert_mail(&sink, "improper-shutdown");
    assert!(alert.text().contains("Recovery:"), "{}", alert.text());

    // A clean stop and start is not reported.
    assert!(gateway.terminate(Duration::from_secs(30)).success());
    gateway.restart();
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(alert_mails(&sink, "improper-shutdown").len(), 1);
}

#[test]
fn below_the_disk_floor_new_mail_gets_452_and_no_acknowledged_message_is_lost() {
    let sink = Sink::start();
    // A 24 MiB tmpfs under the queue; below 50% free the gateway refuses new mail.
    let gateway = Daemon::start_with_launch(
        config(&sink)
            .set("alerts.disk_floor_percent", 50.0)
            .set("alerts.low_disk_percent", 70.0)
            .set("smtp.max_message_size", 4 * 1024 * 1024),
        &[],
        Launch {
            queue_tmpfs_mib: Some(24),
            ..Launch::default()
        },
    );
    gateway.ctl(&["pause-delivery"]).success();

    // Between messages, let housekeeping (every second) see the space go.
    let (acknowledged, refused) =
        fill_until_refused(&gateway, "filler", 1000, Duration::from_millis(400));
    let refused = refused.expect("the gateway never refused mail although its disk filled up");
    assert_eq!(refused.code, 452, "refusal: {refused:?}");
    assert_eq!(refused.enhanced(), Some("4.3.1"), "refusal: {refused:?}");
    assert!(
        acknowledged.len() >= 5,
        "only {} messages fit before the floor",
        acknowledged.len()
    );

    let alerts = gateway.cli_raw(&["alerts", "--json", "--limit", "100"]);
    assert!(
        alerts.stdout.contains("disk-floor"),
        "no disk-floor alert: {}",
        alerts.stdout
    );

    resume_and_expect_all_delivered_then_accepted_again(&gateway, &sink, &acknowledged);
}

/// Sends messages of `lines` 1,000-byte lines (subjects `PREFIX N`), `pause` apart, until one is
/// refused; returns the subjects acknowledged and the refusal.
fn fill_until_refused(
    gateway: &Daemon,
    prefix: &str,
    lines: usize,
    pause: Duration,
) -> (Vec<String>, Option<Reply>) {
    let line = "x".repeat(998);
    let body: String = std::iter::repeat_n(line.as_str(), lines)
        .collect::<Vec<_>>()
        .join("\n");
    let mut acknowledged = Vec::new();
    for n in 0..40 {
        let subject = format!("{prefix} {n}");
        let message = simple_message("alice@origin.test", "bob@remote.test", &subject, &body);
        let mut client = SmtpClient::greeted(gateway.smtp_port());
        let reply = client
            .send_message("alice@origin.test", &["bob@remote.test"], &message)
            .expect("SMTP exchange");
        client.quit();
        if reply.code != 250 {
            return (acknowledged, Some(reply));
        }
        acknowledged.push(subject);
        std::thread::sleep(pause);
    }
    (acknowledged, None)
}

/// Nothing acknowledged is lost: after `resume-delivery` every subject in `acknowledged` reaches
/// the sink, and once the queue has drained (room again) new mail is accepted.
fn resume_and_expect_all_delivered_then_accepted_again(
    gateway: &Daemon,
    sink: &Sink,
    acknowledged: &[String],
) {
    gateway.ctl(&["resume-delivery"]).success();
    // (Alert mail arrives at the same sink, so wait for the subjects, not a count.)
    let missing = |delivered: &[SinkMessage]| -> Vec<String> {
        acknowledged
            .iter()
            .filter(|s| {
                !delivered
                    .iter()
                    .any(|m| m.header("Subject").as_deref() == Some(s.as_str()))
            })
            .cloned()
            .collect()
    };
    let all_there = poll_for(Duration::from_secs(60), || {
        missing(&sink.messages()).is_empty().then_some(())
    });
    assert!(
        all_there.is_some(),
        "acknowledged messages never arrived: {:?}",
        missing(&sink.messages())
    );
    gateway.wait_queue_empty(Duration::from_secs(30));
    let accepted_again = poll_for(WAIT, || {
        let run = Swaks::new(gateway.smtp_port()).to("bob@remote.test").run();
        (run.data_reply().map(|r| r.code) == Some(250)).then_some(())
    });
    assert!(
        accepted_again.is_some(),
        "mail still refused after the disk was freed"
    );
}

#[test]
fn a_queue_disk_that_fills_up_gets_452_loses_nothing_and_recovers_once_mail_drains() {
    // No floor: the queue itself runs into ENOSPC on an 8 MiB tmpfs.
    let sink = Sink::start();
    let gateway = Daemon::start_with_launch(
        config(&sink)
            .set("alerts.disk_floor_percent", 0.0)
            .set("alerts.low_disk_percent", 0.0)
            .set("smtp.max_message_size", 4 * 1024 * 1024),
        &[],
        Launch {
            queue_tmpfs_mib: Some(8),
            ..Launch::default()
        },
    );
    gateway.ctl(&["pause-delivery"]).success();

    // About 600 KiB each: small enough to be kept in memory and appended to the message log.
    let (acknowledged, refused) = fill_until_refused(&gateway, "full", 600, Duration::ZERO);
    let refused = refused.expect("the queue never filled up");
    assert_eq!(refused.code, 452, "refusal: {refused:?}");
    assert_eq!(refused.enhanced(), Some("4.3.1"), "refusal: {refused:?}");
    assert!(
        acknowledged.len() >= 3,
        "only {} messages fit",
        acknowledged.len()
    );

    // Delivery frees the disk even though it is full: everything acknowledged arrives.
    resume_and_expect_all_delivered_then_accepted_again(&gateway, &sink, &acknowledged);
    let log = gateway.log();
    assert!(
        log.contains("queue disk is full"),
        "the refusal was not for a full queue disk:\n{log}"
    );
    eprintln!(
        "disk full: {} acknowledged before the 452; log records not written while full: {}",
        acknowledged.len(),
        log.matches("log record not written").count()
    );
}
