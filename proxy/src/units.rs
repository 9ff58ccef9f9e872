//! Human sizes on the command line (`--max-size 50G`) and in reports (`1.5 GiB`).

/// Parses `50G`, `50GiB`, `50GB`, `500M`, `1.5T` or plain bytes. Every unit is a power of 1024
/// (`50G` = `50GiB`), as `du -h` and `df -h` count.
pub fn parse_size(text: &str) -> Result<u64, String> {
    parse_size::Config::new()
        .with_binary()
        .parse_size(text.trim())
        .map_err(|e| format!("invalid size {text:?} ({e}): use e.g. 50G, 500M or a number of bytes"))
}

/// `1536` → `1.5 KiB`.
pub fn format_size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn sizes_are_binary() {
        assert_eq!(parse_size("50G"), Ok(50 << 30));
        assert_eq!(parse_size("50GiB"), Ok(50 << 30));
        assert_eq!(parse_size("50 GB"), Ok(50 << 30));
        assert_eq!(parse_size("500M"), Ok(500 << 20));
        assert_eq!(parse_size("1.5K"), Ok(1536));
        assert_eq!(parse_size("12345"), Ok(12345));
        assert!(parse_size("lots").unwrap_err().contains("invalid size \"lots\""));
        assert!(parse_size("-1G").is_err());
    }

    #[test]
    fn sizes_format() {
        assert_eq!(format_size(0), "0 B");
        assert_eq!(format_size(1023), "1023 B");
        assert_eq!(format_size(1536), "1.5 KiB");
        assert_eq!(format_size(50 << 30), "50.0 GiB");
    }
}
