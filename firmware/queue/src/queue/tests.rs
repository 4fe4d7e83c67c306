use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio::io::AsyncWriteExt;

use super::*;
use crate::draft::SPILL_AT;
use crate::envelope::ClientInfo;

fn envelope(recipients: &[&str]) -> Envelope {
    Envelope {
        sender: "alice@example.org".into(),
        recipients: recipients.iter().map(|r| r.to_string()).collect(),
        smtputf8: false,
        eight_bit: false,
        received_at: Utc::now(),
        client: Some(ClientInfo {
            ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            helo: Some("client.example.org".into()),
            tls: None,
            session_id: 7,
        }),
    }
}

fn body(tag: &str) -> Vec<u8> {
    format!("Message-ID: <{tag}@example.org>\r\nSubject: test {tag}\r\n\r\nHello {tag}\r\n")
        .into_bytes()
}

/// Opens the queue, waiting briefly for sled's file lock: after a `drop` in the same process,
/// sled's background threads may hold the previous instance for a few milliseconds more.
fn open(dir: &Path) -> (Queue, Recovery) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match Queue::open(dir, QueueConfig::default()) {
            Err(QueueError::State(message))
                if message.contains("lock") && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            result => return result.expect("queue opens"),
        }
    }
}

async fn commit(queue: &Queue, recipients: &[&str], tag: &str) -> QueueEntry {
    let mut draft = queue.draft(envelope(recipients)).unwrap();
    draft.write_all(&body(tag)).await.unwrap();
    queue.commit(draft).await.unwrap()
}

fn delivered() -> RecipientStatus {
    RecipientStatus::Delivered {
        at: Utc::now(),
        reply: "250 2.0.0 Ok".into(),
    }
}

#[tokio::test]
async fn committed_message_is_found_after_reopen_with_its_bytes_and_headers() {
    let dir = tempfile::tempdir().unwrap();
    let (queue, _) = open(dir.path());
    let entry = commit(&queue, &["bob@example.com"], "one").await;
    assert_eq!(entry.kind, QueueKind::Incoming);
    assert_eq!(entry.size, body("one").len() as u64);
    assert_eq!(entry.message_id.as_deref(), Some("one@example.org"));
    assert_eq!(entry.subject.as_deref(), Some("test one"));
    drop(queue);

    let (queue, recovery) = open(dir.path());
    assert_eq!(recovery.messages, 1);
    assert_eq!(recovery.rebuilt_entries, 0);
    // A logged message's entry is rebuilt from its log records, due now.
    let reopened = queue.get(&entry.id).unwrap();
    assert!(reopened.next_attempt >= entry.next_attempt);
    assert_eq!(
        QueueEntry {
            next_attempt: entry.next_attempt,
            ..reopened
        },
        entry
    );
    assert_eq!(queue.read_message(&entry.id).await.unwrap(), body("one"));
    // Fresh mail lives in the message log: no spool file, but readable whole.
    assert!(queue.message_path(&entry.id).is_none());
    assert_eq!(queue.log_index().await.len(), 1);
    assert_eq!(
        &queue.small_message(&entry.id).await.unwrap()[..],
        &body("one")[..]
    );
    queue.persist(&entry.id).await;
    assert_eq!(queue.log_index().await.len(), 0);
    let (path, offset) = queue.message_path(&entry.id).unwrap();
    assert_eq!(
        std::fs::read(path).unwrap()[offset as usize..],
        body("one")[..]
    );
    assert_eq!(
        queue.tracking().get(&entry.id).unwrap().events[0].kind,
        "received"
    );
}

#[tokio::test]
async fn unfinished_drafts_in_tmp_are_deleted_at_startup() {
    let dir = tempfile::tempdir().unwrap();
    let (queue, _) = open(dir.path());
    let mut draft = queue.draft(envelope(&["bob@example.com"])).unwrap();
    // Large enough to be spilled to tmp/ while it arrives (small drafts live in memory).
    draft.write_all(b"Subject: half\r\n\r\n").await.unwrap();
    draft.write_all(&vec![b'x'; 2 * SPILL_AT]).await.unwrap();
    draft.flush().await.unwrap();
    let tmp = queue.layout().file(SpoolDir::Tmp, draft.id());
    // Simulate a crash: the draft is neither committed nor dropped.
    std::mem::forget(draft);
    assert!(tmp.exists());
    drop(queue);

    let (queue, recovery) = open(dir.path());
    assert_eq!(recovery.tmp_deleted, 1);
    assert_eq!(recovery.messages, 0);
    assert!(!tmp.exists());
    assert!(queue.list().is_empty());
}

