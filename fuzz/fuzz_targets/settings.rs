//! `settings::parse`, the `--config` file in TOML (first byte even) or YAML (odd). Deeply nested
//! or huge documents must fail, not overflow the stack or hang.

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
    // A value a flag can take, or an error: never a panic, a stack overflow or a hang.
    let _ = parse(text, syntax);
});
