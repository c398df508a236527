//! Durations in the config file: Go's grammar (`300ms`, `1.5s`, `1h30m`,
//! `2h45m10.5s`; units ns, us, µs, ms, s, m, h), read by the parser shared with
//! the Consul API (`discovery::api::gofmt`), plus a bare number as seconds
//! (ContainerPilot accepted that), with errors that say what to write.

use std::time::Duration;

use crate::discovery::api::gofmt;

/// Parse a Go-style duration; the error names the value and the grammar.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let bad = || {
        format!("'{s}' is not a duration (use a number with a unit, e.g. \"500ms\", \"10s\", \"1m30s\")")
    };
    if t.is_empty() {
        return Err(bad());
    }
    if let Ok(secs) = t.parse::<f64>() {
        return Duration::try_from_secs_f64(secs).map_err(|_| bad());
    }
    gofmt::parse_duration(t).map_err(|_| bad())
}

/// A duration in messages: Go's spelling (`1m30s`, `500ms`) of `d` rounded to
/// the millisecond, so a jittered backoff reads `1.373s`, not `1.372919416s`.
/// Below a millisecond nothing is rounded (`250µs`).
pub fn format_duration(d: Duration) -> String {
    const MS: u128 = 1_000_000;
    let ns = d.as_nanos();
    if ns < MS {
        return gofmt::format_duration(d);
    }
    let ms = u64::try_from((ns + MS / 2) / MS).unwrap_or(u64::MAX);
    gofmt::format_duration(Duration::from_millis(ms))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn go_grammar_or_bare_seconds() {
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert_eq!(parse_duration(" 2.5 "), Ok(Duration::from_millis(2500)));
        assert_eq!(
            parse_duration("10x"),
            Err("'10x' is not a duration (use a number with a unit, e.g. \"500ms\", \"10s\", \"1m30s\")".to_string())
        );
        for bad in ["", "s", "1.2.3s", "-1s", "-1", "ten seconds", "5 s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn formats_like_go_to_the_millisecond() {
        assert_eq!(format_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(format_duration(Duration::from_millis(500)), "500ms");
        assert_eq!(format_duration(Duration::from_secs(10)), "10s");
        assert_eq!(format_duration(Duration::ZERO), "0s");
        assert_eq!(format_duration(Duration::from_micros(250)), "250µs");
        assert_eq!(
            format_duration(Duration::from_nanos(1_372_919_416)),
            "1.373s"
        );
        assert_eq!(format_duration(Duration::from_secs(3600)), "1h0m0s");
    }

    proptest! {
        #[test]
        fn millis_round_trip(ms in 0u64..10_000_000) {
            prop_assert_eq!(parse_duration(&format!("{ms}ms")), Ok(Duration::from_millis(ms)));
            let d = Duration::from_millis(ms);
            prop_assert_eq!(parse_duration(&format_duration(d)), Ok(d));
        }
    }
}