#[tokio::test]
async fn discarded_and_dropped_drafts_leave_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let (queue, _) = open(dir.path());
    let draft = queue.draft(envelope(&["bob@example.com"])).unwrap();
    let tmp = queue.layout().file(SpoolDir::Tmp, draft.id());
    queue.discard(draft).await;
    assert!(!tmp.exists());
    let draft = queue.draft(envelope(&["bob@example.com"])).unwrap();
    let tmp = queue.layout().file(SpoolDir::Tmp, draft.id());
    drop(draft);
    assert!(!tmp.exists());
    for discard in [true, false] {
        let mut draft = queue.draft(envelope(&["bob@example.com"])).unwrap();
        draft.write_all(&vec![b'x'; SPILL_AT + 1]).await.unwrap();
        draft.flush().await.unwrap();
        let tmp = queue.layout().file(SpoolDir::Tmp, draft.id());
        assert!(tmp.exists(), "a large draft is spilled to tmp/");
        if discard {
            queue.discard(draft).await;
        } else {
            drop(draft);
        }
        assert!(!tmp.exists());
    }
}

#[tokio::test]
async fn a_large_message_spilled_while_it_arrived_is_committed_intact() {
    let dir = tempfile::tempdir().unwrap();
    let (queue, _) = open(dir.path());
    let mut message = body("large");
    for i in 0..200_000 {
        message.extend_from_slice(format!("line {i}\r\n").as_bytes());
    }
    assert!(message.len() > 2 * SPILL_AT);
    let mut draft = queue.draft(envelope(&["bob@example.com"])).unwrap();
    for chunk in message.chunks(8192) {
        draft.write_all(chunk).await.unwrap();
    }
    let entry = queue.commit(draft).await.unwrap();
    assert_eq!(entry.size, message.len() as u64);
    assert_eq!(entry.message_id.as_deref(), Some("large@example.org"));
    assert!(queue.layout().file(SpoolDir::Active, &entry.id).exists());
    assert!(queue.read_message(&entry.id).await.unwrap() == message);
    drop(queue);
    let (queue, _) = open(dir.path());
    assert!(queue.read_message(&entry.id).await.unwrap() == message);
}

#[tokio::test]
async fn a_small_message_is_served_from_memory_until_it_leaves_the_queue() {
    let dir = tempfile::tempdir().unwrap();
    let (queue, _) = open(dir.path());
    let entry = commit(&queue, &["bob@example.com"], "cached").await;
    let cached = queue.cached_message(&entry.id).expect("kept in memory");
    assert_eq!(&cached[..], &body("cached")[..]);
    assert_eq!(
        &queue.message_bytes(&entry.id).await.unwrap()[..],
        &body("cached")[..]
    );
    let mut attempt = queue.begin_attempt(&entry.id).await.unwrap();
    attempt.recipients[0].status = delivered();
    queue.end_attempt(attempt).await.unwrap();
    assert!(queue.cached_message(&entry.id).is_none());
    assert!(queue.message_bytes(&entry.id).await.is_err());
}

#[tokio::test]
async fn entries_are_rebuilt_from_spool_files_when_the_state_database_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let (queue, _) = open(dir.path());
    let active = commit(&queue, &["bob@example.com", "carol@example.com"], "a").await;
    let held = commit(&queue, &["dave@example.com"], "h").await;
    queue.persist(&active.id).await;
    queue.hold(&held.id, "admin").await.unwrap();
    drop(queue);
    std::fs::remove_dir_all(dir.path().join("state")).unwrap();

    let (queue, recovery) = open(dir.path());
    assert_eq!(recovery.rebuilt_entries, 2);
    assert_eq!(recovery.messages, 2);
    let rebuilt = queue.get(&active.id).unwrap();
    assert_eq!(rebuilt.kind, QueueKind::Incoming);
    assert_eq!(rebuilt.envelope, active.envelope);
    assert_eq!(rebuilt.size, active.size);
    assert_eq!(rebuilt.message_id, active.message_id);
    assert!(
        rebuilt
            .recipients
            .iter()
            .all(|r| r.status == RecipientStatus::Pending)
    );
    assert_eq!(queue.get(&held.id).unwrap().kind, QueueKind::Hold);
    assert_eq!(
        queue.counts(),
        QueueCounts {
            incoming: 1,
            deferred: 0,
            hold: 1
        }
    );
}

