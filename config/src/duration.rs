//! Go-style duration strings (`"2m"`, `"1h30m"`, `"500ms"`).

use std::time::Duration;

use crate::ConfigError;

const NANOS_PER_SEC: u128 = 1_000_000_000;

/// The largest duration Go can represent (`math.MaxInt64` nanoseconds); we
/// keep the same ceiling so both servers accept the same inputs.
const MAX_NANOS: u128 = i64::MAX as u128;

/// Parses a duration the way nats-server reads duration options.
///
/// Accepts Go's `time.ParseDuration` syntax: an optional sign followed by
/// one or more decimal numbers, each with an optional fraction and a unit
/// (`ns`, `us`, `µs`, `ms`, `s`, `m`, `h`), e.g. `"2m"`, `"1h30m"`,
/// `"1.5s"`, `"500ms"`. A plain `"0"` is zero. As an extension, a bare
/// non-negative integer such as `"30"` means that many seconds, matching
/// how nats-server treats integer duration options.
///
/// Negative durations are rejected because [`Duration`] cannot hold them.
pub fn parse_duration(input: &str) -> Result<Duration, ConfigError> {
    let fail = |reason: &str| ConfigError::InvalidDuration {
        input: input.to_string(),
        reason: reason.to_string(),
    };

    let (negative, body) = match input.as_bytes().first() {
        Some(b'-') => (true, &input[1..]),
        Some(b'+') => (false, &input[1..]),
        _ => (false, input),
    };
    if body.is_empty() {
        return Err(fail("empty duration"));
    }

    let total = if body.bytes().all(|b| b.is_ascii_digit()) {
        // Bare number: seconds.
        let secs = parse_digits(body).ok_or_else(|| fail("duration out of range"))?;
        secs.checked_mul(NANOS_PER_SEC)
            .filter(|n| *n <= MAX_NANOS)
            .ok_or_else(|| fail("duration out of range"))?
    } else {
        parse_components(body).map_err(fail)?
    };

    if negative && total > 0 {
        return Err(fail("negative durations are not supported"));
    }
    // `total` never exceeds i64::MAX, so it fits in a u64.
    Ok(Duration::from_nanos(total as u64))
}

/// Sums `<number><unit>` components; returns nanoseconds.
fn parse_components(mut rest: &str) -> Result<u128, &'static str> {
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let (int_part, after) = rest.split_at(int_len);
        rest = after;

        let mut frac_part = "";
        if let Some(after_dot) = rest.strip_prefix('.') {
            let frac_len = after_dot.bytes().take_while(u8::is_ascii_digit).count();
            frac_part = &after_dot[..frac_len];
            rest = &after_dot[frac_len..];
        }
        if int_part.is_empty() && frac_part.is_empty() {
            return Err("expected a number");
        }

        let unit_len = rest
            .char_indices()
            .find(|(_, c)| *c == '.' || c.is_ascii_digit())
            .map_or(rest.len(), |(i, _)| i);
        let (unit, after_unit) = rest.split_at(unit_len);
        rest = after_unit;
        let unit_nanos: u128 = match unit {
            "" => return Err("missing unit (use ns, us, ms, s, m or h)"),
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => NANOS_PER_SEC,
            "m" => 60 * NANOS_PER_SEC,
            "h" => 3_600 * NANOS_PER_SEC,
            _ => return Err("unknown unit (use ns, us, ms, s, m or h)"),
        };

        let whole = if int_part.is_empty() {
            0
        } else {
            parse_digits(int_part).ok_or("duration out of range")?
        };
        let mut nanos = whole
            .checked_mul(unit_nanos)
            .ok_or("duration out of range")?;
        // Digits beyond the 18th cannot change the result at nanosecond
        // precision for any unit up to an hour by more than rounding.
        let frac_digits = &frac_part[..frac_part.len().min(18)];
        if !frac_digits.is_empty() {
            let frac = parse_digits(frac_digits).ok_or("duration out of range")?;
            let scale = 10u128.pow(frac_digits.len() as u32);
            nanos = nanos
                .checked_add(frac * unit_nanos / scale)
                .ok_or("duration out of range")?;
        }
        total = total
            .checked_add(nanos)
            .filter(|n| *n <= MAX_NANOS)
            .ok_or("duration out of range")?;
    }
    Ok(total)
}

/// Parses ASCII digits, `None` on overflow of u128 (or far beyond any
/// duration we accept).
fn parse_digits(digits: &str) -> Option<u128> {
    digits.bytes().try_fold(0u128, |acc, b| {
        acc.checked_mul(10)?.checked_add(u128::from(b - b'0'))
    })
}

/// Seconds as a float to a [`Duration`], `None` if negative, not finite or
/// too large.
pub(crate) fn duration_from_secs_f64(secs: f64) -> Option<Duration> {
    if secs.is_finite() && secs >= 0.0 {
        Duration::try_from_secs_f64(secs).ok()
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> Duration {
        parse_duration(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn go_syntax() {
        assert_eq!(ok("2m"), Duration::from_secs(120));
        assert_eq!(ok("10s"), Duration::from_secs(10));
        assert_eq!(ok("1h30m"), Duration::from_secs(5400));
        assert_eq!(ok("500ms"), Duration::from_millis(500));
        assert_eq!(ok("1.5s"), Duration::from_millis(1500));
        assert_eq!(ok(".5s"), Duration::from_millis(500));
        assert_eq!(ok("1.s"), Duration::from_secs(1));
        assert_eq!(ok("3us"), Duration::from_micros(3));
        assert_eq!(ok("3µs"), Duration::from_micros(3));
        assert_eq!(ok("3μs"), Duration::from_micros(3));
        assert_eq!(ok("7ns"), Duration::from_nanos(7));
        assert_eq!(
            ok("1h1m1s1ms1us1ns"),
            Duration::from_nanos(3_661_001_001_001)
        );
        assert_eq!(ok("+5s"), Duration::from_secs(5));
        assert_eq!(ok("0"), Duration::ZERO);
        assert_eq!(ok("-0s"), Duration::ZERO);
        assert_eq!(ok("0.000000001s"), Duration::from_nanos(1));
        assert_eq!(ok("1.0000000000000000000001h"), Duration::from_secs(3600));
    }

    #[test]
    fn bare_integers_are_seconds() {
        assert_eq!(ok("30"), Duration::from_secs(30));
        assert_eq!(ok("+2"), Duration::from_secs(2));
    }

    #[test]
    fn rejects_bad_input() {
        for bad in [
            "",
            "-",
            "+",
            "s",
            "-1s",
            "-5",
            "1x",
            "1.5",
            "..5s",
            "1s2",
            "1 s",
            "h1",
            "1hh",
            "9999999999999999999999h",
            "3000000h",
            "99999999999999999999",
        ] {
            assert!(parse_duration(bad).is_err(), "accepted {bad:?}");
        }
        let msg = parse_duration("5x").unwrap_err().to_string();
        assert!(
            msg.starts_with("invalid duration '5x': unknown unit"),
            "{msg}"
        );
    }

    #[test]
    fn largest_accepted_matches_go() {
        assert_eq!(ok("2562047h"), Duration::from_secs(2_562_047 * 3600));
        assert!(parse_duration("2562048h").is_err());
    }
}
