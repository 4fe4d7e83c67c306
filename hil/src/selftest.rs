//! The harness' self-test: the same instruments against the tiny VM of `hil/devvm/build` (a
//! stock Debian kernel and busybox at 192.0.2.10) instead of the appliance. It proves, with a
//! real Linux TCP/IP stack on the other end: the serial line both ways, ARP and ICMP, UDP DNS
//! (MX lookup), TCP in both directions (our senders to the VM's port 25, the VM to our mail
//! server and our web server), a power cut and power on, and the i6300esb watchdog resetting
//! the machine. Use it when the appliance image is not there or a scenario fails oddly.

use std::time::{Duration, Instant};

use crate::bench::{Bench, boot_marker};
use crate::serial::Pattern;
use crate::smtp::client::OutgoingMessage;

/// One self-test check: its name and what it showed, or why it failed.
pub type Check = (String, Result<String, String>);

/// One step of the self-test.
type Step = fn(&mut Bench) -> Result<String, String>;

/// Runs every check in order (each needs the previous ones) and returns them; stops at the
/// first failure.
pub fn run(bench: &mut Bench) -> Vec<Check> {
    let mut checks: Vec<Check> = Vec::new();
    let steps: [(&str, Step); 8] = [
        ("boot", boot),
        ("arp+icmp", ping),
        ("udp dns", dns),
        ("tcp lan->box", smtp_to_box),
        ("tcp box->lan smtp", smtp_from_box),
        ("tcp box->lan http", http_from_box),
        ("power cut + on", power_cycle),
        ("watchdog reset", watchdog),
    ];
    for (name, step) in steps {
        let t = Instant::now();
        let r = step(bench).map(|s| format!("{s} ({:.1}s)", t.elapsed().as_secs_f64()));
        let failed = r.is_err();
        println!(
            "{} {name:<18} {}",
            if failed { "FAIL" } else { "PASS" },
            r.as_ref().unwrap_or_else(|e| e)
        );
        checks.push((name.to_string(), r));
        if failed {
            break;
        }
    }
    checks
}

const READY: &str = "hil-devvm ready";

fn shell(
    bench: &mut Bench,
    command: &str,
    expect: &str,
    timeout: Duration,
) -> Result<String, String> {
    // The shell echoes the command (wrapped at 80 columns): `expect` must not occur in it.
    debug_assert!(!command.contains(expect));
    bench.serial.send_line(command).map_err(|e| e.to_string())?;
    bench
        .serial
        .expect(&Pattern::literal(expect), timeout)
        .map(|m| m.before.trim().lines().last().unwrap_or("").to_string())
        .map_err(|e| e.to_string())
}

fn boot(bench: &mut Bench) -> Result<String, String> {
    bench
        .transcripts_for("selftest")
        .map_err(|e| e.to_string())?;
    let t = Instant::now();
    bench.power.on().map_err(|e| e.to_string())?;
    bench
        .serial
        .expect(&boot_marker(), Duration::from_secs(120))
        .map_err(|e| e.to_string())?;
    bench
        .serial
        .expect(&Pattern::literal(READY), Duration::from_secs(180))
        .map_err(|e| e.to_string())?;
    // The shell's prompt follows; give it a moment so typed lines are not lost.
    std::thread::sleep(Duration::from_millis(500));
    Ok(format!(
        "serial shows {READY:?} {:.1}s after power on",
        t.elapsed().as_secs_f64()
    ))
}

fn ping(bench: &mut Bench) -> Result<String, String> {
    shell(
        bench,
        "ping -c 2 -W 5 192.0.2.1",
        "2 packets received",
        Duration::from_secs(30),
    )
    .map(|_| "the VM pings 192.0.2.1 (ARP + ICMP answered by smoltcp)".into())
}

fn dns(bench: &mut Bench) -> Result<String, String> {
    shell(
        bench,
        "nslookup -type=mx example.org 192.0.2.1",
        "mail exchanger = 10 mail.example.org",
        Duration::from_secs(30),
    )?;
    shell(
        bench,
        "nslookup mail.example.org 192.0.2.1",
        "Address: 192.0.2.25",
        Duration::from_secs(30),
    )
    .map(|_| "MX and A answers for example.org over UDP".into())
}

