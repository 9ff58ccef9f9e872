//! `settings::parse`, the `--config` file in TOML (first byte even) or YAML (odd). Deeply nested
//! or huge documents must fail, not overflow the stack or hang; TOML keys that parse are unique
//! (each becomes one flag).

#![no_main]

use libfuzzer_sys::fuzz_target;
use nixcache_formats::settings::{parse, Syntax};

fuzz_target!(|data: &[u8]| {
    let Some((&choice, text)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(text) else {
        return;
    };
    let syntax = if choice % 2 == 0 {
        Syntax::Toml
    } else {
        Syntax::Yaml
    };
    let Ok(settings) = parse(text, syntax) else {
        return;
    };
    let mut keys: Vec<&str> = settings.iter().map(|(k, _)| k.as_str()).collect();
    keys.sort_unstable();
    let before = keys.len();
    keys.dedup();
    if syntax == Syntax::Toml {
        assert_eq!(keys.len(), before, "a TOML key twice: {text:?}");
    }
});
