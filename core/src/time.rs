//! Calendar time from the Unix clock, without a time zone database: UTC only.

/// A UTC calendar date and time.
#[derive(Debug, PartialEq, Eq)]
pub struct Civil {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
}

impl Civil {
    /// From seconds since 1970-01-01T00:00:00Z (the days-to-civil algorithm of H. Hinnant).
    pub fn from_unix(secs: i64) -> Civil {
        let days = secs.div_euclid(86_400);
        let rem = secs.rem_euclid(86_400);
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let year = yoe + era * 400 + i64::from(month <= 2);
        Civil {
            year,
            month,
            day,
            hour: (rem / 3600) as u32,
            minute: (rem % 3600 / 60) as u32,
            second: (rem % 60) as u32,
        }
    }
}

/// A duration the way Go prints one (`1.5ms`, `250µs`, `2.000001s`, `1m30s`).
pub fn go_duration(d: std::time::Duration) -> String {
    let ns = d.as_nanos();
    let trim = |x: f64, unit: &str| {
        let s = format!("{x:.9}");
        let s = s.trim_end_matches('0').trim_end_matches('.');
        format!("{s}{unit}")
    };
    if ns == 0 {
        "0s".into()
    } else if ns < 1_000 {
        format!("{ns}ns")
    } else if ns < 1_000_000 {
        trim(ns as f64 / 1e3, "µs")
    } else if ns < 1_000_000_000 {
        trim(ns as f64 / 1e6, "ms")
    } else if ns < 60_000_000_000 {
        trim(ns as f64 / 1e9, "s")
    } else {
        let secs = d.as_secs();
        let rest = std::time::Duration::new(secs % 60, d.subsec_nanos());
        let (h, m) = (secs / 3600, (secs / 60) % 60);
        let s = trim(rest.as_secs_f64(), "s");
        if h > 0 {
            format!("{h}h{m}m{s}")
        } else {
            format!("{m}m{s}")
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn go_durations() {
        assert_eq!(go_duration(std::time::Duration::from_nanos(0)), "0s");
        assert_eq!(go_duration(std::time::Duration::from_nanos(750)), "750ns");
        assert_eq!(go_duration(std::time::Duration::from_nanos(1_500)), "1.5µs");
        assert_eq!(
            go_duration(std::time::Duration::from_micros(1_250)),
            "1.25ms"
        );
        assert_eq!(go_duration(std::time::Duration::from_millis(2_000)), "2s");
        assert_eq!(go_duration(std::time::Duration::from_secs(90)), "1m30s");
        assert_eq!(go_duration(std::time::Duration::from_secs(3_661)), "1h1m1s");
    }

    use super::*;

    #[test]
    fn civil_dates() {
        let c = |y, mo, d, h, mi, s| Civil {
            year: y,
            month: mo,
            day: d,
            hour: h,
            minute: mi,
            second: s,
        };
        assert_eq!(Civil::from_unix(0), c(1970, 1, 1, 0, 0, 0));
        assert_eq!(Civil::from_unix(951_782_400), c(2000, 2, 29, 0, 0, 0));
        assert_eq!(Civil::from_unix(1_796_573_429), c(2026, 12, 6, 16, 10, 29));
        assert_eq!(Civil::from_unix(-1), c(1969, 12, 31, 23, 59, 59));
    }
}
