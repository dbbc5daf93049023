//! Durations as people read them, shared by every table and progress line.

/// Microseconds for humans: `850µs`, `1.50ms`, `2.35s`.
pub fn fmt_us(us: u64) -> String {
    match us {
        0..=999 => format!("{us}µs"),
        1_000..=999_999 => format!("{:.2}ms", us as f64 / 1e3),
        _ => format!("{:.2}s", us as f64 / 1e6),
    }
}

/// Milliseconds since the start for humans: `1.25s`.
pub fn fmt_ms(ms: u64) -> String {
    format!("{:.2}s", ms as f64 / 1e3)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_well() {
        assert_eq!(fmt_us(850), "850µs");
        assert_eq!(fmt_us(1500), "1.50ms");
        assert_eq!(fmt_us(2_345_000), "2.35s");
        assert_eq!(fmt_ms(1250), "1.25s");
    }
}
