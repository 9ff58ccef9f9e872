//! `Netrc::parse`, the `--netrc-file` the upstream client reads credentials from (Nix's and
//! curl's format). Without a `default` entry, a host the file does not name gets no credentials
//! (a `machine` whose name is missing must not become one), and a password never shows in
//! `Debug`, which is what the proxy's logs print.

#![no_main]

use libfuzzer_sys::fuzz_target;
use nixcache_formats::netrc::Netrc;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let netrc = Netrc::parse(&text);
    let hosts = text
        .split_whitespace()
        .zip(text.split_whitespace().skip(1))
        .filter(|(token, _)| *token == "machine")
        .map(|(_, host)| host);
    let unknown = "not-in-the-file.invalid";
    if !text.contains("default") && !text.contains(unknown) {
        assert!(
            netrc.lookup(unknown).is_none(),
            "credentials for every host: {text:?}"
        );
    }
    for host in hosts.chain([unknown]) {
        let Some(creds) = netrc.lookup(host) else {
            continue;
        };
        let shown = format!("{creds:?}");
        let expected = format!("Credentials {{ login: {:?}, password: \"***\" }}", creds.login);
        assert_eq!(shown, expected);
    }
});