#[tokio::test]
async fn entries_without_spool_file_are_removed_at_startup() {
    let dir = tempfile::tempdir().unwrap();
    let (queue, _) = open(dir.path());
    let entry = commit(&queue, &["bob@example.com"], "o").await;
    let logged = commit(&queue, &["bob@example.com"], "l").await;
    queue.persist(&entry.id).await;
    let path = queue.layout().file(SpoolDir::Active, &entry.id);
    drop(queue);
    std::fs::remove_file(path).unwrap();
    for segment in std::fs::read_dir(dir.path().join("log")).unwrap() {
        std::fs::remove_file(segment.unwrap().path()).unwrap();
    }

    let (queue, recovery) = open(dir.path());
    // The logged message had no entry in sled: nothing to remove there.
    assert_eq!(recovery.removed_orphans, 1);
    assert_eq!(recovery.messages, 0);
    assert!(queue.get(&entry.id).is_none());
    assert!(queue.get(&logged.id).is_none());
}

#[tokio::test]
async fn hold_survives_reopen_and_release_makes_the_message_due() {
    let dir = tempfile::tempdir().unwrap();
    let (queue, _) = open(dir.path());
    let entry = commit(&queue, &["bob@example.com"], "h").await;
    queue.hold(&entry.id, "looks odd").await.unwrap();
    assert!(queue.layout().file(SpoolDir::Hold, &entry.id).exists());
    assert!(!queue.layout().file(SpoolDir::Active, &entry.id).exists());
    assert!(queue.due(Utc::now(), 10).is_empty());
    assert!(matches!(
        queue.begin_attempt(&entry.id).await,
        Err(QueueError::Held(_))
    ));
    drop(queue);

    let (queue, _) = open(dir.path());
    let held = queue.get(&entry.id).unwrap();
    assert_eq!(held.kind, QueueKind::Hold);
    assert_eq!(held.hold_reason.as_deref(), Some("looks odd"));
    assert_eq!(queue.read_message(&entry.id).await.unwrap(), body("h"));

    queue.release(&entry.id).await.unwrap();
    assert!(matches!(
        queue.release(&entry.id).await,
        Err(QueueError::NotHeld(_))
    ));
    let released = queue.get(&entry.id).unwrap();
    assert_eq!(released.kind, QueueKind::Incoming);
    assert_eq!(released.hold_reason, None);
    assert!(queue.layout().file(SpoolDir::Active, &entry.id).exists());
    assert_eq!(queue.due(Utc::now(), 10).len(), 1);
    let kinds: Vec<String> = queue
        .tracking()
        .get(&entry.id)
        .unwrap()
        .events
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(kinds, ["received", "held", "released"]);
}

#[tokio::test]
async fn a_file_in_hold_whose_entry_says_active_is_treated_as_held() {
    let dir = tempfile::tempdir().unwrap();
    let (queue, _) = open(dir.path());
    let entry = commit(&queue, &["bob@example.com"], "x").await;
    queue.persist(&entry.id).await;
    let (active, hold) = (
        queue.layout().file(SpoolDir::Active, &entry.id),
        queue.layout().file(SpoolDir::Hold, &entry.id),
    );
    drop(queue);
    // A crash between the rename and the entry update of `hold`.
    std::fs::rename(active, hold).unwrap();
    let (queue, _) = open(dir.path());
    assert_eq!(queue.get(&entry.id).unwrap().kind, QueueKind::Hold);
}

