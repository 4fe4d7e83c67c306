//! The administrator's command line against a running gateway: `portcullis queue …` and `portcullis ctl …`.

use std::time::Duration;

use portcullis_e2e::cli::portcullis;
use portcullis_e2e::{
    Daemon, GatewayConfig, QueueEntry, Sink, SinkOptions, SmtpClient, Swaks, wait_for,
};

const WAIT: Duration = Duration::from_secs(30);

/// A gateway relaying to `sink` with delivery paused, so messages stay in the queue for inspection.
fn paused_gateway(sink: &Sink) -> Daemon {
    let gateway = Daemon::start(GatewayConfig::new().relay_to(sink));
    gateway.ctl(&["pause-delivery"]).success();
    gateway
}

/// Sends one message with `subject` through swaks and returns its queue entry.
fn queue_one(gateway: &Daemon, to: &str, subject: &str) -> QueueEntry {
    Swaks::new(gateway.smtp_port())
        .from("alice@origin.test")
        .to(to)
        .header(&format!("Subject: {subject}"))
        .run()
        .success();
    wait_for(format!("{subject:?} in queue list"), WAIT, || {
        gateway
            .queue_list()
            .into_iter()
            .find(|e| e.subject().as_deref() == Some(subject))
    })
}

/// Lets the scheduler run a few rounds (poll_interval is 200 ms in tests) before checking that nothing moved.
fn settle() {
    std::thread::sleep(Duration::from_secs(2));
}

#[test]
fn queue_list_and_show_describe_a_queued_message() {
    let sink = Sink::start();
    let gateway = paused_gateway(&sink);
    let entry = queue_one(&gateway, "bob@remote.test", "list me");

    assert_eq!(entry.queue(), "incoming");
    assert_eq!(entry.sender(), "alice@origin.test");
    assert_eq!(entry.recipients(), ["bob@remote.test"]);
    assert_eq!(
        entry.id().len(),
        16,
        "queue id {:?} is not 16 characters",
        entry.id()
    );
    for field in ["size", "arrived", "attempts", "next_attempt", "message_id"] {
        assert!(
            entry.0.get(field).is_some(),
            "queue list --json lacks {field:?}: {}",
            entry.0
        );
    }

    let shown = gateway
        .queue(&["show", &entry.id(), "--json"])
        .success()
        .json();
    // The spec fixes only `queue list --json`; `show` may wrap the entry (e.g. with its tracking record).
    let shown_id = shown.get("entry").unwrap_or(&shown)["id"].clone();
    assert_eq!(shown_id, entry.id().as_str(), "queue show --json: {shown}");
    let text = gateway.queue(&["show", &entry.id()]);
    text.success();
    assert!(
        text.stdout.contains("bob@remote.test"),
        "queue show does not name the recipient:\n{text}"
    );
    let plain = gateway.queue(&["list"]);
    assert!(
        plain.success().stdout.contains(&entry.id()),
        "queue list does not show the id:\n{plain}"
    );
}

#[test]
fn held_message_stays_undelivered_until_released() {
    let sink = Sink::start();
    let gateway = paused_gateway(&sink);
    let entry = queue_one(&gateway, "bob@remote.test", "hold me");

    gateway.queue(&["hold", &entry.id()]).success();
    let held = gateway.queue_list();
    assert_eq!(held.len(), 1);
    assert_eq!(held[0].queue(), "hold", "after queue hold: {}", held[0].0);

    gateway.ctl(&["resume-delivery"]).success();
    settle();
    assert!(sink.messages().is_empty(), "a held message was delivered");

    gateway.queue(&["release", &entry.id()]).success();
    let message = sink.wait_for_messages(1, WAIT).remove(0);
    assert_eq!(message.header("Subject").as_deref(), Some("hold me"));
    gateway.wait_queue_empty(WAIT);
}

#[test]
fn deleted_message_is_never_delivered() {
    let sink = Sink::start();
    let gateway = paused_gateway(&sink);
    let doomed = queue_one(&gateway, "bob@remote.test", "delete me");

    gateway.queue(&["delete", &doomed.id()]).success();
    assert!(
        gateway.queue_list().is_empty(),
        "queue delete left the message listed"
    );

    gateway.ctl(&["resume-delivery"]).success();
    Swaks::new(gateway.smtp_port())
        .from("alice@origin.test")
        .to("bob@remote.test")
        .header("Subject: canary")
        .run()
        .success();
    sink.wait_for_message("the canary", WAIT, |m| {
        m.header("Subject").as_deref() == Some("canary")
    });
    settle();
    let subjects: Vec<_> = sink
        .messages()
        .iter()
        .filter_map(|m| m.header("Subject"))
        .collect();
    assert_eq!(subjects, ["canary"], "the deleted message was delivered");
}

