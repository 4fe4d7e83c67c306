//! Generates a large signature set (1,000,000 MD5 hashes and 100,000 byte patterns), loads it,
//! and prints the load time, the memory held, and the scan speed.
//!
//! Run with `cargo run --release -p portcullis-av --example large_set [HASHES PATTERNS]`.
//! Timings are printed, not asserted: they depend on the machine.

use std::io::{BufWriter, Write};
use std::time::Instant;

use portcullis_av::Engine;

/// A small deterministic generator (xorshift), so runs are comparable and no crate is needed.
struct Xorshift(u64);

impl Xorshift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn byte(&mut self) -> u8 {
        (self.next() >> 24) as u8
    }
}

/// A line of /proc/self/status in kB (`VmRSS`, `VmHWM`), or 0 off Linux.
fn proc_status_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
        })
        .unwrap_or(0)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let hashes: usize = args
        .next()
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(1_000_000);
    let patterns: usize = args
        .next()
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(100_000);
    let dir = tempfile::tempdir()?;
    let mut rng = Xorshift(0x9e37_79b9_7f4a_7c15);

    let started = Instant::now();
    let mut hdb = BufWriter::new(std::fs::File::create(dir.path().join("generated.hdb"))?);
    for i in 0..hashes {
        let digest: Vec<u8> = (0..16).map(|_| rng.byte()).collect();
        let size = 1000 + rng.next() % 5_000_000;
        // Real names look like Win.Trojan.Agent-6383497-0: a family shared by many, a number.
        writeln!(
            hdb,
            "{}:{size}:Win.Trojan.Family{}-{}-0",
            hex::encode(digest),
            i % 500,
            1_000_000 + i
        )?;
    }
    hdb.flush()?;
    let mut ndb = BufWriter::new(std::fs::File::create(dir.path().join("generated.ndb"))?);
    for i in 0..patterns {
        let mut body = String::new();
        let parts = 1 + rng.next() % 3;
        for part in 0..parts {
            if part > 0 {
                body.push_str(match rng.next() % 3 {
                    0 => "*",
                    1 => "{4-32}",
                    _ => "??",
                });
            }
            for _ in 0..(8 + rng.next() % 24) {
                body.push_str(&format!("{:02x}", rng.byte()));
            }
        }
        let offset = if i % 10 == 0 { "0" } else { "*" };
        writeln!(
            ndb,
            "Unix.Malware.Family{}-{}-1:0:{offset}:{body}",
            i % 200,
            2_000_000 + i
        )?;
    }
    ndb.flush()?;
    println!(
        "generated {hashes} hashes and {patterns} patterns in {:.2?}",
        started.elapsed()
    );

    let rss_before = proc_status_kb("VmRSS:");
    let started = Instant::now();
    let (engine, report) = Engine::load(dir.path())?;
    let load_time = started.elapsed();
    let rss_after = proc_status_kb("VmRSS:");
    let counts = engine.signature_counts();
    println!(
        "loaded {} signatures ({} file hashes, {} patterns, {} lines skipped) in {load_time:.2?}",
        counts.total(),
        counts.file_hashes,
        counts.patterns,
        report.skipped()
    );
    println!(
        "engine memory: {:.1} MB by its own count; RSS grew {:.1} MB ({:.1} MB -> {:.1} MB), peak RSS {:.1} MB",
        engine.memory_bytes() as f64 / 1e6,
        (rss_after.saturating_sub(rss_before)) as f64 / 1024.0,
        rss_before as f64 / 1024.0,
        rss_after as f64 / 1024.0,
        proc_status_kb("VmHWM:") as f64 / 1024.0
    );

    let data: Vec<u8> = (0..64 * 1024 * 1024).map(|_| rng.byte()).collect();
    let started = Instant::now();
    let found = engine.scan(&data);
    let elapsed = started.elapsed();
    println!(
        "scanned 64 MiB of random data in {elapsed:.2?} ({:.0} MB/s), {} detections",
        data.len() as f64 / 1e6 / elapsed.as_secs_f64(),
        found.len()
    );
    Ok(())
}
