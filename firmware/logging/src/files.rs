//! Daily log files in the configured directory and their retention.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use chrono::{DateTime, Days, NaiveDate, Utc};
use tracing_appender::non_blocking::{NonBlocking, WorkerGuard};
use tracing_appender::rolling::{RollingFileAppender, Rotation};

use crate::LoggingError;

/// Log files are named `portcullis.YYYY-MM-DD.log` (the date in UTC, when the file was started).
const FILE_PREFIX: &str = "portcullis";
const FILE_SUFFIX: &str = "log";

/// Opens today's log file in `dir` (creating the directory) behind a non-blocking writer.
///
/// The writer hands lines to a background thread and drops them when that thread falls far behind, so a slow
/// disk never stalls an SMTP session; the guard flushes what is left when it is dropped.
pub(crate) fn open(dir: &Path) -> Result<(NonBlocking, WorkerGuard), LoggingError> {
    let appender = RollingFileAppender::builder()
        .rotation(Rotation::DAILY)
        .filename_prefix(FILE_PREFIX)
        .filename_suffix(FILE_SUFFIX)
        .build(dir)
        .map_err(|e| LoggingError::LogDir {
            dir: dir.to_path_buf(),
            reason: e.to_string(),
        })?;
    Ok(tracing_appender::non_blocking(appender))
}

/// Deletes the log files in `dir` whose day ended more than `retention_days` days before `now`, and returns
/// their paths. Files that are not ours (other names) are never touched; `retention_days` 0 keeps everything.
pub(crate) fn prune(
    dir: &Path,
    retention_days: u32,
    now: SystemTime,
) -> Result<Vec<PathBuf>, LoggingError> {
    if retention_days == 0 {
        return Ok(Vec::new());
    }
    let today = DateTime::<Utc>::from(now).date_naive();
    let Some(oldest_kept) = today.checked_sub_days(Days::new(u64::from(retention_days))) else {
        return Ok(Vec::new());
    };
    let failed = |e: std::io::Error| LoggingError::Prune {
        dir: dir.to_path_buf(),
        source: e,
    };
    let mut deleted = Vec::new();
    for entry in fs::read_dir(dir).map_err(failed)? {
        let entry = entry.map_err(failed)?;
        let name = entry.file_name();
        let Some(day) = name.to_str().and_then(day_of_file) else {
            continue;
        };
        if day < oldest_kept {
            let path = entry.path();
            fs::remove_file(&path).map_err(failed)?;
            deleted.push(path);
        }
    }
    deleted.sort();
    Ok(deleted)
}

/// The day in a log file name such as `portcullis.2025-03-01.log`.
fn day_of_file(name: &str) -> Option<NaiveDate> {
    let date = name
        .strip_prefix(FILE_PREFIX)?
        .strip_prefix('.')?
        .strip_suffix(FILE_SUFFIX)?
        .strip_suffix('.')?;
    NaiveDate::parse_from_str(date, "%Y-%m-%d").ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(day: &str) -> SystemTime {
        let date = NaiveDate::parse_from_str(day, "%Y-%m-%d").unwrap();
        date.and_hms_opt(12, 0, 0).unwrap().and_utc().into()
    }

    #[test]
    fn pruning_deletes_only_our_files_older_than_the_retention() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "portcullis.2025-03-01.log",
            "portcullis.2025-03-15.log",
            "portcullis.2025-03-16.log",
            "portcullis.2025-03-30.log",
            "other.2025-01-01.log",
            "portcullis.notadate.log",
            "portcullis.2025-01-01.log.gz",
        ] {
            fs::write(dir.path().join(name), "x\n").unwrap();
        }
        let deleted = prune(dir.path(), 14, at("2025-03-30")).unwrap();
        let names: Vec<_> = deleted
            .iter()
            .map(|p| p.file_name().unwrap().to_str().unwrap().to_string())
            .collect();
        assert_eq!(
            names,
            ["portcullis.2025-03-01.log", "portcullis.2025-03-15.log"]
        );
        let mut left: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                "other.2025-01-01.log",
                "portcullis.2025-01-01.log.gz",
                "portcullis.2025-03-16.log",
                "portcullis.2025-03-30.log",
                "portcullis.notadate.log",
            ]
        );
    }

    #[test]
    fn zero_retention_keeps_every_file() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("portcullis.2000-01-01.log"), "x\n").unwrap();
        assert!(prune(dir.path(), 0, at("2025-03-30")).unwrap().is_empty());
        assert!(dir.path().join("portcullis.2000-01-01.log").exists());
    }

    #[test]
    fn todays_file_is_named_so_that_pruning_recognises_it() {
        let dir = tempfile::tempdir().unwrap();
        let (writer, guard) = open(dir.path()).unwrap();
        drop((writer, guard));
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 1);
        assert!(day_of_file(&names[0]).is_some(), "{names:?}");
    }
}
