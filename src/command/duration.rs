//! Durations on the command line, written as kubectl's `--timeout` takes them (Go's duration
//! syntax: `90s`, `5m`, `1h30m`, `1.5h`, `250ms`), plus a bare number meaning seconds (`90`).

use std::time::Duration;

const UNITS: &[(&str, f64)] = &[("h", 3600.0), ("ms", 0.001), ("m", 60.0), ("s", 1.0)];

fn invalid(s: &str, why: &str) -> String {
    format!("`{s}` is not a duration ({why}): write e.g. 90 (seconds), 90s, 5m or 1h30m (units h, m, s, ms)")
}

/// Parses `90`, `90s`, `5m`, `1h30m`, `1.5h`, `250ms`. Errors say what is accepted.
pub fn parse(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err(invalid(s, "empty"));
    }
    if t.bytes().all(|b| b.is_ascii_digit()) {
        return t.parse::<u64>().map(Duration::from_secs).map_err(|_| invalid(s, "too large"));
    }
    let mut rest = t;
    let mut total = 0f64;
    let mut seen: Vec<&str> = Vec::new();
    while !rest.is_empty() {
        let num_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let (num, after) = rest.split_at(num_len);
        if num.is_empty() || num == "." || num.matches('.').count() > 1 {
            return Err(invalid(s, "expected a number before each unit"));
        }
        let value: f64 = num.parse().map_err(|_| invalid(s, "expected a number before each unit"))?;
        let Some((unit, scale)) = UNITS.iter().find(|(u, _)| after.starts_with(u)) else {
            return Err(invalid(s, if after.is_empty() { "a number without a unit" } else { "unknown unit" }));
        };
        if seen.contains(unit) {
            return Err(invalid(s, "a unit is given twice"));
        }
        seen.push(unit);
        total += value * scale;
        rest = &after[unit.len()..];
    }
    Duration::try_from_secs_f64(total).map_err(|_| invalid(s, "too large"))
}

/// The shortest way to write `d` back (`10m`, `1h30m`, `90s` is `1m30s`, `1.5s`).
pub fn show(d: Duration) -> String {
    let secs = d.as_secs();
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    let ms = d.subsec_millis();
    if ms > 0 {
        let frac = format!("{:03}", ms);
        out.push_str(&format!("{s}.{}s", frac.trim_end_matches('0')));
    } else if s > 0 || out.is_empty() {
        out.push_str(&format!("{s}s"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_what_kubectl_timeout_accepts_and_bare_seconds() {
        for (s, secs) in [
            ("90", 90.0),
            ("0", 0.0),
            ("90s", 90.0),
            ("5m", 300.0),
            ("1h30m", 5400.0),
            ("1h30m15s", 5415.0),
            ("1.5h", 5400.0),
            ("250ms", 0.25),
            ("2m500ms", 120.5),
            (" 60s ", 60.0),
        ] {
            assert_eq!(parse(s), Ok(Duration::from_secs_f64(secs)), "{s}");
        }
    }

    #[test]
    fn rejects_with_what_is_accepted() {
        for (s, why) in [
            ("", "empty"),
            ("5x", "unknown unit"),
            ("m", "expected a number"),
            ("1.5", "a number without a unit"),
            ("1h2", "a number without a unit"),
            ("-5s", "expected a number"),
            ("5m5m", "given twice"),
            ("1..5s", "expected a number"),
            ("5 m", "unknown unit"),
            ("99999999999999999999", "too large"),
            ("1e3s", "unknown unit"),
        ] {
            let e = parse(s).unwrap_err();
            assert!(e.contains(why), "{s:?}: {e}");
            assert!(e.contains("90 (seconds), 90s, 5m or 1h30m"), "{s:?}: {e}");
        }
    }

    #[test]
    fn shows_the_short_form() {
        assert_eq!(show(Duration::from_secs(600)), "10m");
        assert_eq!(show(Duration::from_secs(90)), "1m30s");
        assert_eq!(show(Duration::from_secs(5400)), "1h30m");
        assert_eq!(show(Duration::from_secs(3601)), "1h1s");
        assert_eq!(show(Duration::ZERO), "0s");
        assert_eq!(show(Duration::from_millis(1500)), "1.5s");
        for s in ["10m", "1h30m", "45s", "2h5m7s"] {
            assert_eq!(show(parse(s).unwrap()), s);
        }
    }
}