#[tokio::test]
async fn interrupted_attempts_count_as_duplicates_and_three_crashes_hold_the_message_as_suspect() {
    let dir = tempfile::tempdir().unwrap();
    let (queue, _) = open(dir.path());
    let entry = commit(&queue, &["bob@example.com"], "s").await;
    drop(queue);
    for crash in 1..=3u32 {
        let (queue, _) = open(dir.path());
        let attempt = queue.begin_attempt(&entry.id).await.unwrap();
        assert!(attempt.in_flight);
        assert!(
            queue.due(Utc::now(), 10).is_empty(),
            "an in-flight message is not due"
        );
        assert!(matches!(
            queue.begin_attempt(&entry.id).await,
            Err(QueueError::InFlight(_))
        ));
        // The process "dies" here: no end_attempt.
        drop(queue);
        let (queue, recovery) = open(dir.path());
        assert_eq!(recovery.possibly_duplicated, 1);
        let after = queue.get(&entry.id).unwrap();
        assert_eq!(after.crashes, crash);
        assert!(!after.in_flight);
        if crash < 3 {
            assert!(recovery.suspects_held.is_empty());
            assert_eq!(after.kind, QueueKind::Incoming);
        } else {
            assert_eq!(recovery.suspects_held, vec![entry.id.clone()]);
            assert_eq!(after.kind, QueueKind::Hold);
            assert!(after.hold_reason.unwrap().starts_with("suspect"));
            assert!(queue.layout().file(SpoolDir::Hold, &entry.id).exists());
        }
    }
    let (queue, recovery) = open(dir.path());
    assert_eq!(recovery.possibly_duplicated, 0);
    queue.release(&entry.id).await.unwrap();
    assert_eq!(queue.get(&entry.id).unwrap().crashes, 0);
}

#[tokio::test]
async fn end_attempt_with_every_recipient_final_removes_file_and_entry() {
    let dir = tempfile::tempdir().unwrap();
    let (queue, _) = open(dir.path());
    let entry = commit(&queue, &["bob@example.com", "carol@example.com"], "d").await;
    let mut attempt = queue.begin_attempt(&entry.id).await.unwrap();
    attempt.recipients[0].status = delivered();
    attempt.recipients[1].status = RecipientStatus::Bounced {
        at: Utc::now(),
        reply: "550 5.1.1 no".into(),
    };
    attempt.attempts += 1;
    queue.end_attempt(attempt).await.unwrap();
    assert!(queue.get(&entry.id).is_none());
    assert!(!queue.layout().file(SpoolDir::Active, &entry.id).exists());
    assert_eq!(
        queue.tracking().get(&entry.id).unwrap().outcome,
        Some(Outcome::PartiallyDelivered)
    );
    drop(queue);
    let (_, recovery) = open(dir.path());
    assert_eq!(recovery.messages, 0);
}

#[tokio::test]
async fn end_attempt_with_some_recipients_deferred_keeps_the_file_and_records_the_result() {
    let dir = tempfile::tempdir().unwrap();
    let (queue, _) = open(dir.path());
    let entry = commit(&queue, &["bob@example.com", "carol@example.com"], "p").await;
    let mut attempt = queue.begin_attempt(&entry.id).await.unwrap();
    let later = Utc::now() + chrono::Duration::minutes(5);
    attempt.recipients[0].status = delivered();
    attempt.recipients[1].status = RecipientStatus::Deferred {
        at: Utc::now(),
        reply: "451 4.3.0 later".into(),
    };
    attempt.attempts = 1;
    attempt.kind = QueueKind::Deferred;
    attempt.next_attempt = later;
    attempt.last_error = Some("451 4.3.0 later".into());
    queue.end_attempt(attempt).await.unwrap();
    drop(queue);

    let (queue, recovery) = open(dir.path());
    assert_eq!(recovery.possibly_duplicated, 0);
    let stored = queue.get(&entry.id).unwrap();
    assert!(queue.layout().file(SpoolDir::Active, &entry.id).exists());
    assert_eq!(stored.kind, QueueKind::Deferred);
    assert!(!stored.in_flight);
    assert_eq!(stored.attempts, 1);
    assert_eq!(stored.next_attempt, later);
    assert!(stored.recipients[0].status.is_final());
    assert!(queue.due(Utc::now(), 10).is_empty());
    assert_eq!(queue.retry_all_now(), 1);
    assert_eq!(queue.due(Utc::now(), 10).len(), 1);
}

