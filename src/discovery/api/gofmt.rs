//! The Go spellings Consul's wire format inherits, in one place: durations as
//! `time.Duration` prints and `time.ParseDuration` reads them, `[]byte` as
//! standard base64 (`encoding/json`), and strings quoted as `%q`/`strconv.Quote`
//! does in Consul's error texts.

use std::time::Duration;

/// Go's `time.Duration.String()`: `0s`, `7ns`, `1.5µs`, `500ms`, `1.5s`,
/// `1m30s`, `1h0m0s`, every digit kept.
pub fn format_duration(d: Duration) -> String {
    const S: u128 = 1_000_000_000;
    const M: u128 = 60 * S;
    const H: u128 = 60 * M;
    match d.as_nanos() {
        0 => "0s".to_string(),
        ns if ns < 1_000 => format!("{ns}ns"),
        ns if ns < 1_000_000 => format!("{}µs", fixed(ns, 1_000)),
        ns if ns < S => format!("{}ms", fixed(ns, 1_000_000)),
        ns => {
            let (h, m, s) = (ns / H, ns % H / M, ns % M);
            let mut out = String::new();
            if h > 0 {
                out.push_str(&format!("{h}h"));
            }
            if h > 0 || m > 0 {
                out.push_str(&format!("{m}m"));
            }
            out.push_str(&format!("{}s", fixed(s, S)));
            out
        }
    }
}

/// `v / unit` (a power of ten) with the fraction's trailing zeros dropped.
fn fixed(v: u128, unit: u128) -> String {
    let (int, frac) = (v / unit, v % unit);
    if frac == 0 {
        return int.to_string();
    }
    let width = unit.ilog10() as usize;
    let digits = format!("{frac:0width$}");
    format!("{int}.{}", digits.trim_end_matches('0'))
}

/// Go's `time.ParseDuration` for durations that cannot be negative: a unit is
/// required except for `0`, decimals are allowed (`1.5s`, `1h30m`, `300ms`;
/// units ns, us, µs, ms, s, m, h), surrounding spaces are ignored. The error
/// is Go's text (`time: missing unit in duration "10"`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    if t.is_empty() || t.parse::<f64>().is_ok() {
        return Err(format!("time: missing unit in duration \"{s}\""));
    }
    let t = t.strip_prefix('+').unwrap_or(t);
    sum_of_units(t).ok_or_else(|| format!("time: invalid duration \"{s}\""))
}

