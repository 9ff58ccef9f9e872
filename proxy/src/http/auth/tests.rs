//! Which file grants what, and the answers `require` gives.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

fn basic(user: &str, password: &str) -> String {
    let raw = format!("{user}:{password}");
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(raw))
}

fn files(read: Option<&str>, write: Option<&str>) -> Files {
    let parse = |text: Option<&str>, what| text.map(|t| parse_file(t, "f", what).unwrap());
    Files {
        read: parse(read, Grant::Read),
        write: parse(write, Grant::Write),
    }
}

#[test]
fn htpasswd_users_and_tokens() {
    let hash = bcrypt::hash("s3cret", 4).unwrap();
    let files = files(
        None,
        Some(&format!("# uploaders\nci:{hash}\n\nsome-long-token-x\n")),
    );
    let check = |header: &str| files.check(header);
    assert!(parse_file("ci\n", "f", Grant::Write)
        .map_err(|e| format!("{:#}", anyhow::Error::from(e)))
        .unwrap_err()
        .contains("at least 16"));
    assert_eq!(check(&basic("ci", "s3cret")), Some(Grant::Write));
    assert_eq!(check(&basic("ci", "wrong")), None);
    assert_eq!(check(&basic("other", "s3cret")), None);
    assert_eq!(check("Bearer some-long-token-x"), Some(Grant::Write));
    assert_eq!(check(&basic("anyone", "some-long-token-x")), Some(Grant::Write));
    for refused in [
        "Bearer some-long-token-",
        "Bearer ",
        "Digest whatever",
        "Basic !!!",
    ] {
        assert_eq!(check(refused), None, "{refused}");
    }
}

#[test]
fn read_and_write_files_grant_what_they_say() {
    let (reader, writer) = (
        bcrypt::hash("r-pass", 4).unwrap(),
        bcrypt::hash("w-pass", 4).unwrap(),
    );
    let both = bcrypt::hash("both-read", 4).unwrap();
    let files = files(
        Some(&format!(
            "reader:{reader}\nshared:{both}\nread-token-0123456789\n"
        )),
        Some(&format!(
            "writer:{writer}\nshared:{writer}\nwrite-token-0123456789\n"
        )),
    );
    assert_eq!(files.check(&basic("reader", "r-pass")), Some(Grant::Read));
    assert_eq!(files.check(&basic("writer", "w-pass")), Some(Grant::Write));
    assert_eq!(files.check(&basic("writer", "r-pass")), None);
    // A name both files know: each file's own password grants its own.
    assert_eq!(files.check(&basic("shared", "w-pass")), Some(Grant::Write));
    assert_eq!(files.check(&basic("shared", "both-read")), Some(Grant::Read));
    assert_eq!(files.check("Bearer read-token-0123456789"), Some(Grant::Read));
    assert_eq!(files.check("Bearer write-token-0123456789"), Some(Grant::Write));
    assert!(Grant::Write > Grant::Read);
}

#[tokio::test]
async fn require_answers_401_403_or_passes() {
    let reader = bcrypt::hash("r-pass", 4).unwrap();
    let creds = Credentials::new(
        files(
            Some(&format!("reader:{reader}\n")),
            Some("write-token-0123456789\n"),
        ),
        Gauge::default(),
    )
    .unwrap();
    let headers = |value: &str| {
        let mut map = HeaderMap::new();
        map.insert(header::AUTHORIZATION, value.parse().unwrap());
        map
    };
    let read = headers(&basic("reader", "r-pass"));
    assert!(creds.require(&read, Grant::Read).await.is_ok());
    // Remembered, with what it grants.
    let digest = token_digest(&basic("reader", "r-pass"));
    assert_eq!(creds.verified.get(&digest), Some(Grant::Read));
    assert!(matches!(
        creds.require(&read, Grant::Write).await,
        Err(Refusal::ReadOnly)
    ));
    let write = headers("Bearer write-token-0123456789");
    assert!(creds.require(&write, Grant::Read).await.is_ok());
    assert!(creds.require(&write, Grant::Write).await.is_ok());
    let none = HeaderMap::new();
    assert!(matches!(
        creds.require(&none, Grant::Read).await,
        Err(Refusal::Unauthorized)
    ));
    let wrong = headers(&basic("reader", "nope"));
    assert!(matches!(
        creds.require(&wrong, Grant::Read).await,
        Err(Refusal::Unauthorized)
    ));
    assert!(creds.private() && creds.writable());
    assert_eq!(
        format!("{creds:?}"),
        "Credentials(read: Some((1, 0)), upload: Some((0, 1)))"
    );
}

#[test]
fn plain_passwords_and_empty_files_are_refused() {
    let err = parse_file("ci:plaintext\n", "creds", Grant::Read)
        .map_err(|e| format!("{:#}", anyhow::Error::from(e)))
        .unwrap_err();
    assert!(err.contains("read credentials file creds"), "{err}");
    assert!(err.contains("line 1") && err.contains("htpasswd -nbB"), "{err}");
    assert!(
        !err.contains("plaintext"),
        "the password must not be shown: {err}"
    );
    let err = parse_file("# nothing\n", "creds", Grant::Write)
        .map_err(|e| format!("{:#}", anyhow::Error::from(e)))
        .unwrap_err();
    assert!(
        err.contains("upload credentials file") && err.contains("holds no credentials"),
        "{err}"
    );
}

#[tokio::test]
async fn parallel_first_requests_share_one_check() {
    // More requests at once than the threads and their queue take (2 + 16): with a check each,
    // some would be refused as busy.
    let hash = bcrypt::hash("r-pass", 4).unwrap();
    let creds = Credentials::new(files(Some(&format!("reader:{hash}\n")), None), Gauge::default()).unwrap();
    let mut headers = HeaderMap::new();
    headers.insert(header::AUTHORIZATION, basic("reader", "r-pass").parse().unwrap());
    let all = (0..60).map(|_| creds.require(&headers, Grant::Read));
    for answer in futures::future::join_all(all).await {
        assert!(answer.is_ok(), "{answer:?}");
    }
    assert!(
        creds.checks.lock().unwrap().is_empty(),
        "a finished check leaves the map"
    );
}