fn smtp_to_box(bench: &mut Bench) -> Result<String, String> {
    let (_, banner) = bench.wait_smtp_ready(Duration::from_secs(60))?;
    let msgs: Vec<OutgoingMessage> = (0..3)
        .map(|n| {
            OutgoingMessage::text(
                &format!("selftest-in-{n}"),
                "a@sender1.example.net",
                "b@example.org",
                "selftest",
                "body\r\n.dot\r\n",
            )
        })
        .collect();
    let report = bench
        .lan
        .send(0, (bench.box_ip(), 25), msgs)
        .wait(Duration::from_secs(60))
        .ok_or("the session did not end")?;
    let acked = report
        .outcomes
        .iter()
        .filter(|(_, o)| o.is_acknowledged())
        .count();
    if acked != 3 {
        return Err(format!("{acked} of 3 acknowledged: {report:?}"));
    }
    Ok(format!(
        "banner {banner}; 3 messages acknowledged by the VM's SMTP responder"
    ))
}

fn smtp_from_box(bench: &mut Bench) -> Result<String, String> {
    let session = "printf 'EHLO devvm\\r\\nMAIL FROM:<box@example.org>\\r\\nRCPT TO:<admin@example.org>\\r\\nDATA\\r\\nX-HIL-Id: selftest-out\\r\\nSubject: from the VM\\r\\n\\r\\n..dot-stuffed line\\r\\n.\\r\\nQUIT\\r\\n' | nc 192.0.2.25 25";
    shell(bench, session, "221 2.0.0 Bye", Duration::from_secs(30))?;
    let (got, ok) = bench
        .lan
        .mailbox()
        .wait_until(Duration::from_secs(10), |m| {
            m.iter()
                .any(|d| d.message.hil_id().as_deref() == Some("selftest-out"))
        });
    if !ok {
        return Err("the sink has no selftest-out message".into());
    }
    let d = got
        .iter()
        .find(|d| d.message.hil_id().as_deref() == Some("selftest-out"))
        .expect("checked");
    if !d.message.data.ends_with(b"\r\n.dot-stuffed line\r\n") {
        return Err(format!(
            "body not unstuffed: {:?}",
            String::from_utf8_lossy(&d.message.data)
        ));
    }
    Ok(format!(
        "the VM delivered a pipelined message to the sink from {}",
        d.client
    ))
}

fn http_from_box(bench: &mut Bench) -> Result<String, String> {
    shell(
        bench,
        "wget -q -O - http://192.0.2.80/hello.txt",
        "hello from the definitions server",
        Duration::from_secs(30),
    )
    .map(|_| "GET from the definitions server".into())
}

fn power_cycle(bench: &mut Bench) -> Result<String, String> {
    bench.power.cut().map_err(|e| e.to_string())?;
    bench.lan.abort_senders();
    let t = Instant::now();
    bench.power.on().map_err(|e| e.to_string())?;
    bench
        .serial
        .expect(&Pattern::literal(READY), Duration::from_secs(180))
        .map_err(|e| e.to_string())?;
    bench.wait_smtp_ready(Duration::from_secs(60))?;
    std::thread::sleep(Duration::from_millis(500));
    Ok(format!(
        "serial and LAN reattached; port 25 answers {:.1}s after power on",
        t.elapsed().as_secs_f64()
    ))
}

fn watchdog(bench: &mut Bench) -> Result<String, String> {
    // Reload the driver with a 5 s heartbeat, arm it by opening the device, never pet it.
    shell(
        bench,
        "rmmod i6300esb; insmod /lib/i6300esb.ko heartbeat=5 && echo driver' 'loaded",
        "driver loaded",
        Duration::from_secs(20),
    )?;
    bench
        .serial
        .send_line("exec 3>/dev/watchdog0; echo armed")
        .map_err(|e| e.to_string())?;
    let t = Instant::now();
    bench
        .serial
        .expect(&boot_marker(), Duration::from_secs(60))
        .map_err(|e| format!("no reset: {e}"))?;
    let reset = t.elapsed();
    bench
        .serial
        .expect(&Pattern::literal(READY), Duration::from_secs(180))
        .map_err(|e| e.to_string())?;
    Ok(format!(
        "i6300esb reset the VM {:.1}s after it was armed and left alone",
        reset.as_secs_f64()
    ))
}
