//! Times and recurrence of scheduled sessions, and when two of them overlap.
//! Pure functions on Unix milliseconds (UTC), unit-tested against a brute-force
//! model.
//!
//! A ONE_TIME session occupies `[start, end)`. A RECURRING session is anchored
//! at its first occurrence `[start, end)` and repeats every period (a day for
//! `DAILY`, a week for `WEEKLY`) forever after: occurrence `k >= 0` is
//! `[start + k*P, end + k*P)`. A weekly session therefore recurs on the UTC
//! weekday of its `startDateTime` (its `recurringDayOfWeek`), at the same UTC
//! time of day. Intervals are half-open, so back-to-back sessions (one ends
//! at 10:00, the next starts at 10:00) do not overlap. An occurrence may not be
//! longer than its period (it would overlap itself).

use chrono::{DateTime, Datelike, NaiveDateTime, SecondsFormat, Utc, Weekday};

/// One day in milliseconds.
pub const DAY_MS: i64 = 24 * 3600 * 1000;
/// One week in milliseconds.
pub const WEEK_MS: i64 = 7 * DAY_MS;

/// How a recurring session repeats (`DAILY` or `WEEKLY` on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Cycle {
    /// Every day at the same UTC time.
    Daily,
    /// Every week on the same UTC weekday and time.
    Weekly,
}

impl Cycle {
    /// The wire name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Daily => "DAILY",
            Self::Weekly => "WEEKLY",
        }
    }

    /// Parses a wire name (exact, upper case).
    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "DAILY" => Some(Self::Daily),
            "WEEKLY" => Some(Self::Weekly),
            _ => None,
        }
    }

    /// The period in milliseconds.
    #[must_use]
    pub fn period_ms(self) -> i64 {
        match self {
            Self::Daily => DAY_MS,
            Self::Weekly => WEEK_MS,
        }
    }
}

/// The wire names of the weekdays, Monday first.
pub const WEEKDAYS: [&str; 7] = [
    "MONDAY",
    "TUESDAY",
    "WEDNESDAY",
    "THURSDAY",
    "FRIDAY",
    "SATURDAY",
    "SUNDAY",
];

/// A weekday as the API shows it: `MONDAY`..`SUNDAY` (the names of
/// `WEEKDAYS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum DayOfWeek {
    /// Monday.
    Monday,
    /// Tuesday.
    Tuesday,
    /// Wednesday.
    Wednesday,
    /// Thursday.
    Thursday,
    /// Friday.
    Friday,
    /// Saturday.
    Saturday,
    /// Sunday.
    Sunday,
}

impl From<Weekday> for DayOfWeek {
    fn from(d: Weekday) -> Self {
        match d {
            Weekday::Mon => Self::Monday,
            Weekday::Tue => Self::Tuesday,
            Weekday::Wed => Self::Wednesday,
            Weekday::Thu => Self::Thursday,
            Weekday::Fri => Self::Friday,
            Weekday::Sat => Self::Saturday,
            Weekday::Sun => Self::Sunday,
        }
    }
}

/// The wire name of a weekday.
#[must_use]
pub fn weekday_name(d: Weekday) -> &'static str {
    WEEKDAYS
        .get(d.num_days_from_monday() as usize)
        .copied()
        .unwrap_or("MONDAY")
}

/// The UTC weekday of a time.
#[must_use]
pub fn weekday_of(ms: i64) -> Weekday {
    DateTime::<Utc>::from_timestamp_millis(ms).map_or(Weekday::Mon, |t| t.weekday())
}

/// Parses an ISO 8601 date-time: RFC 3339 with an offset, or without one
/// (read as UTC). Years 1 to 9999 only, so that every stored time prints back
/// as a valid RFC 3339 string.
#[must_use]
pub fn parse_time(s: &str) -> Option<i64> {
    if s.len() > 64 {
        return None;
    }
    let t = DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .ok()
        .or_else(|| {
            ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M"]
                .iter()
                .find_map(|f| NaiveDateTime::parse_from_str(s, f).ok())
                .map(|n| n.and_utc())
        })?;
    (1..=9999).contains(&t.year()).then(|| t.timestamp_millis())
}

