//! A database password given in the URL's query (`?password=…`, as libpq and sqlx accept it) is
//! never printed: not in start-up errors, not by `migrate`, not in the log, not in `Debug`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use clap::Parser;
use common::Logs;
use nixcache::cli::{Cli, Command};

const SECRET: &str = "hunter2";
/// A closed port: connecting fails at once.
const URL: &str = "postgres://postgres@127.0.0.1:1/test?password=hunter2&sslmode=disable";

fn assert_hidden(what: &str, text: &str) {
    assert!(!text.contains(SECRET), "{what} shows the password: {text}");
}

#[tokio::test]
async fn a_database_password_in_the_query_is_never_printed() {
    let logs = Logs::capture();
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let netrc = dir.path().join("empty.netrc");
    std::fs::write(&netrc, "").unwrap();
    let cli = Cli::try_parse_from([
        "nixcache",
        "serve",
        "--data-dir",
        data_dir.to_str().unwrap(),
        "--database-url",
        URL,
        "--netrc-file",
        netrc.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--advertise-url",
        "http://127.0.0.1:1",
        "--upstream",
        "http://127.0.0.1:1",
    ])
    .unwrap();
    assert_hidden("Debug of the command line", &format!("{cli:?}"));
    let Command::Serve(args) = cli.command else {
        panic!("not serve")
    };

    let started = tokio::time::timeout(common::TIMEOUT, nixcache::app::build_state(&args))
        .await
        .expect("start-up did not fail in time");
    let err = started.err().expect("started without a database");
    let message = format!("{err:#}");
    assert!(message.contains("127.0.0.1:1"), "names the database: {message}");
    assert_hidden("the start-up error", &message);
    assert_hidden("Debug of the start-up error", &format!("{err:?}"));

    // `nixcache migrate` prints the error of `run`, and on success `report`.
    let err = tokio::time::timeout(common::TIMEOUT, nixcache::db::migrate::run(URL))
        .await
        .expect("migrate did not fail in time")
        .unwrap_err();
    assert!(err.to_string().contains("127.0.0.1:1"), "{err}");
    assert_hidden("the migrate error", &err.to_string());
    assert_hidden("Debug of the migrate error", &format!("{err:?}"));
    assert_hidden("the migrate report", &nixcache::db::migrate::report(URL, &[]));

    assert_hidden("the log", &logs.text());
}