#[test]
fn queue_flush_retries_deferred_messages_at_once() {
    let mut sink = Sink::start();
    let gateway = Daemon::start(
        GatewayConfig::new()
            .relay_to(&sink)
            .set("queue.retry_schedule", vec!["1h"]),
    );
    queue_one(&gateway, "defer-flush@remote.test", "flush me");
    wait_for("the message deferred", WAIT, || {
        gateway
            .queue_list()
            .into_iter()
            .find(|e| e.queue() == "deferred")
    });

    sink.restart_with(SinkOptions {
        accept_all: true,
        ..Default::default()
    });
    settle();
    assert!(
        sink.messages().is_empty(),
        "retried before the 1h retry interval without a flush"
    );

    gateway.queue(&["flush"]).success();
    sink.wait_for_message("the flushed message", Duration::from_secs(15), |m| {
        m.rcpt_to == ["defer-flush@remote.test"]
    });
    gateway.wait_queue_empty(WAIT);
}

#[test]
fn paused_delivery_keeps_mail_queued_and_resume_delivers_it() {
    let sink = Sink::start();
    let gateway = paused_gateway(&sink);
    queue_one(&gateway, "bob@remote.test", "paused");
    settle();
    assert!(
        sink.messages().is_empty(),
        "delivered while delivery was paused"
    );
    assert_eq!(gateway.queue_list().len(), 1);

    gateway.ctl(&["resume-delivery"]).success();
    sink.wait_for_messages(1, WAIT);
    gateway.wait_queue_empty(WAIT);
}

#[test]
fn reject_incoming_answers_mail_from_with_450_until_accept_incoming() {
    let sink = Sink::start();
    let gateway = Daemon::start(GatewayConfig::new().relay_to(&sink));
    gateway.ctl(&["reject-incoming"]).success();

    let (mut client, greeting) = SmtpClient::connect(gateway.smtp_port()).unwrap();
    assert_eq!(
        greeting.code, 220,
        "new connections must still get the banner: {greeting}"
    );
    assert_eq!(client.command("EHLO client.test").unwrap().code, 250);
    let refused = client.command("MAIL FROM:<alice@origin.test>").unwrap();
    assert_eq!(
        (refused.code, refused.enhanced()),
        (450, Some("4.3.2")),
        "MAIL while rejecting: {refused}"
    );
    client.quit();

    gateway.ctl(&["accept-incoming"]).success();
    let mut client = SmtpClient::greeted(gateway.smtp_port());
    let accepted = client.command("MAIL FROM:<alice@origin.test>").unwrap();
    assert_eq!(accepted.code, 250, "MAIL after accept-incoming: {accepted}");
    client.quit();
}

#[test]
fn unknown_queue_id_exits_1_naming_the_id() {
    let gateway = Daemon::start(GatewayConfig::new());
    let missing = "00000000000000ZZ";
    for command in ["show", "hold", "release", "delete"] {
        let output = gateway.queue(&[command, missing]);
        assert_eq!(
            output.status,
            Some(1),
            "queue {command} of an unknown id:\n{output}"
        );
        let said = output.all_output();
        assert!(
            said.contains("no message with queue id") && said.contains(missing),
            "queue {command} of an unknown id does not say so:\n{output}"
        );
    }
}

#[test]
fn cli_without_a_running_daemon_exits_3() {
    let empty = tempfile::tempdir().unwrap();
    let data_dir = empty.path().display().to_string();
    for args in [
        vec!["queue", "list"],
        vec!["ctl", "pause-delivery"],
        vec!["queue", "flush"],
    ] {
        let mut full = args.clone();
        full.extend_from_slice(&["--data-dir", &data_dir]);
        let output = portcullis(&full);
        assert_eq!(
            output.status,
            Some(3),
            "`portcullis {}` without a daemon:\n{output}",
            args.join(" ")
        );
        assert!(
            output.all_output().contains("not running"),
            "no 'not running' message:\n{output}"
        );
    }
}

#[test]
fn cli_usage_error_exits_2() {
    let output = portcullis(&["queue", "frobnicate"]);
    assert_eq!(output.status, Some(2), "unknown subcommand:\n{output}");
}