/// Formats a time the way JavaScript's `toISOString` does:
/// `2023-12-01T09:00:00.000Z`.
#[must_use]
pub fn format_time(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms).map_or_else(String::new, |t| {
        t.to_rfc3339_opts(SecondsFormat::Millis, true)
    })
}

/// When a session happens: its first (or only) occurrence and its recurrence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    /// Start of the first occurrence (ms).
    pub start: i64,
    /// End of the first occurrence (ms), after `start`.
    pub end: i64,
    /// `None` for a one-time session.
    pub cycle: Option<Cycle>,
}

impl Slot {
    fn duration(&self) -> i64 {
        self.end - self.start
    }

    /// Starts of the occurrences starting in `[from, to)`.
    fn starts_in(&self, from: i64, to: i64) -> Vec<i64> {
        let Some(cycle) = self.cycle else {
            return if (from..to).contains(&self.start) {
                vec![self.start]
            } else {
                Vec::new()
            };
        };
        let p = cycle.period_ms();
        let first_k = if self.start >= from {
            0
        } else {
            // Smallest k with start + k*p >= from.
            (from - self.start + p - 1).div_euclid(p)
        };
        let mut out = Vec::new();
        let mut t = self.start + first_k * p;
        while t < to {
            out.push(t);
            t += p;
        }
        out
    }
}

/// Whether two sessions ever overlap (see the module docs for the model).
#[must_use]
pub fn overlaps(a: &Slot, b: &Slot) -> bool {
    match (a.cycle, b.cycle) {
        (None, None) => a.start < b.end && b.start < a.end,
        (None, Some(_)) => once_vs_recurring(a, b),
        (Some(_), None) => once_vs_recurring(b, a),
        (Some(ca), Some(cb)) => {
            // Both periods divide L (a day divides a week), so the pair of
            // series repeats every L once both have started, at T0. Any
            // overlapping pair of occurrences can be shifted by multiples of L
            // until the earlier one starts in [T0, T0 + L); the later one then
            // starts less than one duration (<= L) after it. So looking at the
            // occurrences that start in [T0, T0 + 2L) finds an overlap if any
            // exists.
            let l = ca.period_ms().max(cb.period_ms());
            let t0 = a.start.max(b.start);
            let (da, db) = (a.duration(), b.duration());
            let sa = a.starts_in(t0 - l, t0 + 2 * l);
            let sb = b.starts_in(t0 - l, t0 + 2 * l);
            sa.iter()
                .any(|&x| sb.iter().any(|&y| x < y + db && y < x + da))
        }
    }
}