#[tokio::test]
async fn delete_removes_file_entry_and_records_the_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let (queue, _) = open(dir.path());
    let entry = commit(&queue, &["bob@example.com"], "del").await;
    queue.hold(&entry.id, "spam").await.unwrap();
    queue.delete(&entry.id).await.unwrap();
    assert!(queue.get(&entry.id).is_none());
    assert!(!queue.layout().file(SpoolDir::Hold, &entry.id).exists());
    assert!(matches!(
        queue.delete(&entry.id).await,
        Err(QueueError::NotFound(_))
    ));
    assert_eq!(
        queue.tracking().get(&entry.id).unwrap().outcome,
        Some(Outcome::Deleted)
    );
}

#[tokio::test]
async fn corrupt_spool_files_are_moved_to_corrupt_and_startup_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let (queue, _) = open(dir.path());
    let good = commit(&queue, &["bob@example.com"], "good").await;
    let bad_magic = QueueId::generate();
    let bad_json = QueueId::generate();
    std::fs::write(
        queue.layout().file(SpoolDir::Active, &bad_magic),
        b"garbage\n",
    )
    .unwrap();
    std::fs::write(
        queue.layout().file(SpoolDir::Hold, &bad_json),
        b"PORTCULLIS-SPOOL 1\n{\"sender\":\n",
    )
    .unwrap();
    std::fs::write(
        queue.layout().dir(SpoolDir::Active).join("notes.txt"),
        b"hello",
    )
    .unwrap();
    drop(queue);

    let (queue, recovery) = open(dir.path());
    assert_eq!(recovery.corrupt, 3);
    assert_eq!(recovery.messages, 1);
    assert!(queue.get(&good.id).is_some());
    let corrupt = dir.path().join("corrupt");
    assert!(corrupt.join(bad_magic.as_str()).exists());
    assert!(corrupt.join(bad_json.as_str()).exists());
    assert!(corrupt.join("notes.txt").exists());
    assert_eq!(
        std::fs::read(corrupt.join(bad_magic.as_str())).unwrap(),
        b"garbage\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_commit_needs_far_fewer_directory_fsyncs_than_commits() {
    const COMMITS: usize = 200;
    let dir = tempfile::tempdir().unwrap();
    let (queue, _) = open(dir.path());
    let tasks: Vec<_> = (0..COMMITS)
        .map(|n| {
            let queue = queue.clone();
            tokio::spawn(
                async move { commit(&queue, &["bob@example.com"], &format!("g{n}")).await },
            )
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let (fsyncs, log_syncs) = (queue.dir_fsyncs(), queue.log_syncs());
    eprintln!(
        "{COMMITS} concurrent commits needed {log_syncs} log syncs and {fsyncs} directory fsyncs"
    );
    assert_eq!(queue.list().len(), COMMITS);
    assert_eq!(queue.log_index().await.len(), COMMITS);
    assert!(
        log_syncs > 0 && log_syncs * 4 <= COMMITS as u64,
        "{log_syncs} log syncs for {COMMITS} commits"
    );
    // The log's directory is synced when a segment starts, not per message; active/ not at all.
    assert_eq!(fsyncs, 0);
}

#[tokio::test]
async fn without_fsync_no_directory_is_synced() {
    let dir = tempfile::tempdir().unwrap();
    let (queue, _) = Queue::open(
        dir.path(),
        QueueConfig {
            fsync: false,
            ..QueueConfig::default()
        },
    )
    .unwrap();
    commit(&queue, &["bob@example.com"], "nofsync").await;
    assert_eq!(queue.dir_fsyncs(), 0);
}

#[tokio::test]
async fn a_draft_whose_write_failed_is_refused_at_commit() {
    let dir = tempfile::tempdir().unwrap();
    let (queue, _) = open(dir.path());
    let mut draft = queue.draft(envelope(&["bob@example.com"])).unwrap();
    draft.write_error = Some(std::io::Error::from_raw_os_error(libc::ENOSPC));
    let tmp = draft.tmp_path.clone();
    let error = queue.commit(draft).await.unwrap_err();
    assert!(error.is_disk_full(), "{error}");
    assert!(!tmp.exists());
    assert!(queue.list().is_empty());
}

#[test]
fn no_space_left_is_reported_as_disk_full_in_words_an_admin_understands() {
    let error = QueueError::io(
        "write spool file",
        Path::new("/var/q/tmp/X"),
        std::io::Error::from_raw_os_error(libc::ENOSPC),
    );
    assert!(error.is_disk_full());
    assert!(
        error
            .to_string()
            .starts_with("queue disk is full: cannot write spool file /var/q/tmp/X"),
        "{error}"
    );
    let other = QueueError::io(
        "write spool file",
        Path::new("/x"),
        std::io::Error::from_raw_os_error(libc::EIO),
    );
    assert!(!other.is_disk_full());
}

#[tokio::test]
async fn a_second_open_of_the_same_queue_fails_and_leaves_drafts_alone() {
    let dir = tempfile::tempdir().unwrap();
    let (queue, _) = open(dir.path());
    let mut draft = queue.draft(envelope(&["bob@example.com"])).unwrap();
    draft.write_all(&body("first")).await.unwrap();
    assert!(Queue::open(dir.path(), QueueConfig::default()).is_err());
    queue.commit(draft).await.unwrap();
}

#[tokio::test]
async fn commit_wakes_the_scheduler() {
    let dir = tempfile::tempdir().unwrap();
    let (queue, _) = open(dir.path());
    let notify = queue.notify_new();
    commit(&queue, &["bob@example.com"], "n").await;
    tokio::time::timeout(Duration::from_secs(1), notify.notified())
        .await
        .expect("notified");
}

const KILL9_DIR: &str = "PORTCULLIS_QUEUE_KILL9_DIR";

/// The child half of the kill -9 test: commits from several tasks and prints each id once acked.
#[test]
#[ignore = "runs only as the child process of commits_acknowledged_before_kill_9_survive_it"]
fn kill9_child_commits_until_killed() {
    let Ok(dir) = std::env::var(KILL9_DIR) else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let (queue, _) = open(Path::new(&dir));
        let writers: Vec<_> = (0..8)
            .map(|_| {
                let queue = queue.clone();
                tokio::spawn(async move {
                    // Far more than the parent waits for: it kills us long before the end.
                    for _ in 0..100_000 {
                        let mut draft = queue.draft(envelope(&["bob@example.com"])).unwrap();
                        let id = draft.id().clone();
                        draft.write_all(&body(id.as_str())).await.unwrap();
                        queue.commit(draft).await.unwrap();
                        // The "250": printed only after commit returned Ok.
                        use std::io::Write;
                        let mut out = std::io::stdout().lock();
                        writeln!(out, "ACK {id}").unwrap();
                        out.flush().unwrap();
                    }
                })
            })
            .collect();
        for writer in writers {
            writer.await.unwrap();
        }
    });
}

