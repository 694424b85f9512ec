//! Durations as users write them: `500ms`, `3s`, `1m`, `1h`, `1m30s`, `2.5s`, a bare number of
//! seconds. Shared by every front-end (flags, environment, config files).

use std::time::Duration;

/// The longest duration keel accepts (a year): beyond it a typo is likelier than intent, and
/// it keeps `Instant + Duration` far from overflow.
pub const MAX: Duration = Duration::from_secs(366 * 24 * 3600);

/// Parse a duration. The error says what is wrong; the caller names the flag or key.
/// Integer arithmetic in nanoseconds throughout: exact, and no float code in the binary.
pub fn parse(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    if t.is_empty() {
        return Err("empty duration (write e.g. 500ms, 3s, 1m)".into());
    }
    let bad = || format!("'{text}' is not a duration (write e.g. 500ms, 3s, 1m30s, or seconds)");
    let too_long = || format!("'{text}' is longer than the maximum of 366 days");
    let mut total: u128 = 0;
    let mut rest = t;
    let mut parts = 0;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (int, frac) = match rest[..num_len].split_once('.') {
            Some((i, f)) => (i, f),
            None => (&rest[..num_len], ""),
        };
        if int.is_empty() && frac.is_empty() || frac.contains('.') {
            return Err(bad());
        }
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let scale: u128 = match unit {
            "" if parts == 0 && rest.is_empty() => 1_000_000_000,
            "ms" => 1_000_000,
            "s" | "sec" => 1_000_000_000,
            "m" | "min" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "us" => 1_000,
            _ => return Err(bad()),
        };
        // Digits beyond 30 overflow nothing we accept: anything that long is too long.
        if int.len() > 30 {
            return Err(too_long());
        }
        let whole: u128 = if int.is_empty() {
            0
        } else {
            int.parse().map_err(|_| bad())?
        };
        total = total.saturating_add(whole.saturating_mul(scale));
        // The fraction, digit by digit, dropping what is below a nanosecond.
        let mut place = scale;
        for d in frac.bytes() {
            place /= 10;
            total += u128::from(d - b'0') * place;
        }
        parts += 1;
    }
    if total > MAX.as_nanos() {
        return Err(too_long());
    }
    Ok(Duration::from_nanos(total as u64))
}

/// `now + d`, or as far as an `Instant` reaches: an absurd configured duration must mean
/// "very late", never a panic in PID 1.
pub fn later(now: std::time::Instant, d: Duration) -> std::time::Instant {
    now.checked_add(d)
        .or_else(|| now.checked_add(Duration::from_secs(100 * 365 * 86_400)))
        .unwrap_or(now)
}

/// Print a duration the way it would be written: `3s`, `500ms`, `1.5s`.
pub fn display(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else if ms < 1000 {
        format!("{ms}ms")
    } else {
        let frac = format!("{:03}", ms % 1000);
        format!("{}.{}s", ms / 1000, frac.trim_end_matches('0'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_documented_forms() {
        assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("3s"), Ok(Duration::from_secs(3)));
        assert_eq!(parse("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse("2.5s"), Ok(Duration::from_millis(2500)));
        assert_eq!(parse("7"), Ok(Duration::from_secs(7)));
        assert_eq!(parse("0"), Ok(Duration::ZERO));
        assert_eq!(parse(" 0.25 "), Ok(Duration::from_millis(250)));
        assert_eq!(parse(".5s"), Ok(Duration::from_millis(500)));
        assert_eq!(
            parse("1.000000001s"),
            Ok(Duration::from_nanos(1_000_000_001))
        );
        assert!(parse("366d").is_err());
        assert_eq!(parse("8784h"), Ok(MAX));
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "",
            "s",
            "3x",
            "-1s",
            "1.2.3s",
            "3 s",
            "1s2",
            "10000d",
            "99999999999h",
            "ms",
            "1e3",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn displays() {
        assert_eq!(display(Duration::from_secs(3)), "3s");
        assert_eq!(display(Duration::from_millis(500)), "500ms");
        assert_eq!(display(Duration::from_millis(1500)), "1.5s");
        assert_eq!(display(Duration::from_millis(1050)), "1.05s");
    }
}