/// A one-time `[s, e)` against a recurring series.
fn once_vs_recurring(once: &Slot, rec: &Slot) -> bool {
    let Some(cycle) = rec.cycle else {
        return false;
    };
    let p = cycle.period_ms();
    let d = rec.duration();
    // An occurrence starting at t overlaps iff once.start - d < t < once.end.
    let lo = once.start - d;
    let k = if rec.start > lo {
        0
    } else {
        (lo - rec.start).div_euclid(p) + 1
    };
    rec.start + k * p < once.end
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const H: i64 = 3600 * 1000;

    #[test]
    fn the_shown_names_are_the_wire_names() {
        use crate::apis::scheduled::store::Kind;
        for k in [Kind::OneTime, Kind::Recurring] {
            assert_eq!(serde_json::json!(k), k.as_str());
        }
        for c in [Cycle::Daily, Cycle::Weekly] {
            assert_eq!(serde_json::json!(c), c.as_str());
        }
        for i in 0..7u8 {
            let d = Weekday::try_from(i).unwrap();
            assert_eq!(serde_json::json!(DayOfWeek::from(d)), weekday_name(d));
        }
    }

    fn once(start: i64, end: i64) -> Slot {
        Slot {
            start,
            end,
            cycle: None,
        }
    }

    fn rec(start: i64, end: i64, c: Cycle) -> Slot {
        Slot {
            start,
            end,
            cycle: Some(c),
        }
    }

    #[test]
    fn times_parse_and_print_like_javascript() {
        let t = parse_time("2023-12-01T09:00:00Z").unwrap();
        assert_eq!(format_time(t), "2023-12-01T09:00:00.000Z");
        assert_eq!(parse_time("2023-12-01T10:00:00+01:00"), Some(t));
        assert_eq!(parse_time("2023-12-01T09:00:00"), Some(t));
        assert_eq!(parse_time("2023-12-01T09:00:00.000Z"), Some(t));
        assert_eq!(weekday_name(weekday_of(t)), "FRIDAY");
        assert!(parse_time("yesterday").is_none());
        assert!(parse_time("2023-13-01T09:00:00Z").is_none());
        assert!(parse_time("0000-01-01T00:00:00Z").is_none());
    }

    #[test]
    fn one_time_sessions() {
        assert!(overlaps(&once(0, 10), &once(5, 15)));
        assert!(!overlaps(&once(0, 10), &once(10, 20)), "back to back");
        assert!(overlaps(&once(0, 10), &once(2, 3)));
    }

    #[test]
    fn weekly_against_one_time() {
        let w = rec(9 * H, 10 * H, Cycle::Weekly);
        assert!(overlaps(
            &w,
            &once(9 * H + WEEK_MS * 3, 9 * H + 1 + WEEK_MS * 3)
        ));
        assert!(!overlaps(&w, &once(10 * H, 11 * H)));
        assert!(!overlaps(&w, &once(0, 9 * H)), "before the series starts");
        assert!(
            !overlaps(&w, &once(9 * H - WEEK_MS, 10 * H - WEEK_MS)),
            "a week before the first occurrence"
        );
        assert!(overlaps(&w, &once(0, 100 * WEEK_MS)));
    }

    #[test]
    fn daily_against_weekly() {
        let w = rec(9 * H, 10 * H, Cycle::Weekly);
        // Every day 09:30-09:45 starting three days later: meets the weekly one.
        assert!(overlaps(
            &w,
            &rec(
                3 * DAY_MS + 9 * H + H / 2,
                3 * DAY_MS + 9 * H + 3 * H / 4,
                Cycle::Daily
            )
        ));
        // Every day 10:00-11:00: never.
        assert!(!overlaps(&w, &rec(10 * H, 11 * H, Cycle::Daily)));
        // Weekly on another weekday: never.
        assert!(!overlaps(
            &w,
            &rec(DAY_MS + 9 * H, DAY_MS + 10 * H, Cycle::Weekly)
        ));
    }

    /// A small deterministic generator (xorshift), so the test needs no crate.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self, n: i64) -> i64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % n as u64) as i64
        }
    }

    /// Every occurrence within a long horizon, pairwise.
    fn brute(a: &Slot, b: &Slot) -> bool {
        let horizon = 40 * WEEK_MS;
        let occ = |s: &Slot| -> Vec<(i64, i64)> {
            s.starts_in(-horizon, horizon)
                .into_iter()
                .map(|t| (t, t + s.duration()))
                .collect()
        };
        let (oa, ob) = (occ(a), occ(b));
        oa.iter().any(|x| ob.iter().any(|y| x.0 < y.1 && y.0 < x.1))
    }

    #[test]
    fn agrees_with_brute_force() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        // Quarter-hour grid within a few weeks, so that edges touch often.
        let q = H / 4;
        let slot = |rng: &mut Rng| {
            let cycle = match rng.next(3) {
                0 => None,
                1 => Some(Cycle::Daily),
                _ => Some(Cycle::Weekly),
            };
            let max = cycle.map_or(3 * DAY_MS, Cycle::period_ms) / q;
            let start = rng.next(3 * WEEK_MS / q) * q;
            let d = (1 + rng.next(max)) * q;
            Slot {
                start,
                end: start + d,
                cycle,
            }
        };
        for _ in 0..20_000 {
            let (a, b) = (slot(&mut rng), slot(&mut rng));
            assert_eq!(overlaps(&a, &b), brute(&a, &b), "{a:?} {b:?}");
            assert_eq!(overlaps(&a, &b), overlaps(&b, &a), "{a:?} {b:?}");
        }
    }
}
