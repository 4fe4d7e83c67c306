//! When the updater tries: on the configured days, at `first_attempt` and every `interval`
//! after it until midnight (local time), each attempt delayed by a random jitter.

use std::time::Duration;

use chrono::{DateTime, Datelike, NaiveDateTime, NaiveTime, TimeZone};

/// The update schedule of `[definitions]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    /// Days of the week on which attempts are made.
    pub days: Vec<chrono::Weekday>,
    /// The first attempt of each such day.
    pub first_attempt: NaiveTime,
    /// Time between attempts within a day.
    pub interval: Duration,
}

impl Schedule {
    /// The schedule of a configuration section.
    pub fn of(section: &crate::config::DefinitionsSection) -> Schedule {
        Schedule {
            days: section.days.iter().map(|d| d.to_chrono()).collect(),
            first_attempt: section.first_attempt_time().unwrap_or(NaiveTime::MIN),
            interval: section.interval.max(Duration::from_secs(60)),
        }
    }

    /// The first scheduled instant strictly after `now` (without jitter), in `now`'s zone.
    pub fn next_after<Tz: TimeZone>(&self, now: &DateTime<Tz>) -> DateTime<Tz> {
        let zone = now.timezone();
        let local = now.naive_local();
        let step = chrono::Duration::from_std(self.interval).unwrap_or(chrono::Duration::hours(2));
        for day_offset in 0..=7 {
            let date = local.date() + chrono::Duration::days(day_offset);
            if !self.days.contains(&date.weekday()) {
                continue;
            }
            let mut at: NaiveDateTime = date.and_time(self.first_attempt);
            while at.date() == date {
                if at > local
                    && let Some(resolved) = zone.from_local_datetime(&at).earliest()
                {
                    return resolved;
                }
                at += step;
            }
        }
        // No allowed day at all (validation prevents it): try again in a day.
        now.clone() + chrono::Duration::days(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    fn schedule(days: &[chrono::Weekday]) -> Schedule {
        Schedule {
            days: days.to_vec(),
            first_attempt: NaiveTime::from_hms_opt(1, 30, 0).unwrap(),
            interval: Duration::from_secs(2 * 3600),
        }
    }

    #[test]
    fn next_attempt_is_the_next_interval_step_on_the_same_day() {
        // 2026-05-04 is a Monday.
        let now = Utc.with_ymd_and_hms(2026, 5, 4, 10, 0, 0).unwrap();
        let next = schedule(&[chrono::Weekday::Mon]).next_after(&now);
        assert_eq!(next, Utc.with_ymd_and_hms(2026, 5, 4, 11, 30, 0).unwrap());
    }

    #[test]
    fn after_the_last_step_of_a_day_the_next_allowed_day_starts_at_first_attempt() {
        let now = Utc.with_ymd_and_hms(2026, 5, 4, 23, 40, 0).unwrap();
        let next = schedule(&[chrono::Weekday::Mon, chrono::Weekday::Wed]).next_after(&now);
        assert_eq!(next, Utc.with_ymd_and_hms(2026, 5, 6, 1, 30, 0).unwrap());
    }
}
