//! Text the API server stores has size limits (an event's note 1 KiB, a condition's message
//! 32 KiB): cutting it to size, and onto one line.

/// Marks text that was cut.
const ELLIPSIS: &str = "…";

/// `text` if it fits in `max_bytes` bytes of UTF-8; else its longest prefix that fits with `…`
/// appended, cut on a character boundary.
pub fn bounded(text: &str, max_bytes: usize) -> String {
    if text.len() <= max_bytes {
        return text.to_owned();
    }
    let Some(budget) = max_bytes.checked_sub(ELLIPSIS.len()) else {
        return prefix(text, max_bytes).to_owned();
    };
    format!("{}{ELLIPSIS}", prefix(text, budget))
}

/// `text` on one line: every run of whitespace (line breaks included) becomes one space.
pub fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The longest prefix of `text` of at most `max_bytes` bytes that ends on a character boundary.
fn prefix(text: &str, max_bytes: usize) -> &str {
    let mut end = max_bytes.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_is_kept() {
        assert_eq!(bounded("Ready=True", 1024), "Ready=True");
        assert_eq!(bounded("abc", 3), "abc");
    }

    #[test]
    fn long_text_is_cut_on_a_char_boundary_with_an_ellipsis() {
        // "é" is two bytes: a cut at an odd byte would split one.
        let text = "é".repeat(1000);
        let cut = bounded(&text, 1024);
        assert!(cut.len() <= 1024, "{}", cut.len());
        assert_eq!(cut, format!("{}…", "é".repeat(510)));
        assert_eq!(bounded("abcdef", 5), "ab…");
        assert_eq!(bounded("abcdef", 2), "ab");
    }

    #[test]
    fn line_breaks_become_spaces() {
        assert_eq!(one_line("a\n  b\tc \r\n"), "a b c");
    }
}