#[test]
fn commits_acknowledged_before_kill_9_survive_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "queue::tests::kill9_child_commits_until_killed",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(KILL9_DIR, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut acked = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked.len() < 300 && Instant::now() < deadline {
        let Some(Ok(line)) = lines.next() else { break };
        if let Some(id) = line.strip_prefix("ACK ") {
            acked.push(id.parse::<QueueId>().unwrap());
        }
    }
    // std's Child::kill sends SIGKILL on Unix: no destructors, no flush, like a crash.
    child.kill().unwrap();
    child.wait().unwrap();
    // Acks already in the pipe were given before the kill; they count too.
    for line in lines.map_while(Result::ok) {
        if let Some(id) = line.strip_prefix("ACK ") {
            acked.push(id.parse::<QueueId>().unwrap());
        }
    }
    assert!(
        acked.len() >= 50,
        "child acknowledged only {} messages",
        acked.len()
    );

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let (queue, recovery) = open(dir.path());
        eprintln!("kill -9 after {} acks: {recovery:?}", acked.len());
        for id in &acked {
            assert!(queue.get(id).is_some(), "acknowledged message {id} lost");
            assert_eq!(queue.read_message(id).await.unwrap(), body(id.as_str()));
        }
        assert!(recovery.messages >= acked.len());
    });
}

