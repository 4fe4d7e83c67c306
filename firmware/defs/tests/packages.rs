//! Publisher → appliance scenarios: every refusal of `verify`, atomic install, rollback, and a
//! self-test failure that keeps the old definitions.

use std::path::{Path, PathBuf};

use chrono::{Duration, Utc};
use portcullis_defs::{
    BuildOptions, DefinitionsStore, DefsError, KnownSample, Limits, PinnedKey, PublisherKey,
    add_signature, build, build_with, verify,
};

const SAMPLE: &[u8] = b"this is a known bad sample";

struct Publisher {
    _dir: tempfile::TempDir,
    root: PathBuf,
    key: PublisherKey,
}

impl Publisher {
    fn new() -> Publisher {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let source = root.join("source");
        std::fs::create_dir(&source).unwrap();
        std::fs::write(
            source.join("test.ndb"),
            format!("Test.Known-1-0:0:*:{}\n", hex(SAMPLE)),
        )
        .unwrap();
        Publisher {
            _dir: dir,
            root,
            key: PublisherKey::generate(),
        }
    }

    fn package(&self, version: u64) -> PathBuf {
        let out = self.root.join(format!("pkg-{version}"));
        build(
            &self.root.join("source"),
            &self.key,
            version,
            Utc::now() + Duration::days(7),
            &out,
        )
        .unwrap();
        out
    }

