//! Durations as people write them on command lines and in pod annotations (`1s`, `500ms`, `2m`).

use std::time::Duration;

use anyhow::{bail, Context, Result};

/// Parses `500ms`, `10s`, `2m` or a bare number of seconds (`1.5`).
pub fn parse(text: &str) -> Result<Duration> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let value: f64 = number
        .parse()
        .with_context(|| format!("invalid duration {text:?} (expected e.g. 500ms, 10s, 2m)"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        _ => bail!("invalid duration {text:?}: unknown unit {unit:?} (use ms, s or m)"),
    };
    Ok(Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_usual_spellings() {
        assert_eq!(parse("1s").unwrap(), Duration::from_secs(1));
        assert_eq!(parse("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse("1.5").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse(" 10s ").unwrap(), Duration::from_secs(10));
        assert_eq!(parse("0s").unwrap(), Duration::ZERO);
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse("").is_err());
        assert!(parse("soon").is_err());
        assert!(parse("3h").is_err());
        assert!(parse("-1s").is_err());
    }
}