/// `<number><unit>` repeated, at least once; `None` for anything else.
fn sum_of_units(t: &str) -> Option<Duration> {
    if t.is_empty() {
        return None;
    }
    let mut total = 0f64; // nanoseconds
    let mut rest = t;
    while !rest.is_empty() {
        let num_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        if num_len == 0 {
            return None;
        }
        let value: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += value * scale;
    }
    if !total.is_finite() || total > u64::MAX as f64 {
        return None;
    }
    Some(Duration::from_nanos(total.round() as u64))
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding (Go's `base64.StdEncoding`, which encodes
/// `[]byte` fields in JSON).
pub fn base64_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decode standard base64; padding is optional, whitespace is not allowed.
pub fn base64_decode(text: &str) -> Result<Vec<u8>, String> {
    let trimmed = text.trim_end_matches('=');
    if text.len() - trimmed.len() > 2 {
        return Err(format!(
            "illegal base64 data at input byte {}",
            trimmed.len()
        ));
    }
    let mut out = Vec::with_capacity(trimmed.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for (i, c) in trimmed.bytes().enumerate() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return Err(format!("illegal base64 data at input byte {i}")),
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    if bits >= 6 {
        return Err(format!(
            "illegal base64 data at input byte {}",
            trimmed.len()
        ));
    }
    Ok(out)
}

/// Go's `%q` (also `%#v`) of a string: double quotes, backslash escapes, as
/// Consul's error texts quote keys and IDs.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian
/// calendar (Howard Hinnant's `civil_from_days`).
pub fn civil_date(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// A Unix time in seconds as (year, month, day, hour, minute, second) UTC.
fn utc(unix_secs: u64) -> (u64, u64, u64, u64, u64, u64) {
    let (year, month, day) = civil_date(unix_secs / 86_400);
    let of_day = unix_secs % 86_400;
    (
        year,
        month,
        day,
        of_day / 3600,
        of_day / 60 % 60,
        of_day % 60,
    )
}

/// A Unix time in whole seconds as Go's `time.RFC3339` prints a UTC
/// `time.Time`: `2024-05-20T10:00:00Z`.
pub fn rfc3339_utc(unix_secs: u64) -> String {
    let (y, mo, d, h, mi, s) = utc(unix_secs);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
}

/// A Unix time in ms as `2024-05-20T10:00:00.000Z` (hclog's timestamp).
pub fn rfc3339_millis(unix_ms: u64) -> String {
    let (y, mo, d, h, mi, s) = utc(unix_ms / 1000);
    format!(
        "{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{:03}Z",
        unix_ms % 1000
    )
}

/// A Unix time in seconds as Go's `time.Time.String()` in UTC:
/// `2024-05-20 02:55:10 +0000 UTC`.
pub fn go_time_string(unix_secs: u64) -> String {
    let (y, mo, d, h, mi, s) = utc(unix_secs);
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02} +0000 UTC")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn durations_format_like_go() {
        let ns = |n: u64| format_duration(Duration::from_nanos(n));
        let ms = |n: u64| format_duration(Duration::from_millis(n));
        assert_eq!(ms(0), "0s");
        assert_eq!(ns(7), "7ns");
        assert_eq!(ns(999), "999ns");
        assert_eq!(ns(1_500), "1.5µs");
        assert_eq!(ns(1_500_000), "1.5ms");
        assert_eq!(ns(23_840_000), "23.84ms");
        assert_eq!(ms(500), "500ms");
        assert_eq!(ms(1_500), "1.5s");
        assert_eq!(ms(10_000), "10s");
        assert_eq!(ns(15_500_000_000), "15.5s");
        assert_eq!(ns(1_000_000_001), "1.000000001s");
        assert_eq!(ms(90_000), "1m30s");
        assert_eq!(ms(3_600_000), "1h0m0s");
        assert_eq!(ms(86_400_000), "24h0m0s");
    }

    #[test]
    fn durations_parse_like_go() {
        assert_eq!(parse_duration("9.87s"), Ok(Duration::from_millis(9870)));
        assert_eq!(parse_duration("60000ms"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("10us"), Ok(Duration::from_micros(10)));
        assert_eq!(parse_duration("+5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(
            parse_duration("10"),
            Err("time: missing unit in duration \"10\"".to_string())
        );
        assert_eq!(
            parse_duration("-1s"),
            Err("time: invalid duration \"-1s\"".to_string())
        );
        for bad in ["", "+", "s", "10x", "1.2.3s", "5 s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        for ms in [0, 1, 999, 1_000, 1_500, 90_000, 3_600_000, 86_399_999] {
            let d = Duration::from_millis(ms);
            assert_eq!(parse_duration(&format_duration(d)), Ok(d));
        }
    }

    #[test]
    fn base64_round_trips_like_go() {
        for (raw, enc) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("hello world", "aGVsbG8gd29ybGQ="),
        ] {
            assert_eq!(base64_encode(raw.as_bytes()), enc);
            assert_eq!(base64_decode(enc).unwrap(), raw.as_bytes());
        }
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(base64_decode(&base64_encode(&all)).unwrap(), all);
        assert!(base64_decode("Zm9v!").is_err());
        assert!(base64_decode("Z").is_err());
    }

    #[test]
    fn go_quote_escapes_like_go() {
        assert_eq!(go_quote("a\"b\\c\n"), "\"a\\\"b\\\\c\\n\"");
        assert_eq!(go_quote("\u{1}\u{7f}é"), "\"\\x01\\x7fé\"");
    }
}