#[tokio::test]
async fn mark_scanned_survives_reopen_but_a_rebuilt_entry_is_unscanned_again() {
    let dir = tempfile::tempdir().unwrap();
    let (queue, _) = open(dir.path());
    let entry = commit(&queue, &["bob@example.com"], "scan").await;
    let logged = commit(&queue, &["bob@example.com"], "logged").await;
    assert!(!entry.scanned);
    queue.mark_scanned(&entry.id).await.unwrap();
    queue.mark_scanned(&logged.id).await.unwrap();
    assert!(queue.get(&entry.id).unwrap().scanned);
    queue.persist(&entry.id).await;
    drop(queue);

    let (queue, _) = open(dir.path());
    assert!(queue.get(&entry.id).unwrap().scanned);
    assert!(
        queue.get(&logged.id).unwrap().scanned,
        "the log's scanned record"
    );
    drop(queue);
    std::fs::remove_dir_all(dir.path().join("state")).unwrap();
    let (queue, recovery) = open(dir.path());
    assert_eq!(recovery.rebuilt_entries, 1);
    assert!(!queue.get(&entry.id).unwrap().scanned);
    assert!(queue.get(&logged.id).unwrap().scanned);
    assert!(matches!(
        queue.mark_scanned(&QueueId::generate()).await,
        Err(QueueError::NotFound(_))
    ));
}

#[test]
fn an_entry_stored_before_scanning_existed_reads_as_unscanned() {
    let entry = QueueEntry::new(
        QueueId::generate(),
        envelope(&["bob@example.com"]),
        1,
        None,
        None,
    );
    let mut json: serde_json::Value = serde_json::to_value(&entry).unwrap();
    json.as_object_mut().unwrap().remove("scanned");
    let read: QueueEntry = serde_json::from_value(json).unwrap();
    assert!(!read.scanned);
}

#[tokio::test]
async fn delete_with_reason_records_the_reason_instead_of_an_admin() {
    let dir = tempfile::tempdir().unwrap();
    let (queue, _) = open(dir.path());
    let entry = commit(&queue, &["bob@example.com"], "drop").await;
    queue
        .delete_with_reason(&entry.id, "dropped: virus X")
        .await
        .unwrap();
    assert!(queue.get(&entry.id).is_none());
    assert!(!queue.layout().file(SpoolDir::Active, &entry.id).exists());
    let record = queue.tracking().get(&entry.id).unwrap();
    assert_eq!(record.outcome, Some(Outcome::Deleted));
    assert!(
        record
            .events
            .iter()
            .any(|e| e.kind == "deleted" && e.detail == "dropped: virus X")
    );
}

#[tokio::test]
async fn a_deferred_message_moves_out_of_the_log_and_a_finished_log_is_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let (queue, _) = open(dir.path());
    let done = commit(&queue, &["bob@example.com"], "done").await;
    let deferred = commit(&queue, &["bob@example.com"], "later").await;
    assert_eq!(queue.log_index().await.len(), 2);

    let mut attempt = queue.begin_attempt(&deferred.id).await.unwrap();
    attempt.recipients[0].status = RecipientStatus::Deferred {
        at: Utc::now(),
        reply: "451 4.3.0 later".into(),
    };
    attempt.kind = QueueKind::Deferred;
    attempt.next_attempt = Utc::now() + chrono::Duration::minutes(5);
    queue.end_attempt(attempt).await.unwrap();
    assert!(queue.layout().file(SpoolDir::Active, &deferred.id).exists());
    assert!(!queue.log_index().await.contains(&deferred.id));

    let mut attempt = queue.begin_attempt(&done.id).await.unwrap();
    attempt.recipients[0].status = delivered();
    queue.end_attempt(attempt).await.unwrap();
    assert_eq!(queue.log_index().await.len(), 0);
    // Nothing lives in the log any more: its segment is gone already.
    assert_eq!(queue.log_index().await.segments(), 0);
    assert_eq!(
        std::fs::read_dir(dir.path().join("log")).unwrap().count(),
        0
    );
    drop(queue);
    let (queue, recovery) = open(dir.path());
    assert_eq!(recovery.messages, 1);
    assert_eq!(recovery.rebuilt_entries, 0);
    assert_eq!(queue.log_index().await.segments(), 0);
    assert_eq!(
        std::fs::read_dir(dir.path().join("log")).unwrap().count(),
        0
    );
    assert_eq!(
        queue.read_message(&deferred.id).await.unwrap(),
        body("later")
    );
    assert!(queue.get(&done.id).is_none());
}

