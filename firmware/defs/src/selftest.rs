//! The self-test every new definitions set must pass before it replaces the old one.
//!
//! It proves the set loaded and behaves: EICAR is detected (alone and inside a message), the
//! publisher's known samples are detected under their names, at least as many signatures loaded
//! as the publisher saw, and clean samples stay clean (a broken, over-broad signature that
//! matches everything would otherwise reject all mail).

use serde::{Deserialize, Serialize};

use portcullis_av::{EICAR, EICAR_NAME, Engine, LoadReport};

use crate::DefsError;

/// What the publisher requires of a loaded set (part of the signed manifest).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SelfTestSpec {
    /// At least this many signature lines must load (catches truncated or half-parsed sets).
    #[serde(default)]
    pub min_signatures: u64,
    /// Samples that must be detected.
    #[serde(default)]
    pub samples: Vec<KnownSample>,
}

/// A small sample and the detection name it must produce.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KnownSample {
    /// The sample's bytes in hex (keep samples small: they travel in the manifest).
    pub hex: String,
    /// The detection name expected.
    pub expect: String,
}

/// Content that no sane signature set may flag.
fn clean_samples() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        (
            "plain text message",
            b"From: alice@example.org\r\nTo: bob@example.org\r\nSubject: lunch\r\n\r\nSee you at noon.\r\n".to_vec(),
        ),
        ("64 KiB of zeros", vec![0u8; 64 * 1024]),
        ("64 KiB of spaces", vec![b' '; 64 * 1024]),
        ("empty file", Vec::new()),
        ("minimal PDF", b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n".to_vec()),
        ("PNG header", b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0".to_vec()),
    ]
}

/// Runs the self-test; `Err(SelfTestFailed)` says what went wrong.
pub fn self_test(
    engine: &Engine,
    report: &LoadReport,
    spec: &SelfTestSpec,
) -> Result<(), DefsError> {
    let fail = |reason: String| {
        tracing::warn!(reason, "definitions self-test failed");
        Err(DefsError::SelfTestFailed { reason })
    };
    if !engine.scan(EICAR).iter().any(|d| d.name == EICAR_NAME) {
        return fail("EICAR test file not detected".into());
    }
    let mut message = b"Subject: test\r\n\r\n".to_vec();
    message.extend_from_slice(EICAR);
    if engine.scan(&message).is_empty() {
        return fail("EICAR inside a message not detected".into());
    }
    if report.loaded() < spec.min_signatures {
        return fail(format!(
            "only {} signatures loaded, the publisher expects at least {}",
            report.loaded(),
            spec.min_signatures
        ));
    }
    for sample in &spec.samples {
        let Ok(data) = hex::decode(&sample.hex) else {
            return fail(format!(
                "known sample for {} is not valid hex",
                sample.expect
            ));
        };
        if !engine.scan(&data).iter().any(|d| d.name == sample.expect) {
            return fail(format!("known sample {} not detected", sample.expect));
        }
    }
    for (what, data) in clean_samples() {
        if let Some(detection) = engine.scan(&data).first() {
            return fail(format!(
                "clean sample ({what}) detected as {}",
                detection.name
            ));
        }
    }
    tracing::info!(
        signatures = report.loaded(),
        known_samples = spec.samples.len(),
        "definitions self-test passed"
    );
    Ok(())
}
