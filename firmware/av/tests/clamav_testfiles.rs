//! Detection of ClamAV's own test files (Debian package `clamav-testfiles`) with ClamAV's test
//! signature written as an .hdb line. Skips with a message when the package is not installed
//! (`apt-get install -y clamav-testfiles`).

use std::path::Path;

use portcullis_av::{Engine, EngineBuilder, SignatureFormat};

const TESTFILES: &str = "/usr/share/clamav-testfiles";

/// md5 and size of clam.exe as shipped by ClamAV, the hash-signature test in ClamAV's own suite.
const CLAM_EXE_HDB: &str = "aa15bcf478d165efd2065190eb473bcb:544:ClamAV-Test-File\n";

fn engine() -> Engine {
    let mut builder = EngineBuilder::new();
    builder.add_text(SignatureFormat::Hdb, "clamav-test.hdb", CLAM_EXE_HDB);
    builder.build().expect("engine builds").0
}

#[test]
fn clamav_test_signature_detects_clam_exe() {
    let path = Path::new(TESTFILES).join("clam.exe");
    let Ok(data) = std::fs::read(&path) else {
        eprintln!(
            "skipped: {} not found (apt-get install -y clamav-testfiles)",
            path.display()
        );
        return;
    };
    let found = engine().scan(&data);
    assert_eq!(found.len(), 1, "clam.exe must be detected");
    assert_eq!(found[0].name, "ClamAV-Test-File");
}

#[test]
fn every_plain_copy_of_clam_exe_in_the_testfiles_is_detected_and_containers_need_decomposition() {
    let Ok(entries) = std::fs::read_dir(TESTFILES) else {
        eprintln!("skipped: {TESTFILES} not found (apt-get install -y clamav-testfiles)");
        return;
    };
    let engine = engine();
    let mut detected = Vec::new();
    let mut needs_decomposition = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Ok(data) = std::fs::read(entry.path()) else {
            continue;
        };
        if engine.scan(&data).is_empty() {
            needs_decomposition.push(name);
        } else {
            detected.push(name);
        }
    }
    detected.sort();
    needs_decomposition.sort();
    eprintln!("detected as whole files: {detected:?}");
    eprintln!(
        "containers/packed (need the decomposition crate or unpackers): {needs_decomposition:?}"
    );
    assert!(detected.contains(&"clam.exe".to_string()));
}