#[tokio::test]
async fn a_logged_message_put_on_hold_gets_a_file_in_hold_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (queue, _) = open(dir.path());
    let entry = commit(&queue, &["bob@example.com"], "held").await;
    queue.hold(&entry.id, "check").await.unwrap();
    assert!(queue.layout().file(SpoolDir::Hold, &entry.id).exists());
    assert!(!queue.log_index().await.contains(&entry.id));
    drop(queue);
    let (queue, recovery) = open(dir.path());
    assert_eq!(recovery.messages, 1);
    assert_eq!(queue.get(&entry.id).unwrap().kind, QueueKind::Hold);
    queue.release(&entry.id).await.unwrap();
    assert!(queue.layout().file(SpoolDir::Active, &entry.id).exists());
    assert_eq!(queue.read_message(&entry.id).await.unwrap(), body("held"));
}

#[tokio::test]
async fn a_message_in_both_a_spool_file_and_the_log_is_the_file_and_counted_once() {
    // A crash after a move out of the log but before its done record reached the disk.
    let dir = tempfile::tempdir().unwrap();
    let (queue, _) = open(dir.path());
    let entry = commit(&queue, &["bob@example.com"], "both").await;
    drop(queue);
    let spool_file = {
        let payload = std::fs::read_dir(dir.path().join("log"))
            .unwrap()
            .map(|s| std::fs::read(s.unwrap().path()).unwrap())
            .next()
            .unwrap();
        payload[crate::log::HEADER_LEN..].to_vec()
    };
    std::fs::write(
        dir.path().join("active").join(entry.id.as_str()),
        &spool_file,
    )
    .unwrap();
    let (queue, recovery) = open(dir.path());
    assert_eq!(recovery.messages, 1);
    assert!(!queue.log_index().await.contains(&entry.id));
    assert!(queue.message_path(&entry.id).is_some());
    assert_eq!(queue.read_message(&entry.id).await.unwrap(), body("both"));
}

#[tokio::test]
async fn suspects_in_the_log_are_held_in_a_spool_file() {
    let dir = tempfile::tempdir().unwrap();
    let (queue, _) = open(dir.path());
    let entry = commit(&queue, &["bob@example.com"], "s").await;
    drop(queue);
    for _ in 0..3 {
        let (queue, _) = open(dir.path());
        queue.begin_attempt(&entry.id).await.unwrap();
        drop(queue);
    }
    let (queue, recovery) = open(dir.path());
    assert_eq!(recovery.suspects_held, vec![entry.id.clone()]);
    assert_eq!(queue.get(&entry.id).unwrap().kind, QueueKind::Hold);
    assert!(queue.layout().file(SpoolDir::Hold, &entry.id).exists());
    assert!(!queue.log_index().await.contains(&entry.id));
    assert_eq!(queue.read_message(&entry.id).await.unwrap(), body("s"));
}

#[tokio::test]
async fn an_attempt_record_alone_is_synced_before_its_attempt_starts() {
    let dir = tempfile::tempdir().unwrap();
    let (queue, _) = open(dir.path());
    let entry = commit(&queue, &["bob@example.com"], "alone").await;
    let synced = queue.inner.log.syncs();
    // No commit comes along to share a sync with: the attempt wakes the writer itself.
    let attempt = tokio::time::timeout(Duration::from_secs(5), queue.begin_attempt(&entry.id))
        .await
        .expect("answered without other traffic")
        .unwrap();
    assert!(attempt.in_flight);
    assert_eq!(queue.inner.log.syncs(), synced + 1);
}

#[tokio::test]
async fn an_attempt_record_rides_with_the_next_commit_and_shares_its_sync() {
    let dir = tempfile::tempdir().unwrap();
    let (queue, _) = open(dir.path());
    let entry = commit(&queue, &["bob@example.com"], "first").await;
    let synced = queue.inner.log.syncs();
    // The attempt is handed over first (without waking the writer), then a commit wakes it.
    let (attempt, second) = tokio::join!(
        queue.begin_attempt(&entry.id),
        commit(&queue, &["carol@example.com"], "second")
    );
    assert!(attempt.unwrap().in_flight);
    assert_eq!(queue.inner.log.syncs(), synced + 1, "one sync for both");
    // Both records are in the log: a restart finds the attempt (a possible duplicate) and the
    // second message.
    drop(queue);
    let (queue, recovery) = open(dir.path());
    assert_eq!(recovery.possibly_duplicated, 1);
    assert_eq!(
        queue.read_message(&second.id).await.unwrap(),
        body("second")
    );
}