    fn pinned(&self) -> Vec<PinnedKey> {
        vec![self.key.public()]
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn check(publisher: &Publisher, package: &Path, installed: Option<u64>) -> Result<(), DefsError> {
    verify(
        package,
        &publisher.pinned(),
        installed,
        Utc::now(),
        &Limits::default(),
    )
    .map(|_| ())
}

#[test]
fn a_freshly_built_package_verifies() {
    let publisher = Publisher::new();
    let package = publisher.package(5);
    let verified = verify(
        &package,
        &publisher.pinned(),
        Some(4),
        Utc::now(),
        &Limits::default(),
    )
    .unwrap();
    assert_eq!(verified.manifest.version, 5);
    assert_eq!(verified.signed_by, vec![publisher.key.key_id()]);
}

#[test]
fn unsigned_package_is_refused() {
    let publisher = Publisher::new();
    let package = publisher.package(1);
    std::fs::remove_file(package.join("manifest.sig")).unwrap();
    assert!(matches!(
        check(&publisher, &package, None),
        Err(DefsError::NotSigned { .. })
    ));
}

#[test]
fn package_signed_by_an_unpinned_key_is_refused() {
    let publisher = Publisher::new();
    let package = publisher.package(1);
    let stranger = vec![PublisherKey::generate().public()];
    let result = verify(&package, &stranger, None, Utc::now(), &Limits::default());
    assert!(matches!(result, Err(DefsError::UnknownSigner { .. })));
}

#[test]
fn altered_manifest_is_refused_as_wrongly_signed() {
    let publisher = Publisher::new();
    let package = publisher.package(1);
    let manifest = package.join("manifest.json");
    let text = std::fs::read_to_string(&manifest)
        .unwrap()
        .replace("\"version\": 1", "\"version\": 9");
    std::fs::write(&manifest, text).unwrap();
    assert!(matches!(
        check(&publisher, &package, None),
        Err(DefsError::SignatureInvalid { .. })
    ));
}

#[test]
fn version_not_newer_than_installed_is_refused_as_rollback() {
    let publisher = Publisher::new();
    let package = publisher.package(3);
    assert!(matches!(
        check(&publisher, &package, Some(3)),
        Err(DefsError::Rollback {
            offered: 3,
            installed: 3
        })
    ));
    assert!(matches!(
        check(&publisher, &package, Some(7)),
        Err(DefsError::Rollback { .. })
    ));
}

#[test]
fn expired_package_is_refused_as_a_freeze() {
    let publisher = Publisher::new();
    let package = publisher.package(1);
    let later = Utc::now() + Duration::days(8);
    let result = verify(
        &package,
        &publisher.pinned(),
        None,
        later,
        &Limits::default(),
    );
    assert!(matches!(result, Err(DefsError::Expired { .. })));
}

#[test]
fn file_from_another_package_is_refused_as_mix_and_match() {
    let publisher = Publisher::new();
    let package = publisher.package(1);
    let file = package.join("test.ndb");
    let original = std::fs::read(&file).unwrap();
    let mut swapped = original.clone();
    swapped[0] = b'X';
    std::fs::write(&file, &swapped).unwrap();
    assert!(matches!(
        check(&publisher, &package, None),
        Err(DefsError::FileHashMismatch { .. })
    ));
}

#[test]
fn truncated_or_extended_files_are_refused_by_size() {
    let publisher = Publisher::new();
    let package = publisher.package(1);
    let file = package.join("test.ndb");
    let original = std::fs::read(&file).unwrap();
    std::fs::write(&file, &original[..original.len() - 1]).unwrap();
    assert!(matches!(
        check(&publisher, &package, None),
        Err(DefsError::FileSizeMismatch { .. })
    ));
    let mut endless = original.clone();
    endless.extend(std::iter::repeat_n(b'A', 1 << 20));
    std::fs::write(&file, &endless).unwrap();
    let err = check(&publisher, &package, None).unwrap_err();
    assert!(
        matches!(err, DefsError::FileSizeMismatch { ref actual, .. } if actual.starts_with("more than")),
        "{err}"
    );
}

#[test]
fn missing_file_is_refused() {
    let publisher = Publisher::new();
    let package = publisher.package(1);
    std::fs::remove_file(package.join("test.ndb")).unwrap();
    assert!(matches!(
        check(&publisher, &package, None),
        Err(DefsError::FileMissing { .. })
    ));
}

#[test]
fn oversize_files_and_manifests_are_refused_by_the_limits() {
    let publisher = Publisher::new();
    let package = publisher.package(1);
    let tight = Limits {
        max_file_bytes: 10,
        ..Limits::default()
    };
    let result = verify(&package, &publisher.pinned(), None, Utc::now(), &tight);
    assert!(matches!(result, Err(DefsError::FileTooLarge { .. })));
    let tight = Limits {
        max_total_bytes: 10,
        ..Limits::default()
    };
    let result = verify(&package, &publisher.pinned(), None, Utc::now(), &tight);
    assert!(matches!(result, Err(DefsError::PackageTooLarge { .. })));
    let tight = Limits {
        max_manifest_bytes: 10,
        ..Limits::default()
    };
    let result = verify(&package, &publisher.pinned(), None, Utc::now(), &tight);
    assert!(matches!(result, Err(DefsError::ManifestTooLarge { .. })));
}

#[test]
fn rotation_package_signed_by_old_and_new_key_verifies_with_either_pinned() {
    let publisher = Publisher::new();
    let package = publisher.package(2);
    let new_key = PublisherKey::generate();
    add_signature(&package, &new_key).unwrap();
    for pinned in [vec![publisher.key.public()], vec![new_key.public()]] {
        verify(&package, &pinned, None, Utc::now(), &Limits::default()).unwrap();
    }
}

#[test]
fn install_switches_current_keeps_previous_and_rollback_returns_to_it() {
    let publisher = Publisher::new();
    let store_dir = tempfile::tempdir().unwrap();
    let store = DefinitionsStore::open(store_dir.path()).unwrap();
    let limits = Limits::default();

    let first = store
        .install(
            &publisher.package(1),
            &publisher.pinned(),
            Utc::now(),
            &limits,
        )
        .unwrap();
    assert_eq!(first.version.version, 1);
    assert_eq!(first.engine.scan(SAMPLE)[0].name, "Test.Known-1-0");
    let second = store
        .install(
            &publisher.package(2),
            &publisher.pinned(),
            Utc::now(),
            &limits,
        )
        .unwrap();
    assert_eq!(second.version.version, 2);

    let status = store.status().unwrap();
    assert_eq!(status.current.as_ref().map(|v| v.version), Some(2));
    assert_eq!(status.previous.as_ref().map(|v| v.version), Some(1));
    assert_eq!(
        store.current_dir(),
        Some(store_dir.path().join("versions/00000000000000000002"))
    );

    // Version 1 again is a rollback attack, even though it is validly signed.
    let replay = store.install(
        &publisher.root.join("pkg-1"),
        &publisher.pinned(),
        Utc::now(),
        &limits,
    );
    assert!(matches!(
        replay,
        Err(DefsError::Rollback {
            offered: 1,
            installed: 2
        })
    ));

    let back = store.rollback().unwrap();
    assert_eq!(back.version, 1);
    let status = store.status().unwrap();
    assert_eq!(status.current.map(|v| v.version), Some(1));
    assert!(status.previous.is_none());
    assert_eq!(
        status.highest_version, 2,
        "the rollback mark stays at the highest version seen"
    );
    assert!(matches!(
        store.rollback(),
        Err(DefsError::NoPreviousVersion)
    ));
    let (engine, _) = store.load_current().unwrap().unwrap();
    assert_eq!(engine.scan(SAMPLE)[0].name, "Test.Known-1-0");

    // The bad version 2 must be superseded by a newer one.
    store
        .install(
            &publisher.package(3),
            &publisher.pinned(),
            Utc::now(),
            &limits,
        )
        .unwrap();
    assert_eq!(store.status().unwrap().current.map(|v| v.version), Some(3));
}

#[test]
fn failed_verification_leaves_the_store_untouched() {
    let publisher = Publisher::new();
    let store_dir = tempfile::tempdir().unwrap();
    let store = DefinitionsStore::open(store_dir.path()).unwrap();
    store
        .install(
            &publisher.package(1),
            &publisher.pinned(),
            Utc::now(),
            &Limits::default(),
        )
        .unwrap();
    let bad = publisher.package(2);
    std::fs::write(bad.join("test.ndb"), "tampered").unwrap();
    let result = store.install(&bad, &publisher.pinned(), Utc::now(), &Limits::default());
    assert!(result.is_err());
    let status = store.status().unwrap();
    assert_eq!(status.current.map(|v| v.version), Some(1));
    assert_eq!(status.highest_version, 1);
    assert_eq!(
        std::fs::read_dir(store_dir.path().join("staging"))
            .unwrap()
            .count(),
        0
    );
}

#[test]
fn self_test_failure_refuses_the_install_and_keeps_the_old_set() {
    let publisher = Publisher::new();
    let store_dir = tempfile::tempdir().unwrap();
    let store = DefinitionsStore::open(store_dir.path()).unwrap();
    store
        .install(
            &publisher.package(1),
            &publisher.pinned(),
            Utc::now(),
            &Limits::default(),
        )
        .unwrap();

    // A publisher mistake the publisher-side check cannot see: a known sample that the set does
    // not detect is caught on the appliance before the switch.
    let out = publisher.root.join("pkg-bad");
    let options = BuildOptions {
        version: 2,
        created: Utc::now(),
        expires: Utc::now() + Duration::days(7),
        known_samples: vec![KnownSample {
            hex: hex(b"not in the set"),
            expect: "Missing.Sig".into(),
        }],
    };
    let built = build_with(
        &publisher.root.join("source"),
        &[&publisher.key],
        &options,
        &out,
    );
    assert!(
        matches!(built, Err(DefsError::SelfTestFailed { .. })),
        "the publisher is stopped first"
    );

    // An over-broad signature (matches clean mail) that slipped past a publisher anyway.
    let source = publisher.root.join("broad");
    std::fs::create_dir(&source).unwrap();
    std::fs::write(source.join("broad.ndb"), "Too.Broad:0:*:0000\n").unwrap();
    let built = build(
        &source,
        &publisher.key,
        2,
        Utc::now() + Duration::days(7),
        &publisher.root.join("pkg-broad"),
    );
    assert!(matches!(built, Err(DefsError::SelfTestFailed { .. })));

    // A validly signed package whose self-test fails on the appliance (here: it demands more
    // signatures than load, as when an older engine skips lines it does not understand).
    let package = publisher.package(2);
    let manifest = package.join("manifest.json");
    let text = std::fs::read_to_string(&manifest)
        .unwrap()
        .replace("\"min_signatures\": 1", "\"min_signatures\": 1000");
    std::fs::write(&manifest, text).unwrap();
    std::fs::remove_file(package.join("manifest.sig")).unwrap();
    add_signature(&package, &publisher.key).unwrap();
    verify(
        &package,
        &publisher.pinned(),
        Some(1),
        Utc::now(),
        &Limits::default(),
    )
    .unwrap();
    let result = store.install(
        &package,
        &publisher.pinned(),
        Utc::now(),
        &Limits::default(),
    );
    assert!(
        matches!(result, Err(DefsError::SelfTestFailed { .. })),
        "{result:?}"
    );
    let status = store.status().unwrap();
    assert_eq!(status.current.map(|v| v.version), Some(1));
    assert_eq!(status.highest_version, 1);
}
