//! Starting, stopping and reconfiguring the daemon.

use std::time::Duration;

use portcullis_e2e::cli::portcullis;
use portcullis_e2e::process::{run_bounded, tail};
use portcullis_e2e::smtp::simple_message;
use portcullis_e2e::{Daemon, GatewayConfig, Sink, SmtpClient, wait_for};

const WAIT: Duration = Duration::from_secs(30);

#[test]
fn unknown_config_key_is_refused_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.toml");
    let data_dir = dir.path().join("data");
    let text = GatewayConfig::new()
        .set("server.data_dir", data_dir.display().to_string())
        .set(
            "smtp.listen",
            vec![format!("127.0.0.1:{}", portcullis_e2e::free_port())],
        )
        .set("smtp.max_sesions", 3)
        .to_toml();
    std::fs::write(&config, text).unwrap();
    let config = config.display().to_string();

    let check = portcullis(&["check-config", "--config", &config]);
    assert_eq!(
        check.status,
        Some(1),
        "check-config of a config with a typo:\n{check}"
    );
    assert!(
        check.all_output().contains("max_sesions"),
        "check-config does not name the key:\n{check}"
    );

    let run = run_bounded(
        std::process::Command::new(portcullis_e2e::cli::binary())
            .args(["run", "--config", &config]),
        Duration::from_secs(20),
    );
    assert!(!run.timed_out, "portcullis run started with an unknown key");
    assert_ne!(
        run.status,
        Some(0),
        "portcullis run accepted an unknown key"
    );
    assert!(
        format!("{}{}", run.stdout, run.stderr).contains("max_sesions"),
        "portcullis run does not name the key:\n{}",
        tail(&run.stderr, 20)
    );
}

#[test]
fn sigterm_stops_the_daemon_with_exit_status_0() {
    let mut gateway = Daemon::start(GatewayConfig::new());
    let status = gateway.terminate(Duration::from_secs(20));
    assert_eq!(status.code(), Some(0), "exit after SIGTERM: {status}");
}

#[test]
fn sigterm_lets_mail_already_acknowledged_be_delivered_after_restart() {
    let sink = Sink::start();
    let mut gateway = Daemon::start(GatewayConfig::new().relay_to(&sink));
    gateway.ctl(&["pause-delivery"]).success();
    let mut client = SmtpClient::greeted(gateway.smtp_port());
    let message = simple_message(
        "alice@origin.test",
        "bob@remote.test",
        "survives restart",
        "hi",
    );
    assert_eq!(
        client
            .send_message("alice@origin.test", &["bob@remote.test"], &message)
            .unwrap()
            .code,
        250
    );
    client.quit();

    assert_eq!(gateway.terminate(Duration::from_secs(20)).code(), Some(0));
    assert!(sink.messages().is_empty(), "delivered while paused");
    gateway.restart();
    // A restart starts with delivery running again; the queued message goes out.
    sink.wait_for_message("the message queued before the restart", WAIT, |m| {
        m.header("Subject").as_deref() == Some("survives restart")
    });
}

#[test]
fn sighup_reload_applies_new_local_domains_without_dropping_an_open_session() {
    let sink = Sink::start();
    let config = GatewayConfig::new()
        .relay_to(&sink)
        .set("relay.relay_networks", Vec::<String>::new())
        .set("relay.local_domains", vec!["example.test"]);
    let mut gateway = Daemon::start(config.clone());
    let pid = gateway.pid();

    let rcpt_new_domain = |port: u16| {
        let mut client = SmtpClient::greeted(port);
        assert_eq!(
            client
                .command("MAIL FROM:<alice@origin.test>")
                .unwrap()
                .code,
            250
        );
        let reply = client.command("RCPT TO:<carol@new.test>").unwrap();
        client.quit();
        reply
    };
    let before = rcpt_new_domain(gateway.smtp_port());
    assert_eq!(
        before.code, 554,
        "new.test accepted before it was configured: {before}"
    );

    let mut open = SmtpClient::greeted(gateway.smtp_port());
    assert_eq!(
        open.command("MAIL FROM:<alice@origin.test>").unwrap().code,
        250
    );

    gateway.reload(config.set("relay.local_domains", vec!["example.test", "new.test"]));
    wait_for(
        "new.test accepted after SIGHUP",
        Duration::from_secs(15),
        || (rcpt_new_domain(gateway.smtp_port()).code == 250).then_some(()),
    );
    assert!(gateway.is_running(), "the daemon exited on SIGHUP");
    assert_eq!(gateway.pid(), pid);

    let rcpt = open
        .command("RCPT TO:<bob@example.test>")
        .expect("the open session was dropped by the reload");
    assert_eq!(
        rcpt.code, 250,
        "RCPT in the session opened before the reload: {rcpt}"
    );
    let message = simple_message(
        "alice@origin.test",
        "bob@example.test",
        "across reload",
        "hi",
    );
    let reply = open
        .data(&message)
        .expect("the open session was dropped by the reload");
    assert_eq!(
        reply.code, 250,
        "end of data in the session opened before the reload: {reply}"
    );
    open.quit();
    sink.wait_for_message("the message sent across the reload", WAIT, |m| {
        m.header("Subject").as_deref() == Some("across reload")
    });
}

#[test]
fn sigterm_exits_promptly_while_a_delivery_waits_on_a_silent_next_hop() {
    let tarpit = portcullis_e2e::smtp::SilentServer::start();
    let mut gateway = Daemon::start(
        GatewayConfig::new()
            .set("delivery.default_route", vec![tarpit.addr()])
            .set("delivery.command_timeout", "5m")
            .set("smtp.shutdown_grace", "2s"),
    );
    let mut client = SmtpClient::greeted(gateway.smtp_port());
    let message = simple_message("alice@origin.test", "bob@remote.test", "stuck", "hi");
    assert_eq!(
        client
            .send_message("alice@origin.test", &["bob@remote.test"], &message)
            .unwrap()
            .code,
        250
    );
    client.quit();
    wait_for(
        "the delivery attempt to reach the silent next hop",
        WAIT,
        || (tarpit.connections() > 0).then_some(()),
    );

    let started = std::time::Instant::now();
    let status = gateway.terminate(Duration::from_secs(30));
    assert_eq!(status.code(), Some(0), "exit after SIGTERM: {status}");
    println!("exited {:?} after SIGTERM", started.elapsed());
}
