//! Outbreak detection: many infected messages in a short time mean a campaign or a worm on the
//! inside, which the admin wants to hear about at once rather than read in a daily report.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What an outbreak alert reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outbreak {
    /// Infected messages within the window (including this one).
    pub messages: usize,
    /// The window.
    pub window: Duration,
    /// The virus names seen in the window, most frequent first, with their counts.
    pub viruses: Vec<(String, usize)>,
}

/// A sliding window over recent infected messages.
#[derive(Debug, Default)]
pub struct OutbreakWatch {
    inner: Mutex<Window>,
}

#[derive(Debug, Default)]
struct Window {
    /// When each infected message arrived, with its virus names.
    seen: VecDeque<(Instant, Vec<String>)>,
    /// The last outbreak reported: one report per window, not one per further message.
    reported: Option<Instant>,
}

impl OutbreakWatch {
    /// Notes an infected message at `now`. Returns an outbreak the first time `threshold`
    /// infected messages fall within `window`, then not again until a window has passed.
    /// A threshold of 0 switches detection off.
    pub fn infected(
        &self,
        now: Instant,
        viruses: &[String],
        threshold: usize,
        window: Duration,
    ) -> Option<Outbreak> {
        if threshold == 0 {
            return None;
        }
        let mut w = self.inner.lock().expect("outbreak window lock");
        w.seen.push_back((now, viruses.to_vec()));
        while let Some((at, _)) = w.seen.front() {
            if now.duration_since(*at) > window {
                w.seen.pop_front();
            } else {
                break;
            }
        }
        if w.seen.len() < threshold {
            return None;
        }
        if w.reported
            .is_some_and(|at| now.duration_since(at) <= window)
        {
            return None;
        }
        w.reported = Some(now);
        let mut counts: Vec<(String, usize)> = Vec::new();
        for name in w.seen.iter().flat_map(|(_, names)| names) {
            match counts.iter_mut().find(|(n, _)| n == name) {
                Some((_, c)) => *c += 1,
                None => counts.push((name.clone(), 1)),
            }
        }
        counts.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        Some(Outbreak {
            messages: w.seen.len(),
            window,
            viruses: counts,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_secs(600);

    fn names(n: &str) -> Vec<String> {
        vec![n.to_string()]
    }

    #[test]
    fn the_threshold_within_the_window_raises_one_outbreak() {
        let watch = OutbreakWatch::default();
        let t0 = Instant::now();
        assert!(watch.infected(t0, &names("Worm.A"), 3, WINDOW).is_none());
        assert!(
            watch
                .infected(t0 + Duration::from_secs(60), &names("Worm.A"), 3, WINDOW)
                .is_none()
        );
        let outbreak = watch
            .infected(t0 + Duration::from_secs(120), &names("Eicar"), 3, WINDOW)
            .expect("third infected message within ten minutes");
        assert_eq!(outbreak.messages, 3);
        assert_eq!(
            outbreak.viruses,
            vec![("Worm.A".to_string(), 2), ("Eicar".to_string(), 1)]
        );
        // More of the same campaign inside the window: no second alert.
        assert!(
            watch
                .infected(t0 + Duration::from_secs(180), &names("Worm.A"), 3, WINDOW)
                .is_none()
        );
    }

    #[test]
    fn infections_spread_wider_than_the_window_are_no_outbreak() {
        let watch = OutbreakWatch::default();
        let t0 = Instant::now();
        for i in 0..10 {
            let at = t0 + Duration::from_secs(i * 601);
            assert!(watch.infected(at, &names("Worm.A"), 2, WINDOW).is_none());
        }
        assert!(
            watch.infected(t0, &names("x"), 0, WINDOW).is_none(),
            "0 is off"
        );
    }
}
