//! Stored NARs in the order the scrub takes them: never looked at first, then looked at longest
//! ago, paged; a look that found a NAR intact also records that it was verified.

use nixcache_protocol::{Compression, NarFile, Sha256Hash};

use crate::db::{MetadataStore, NarRecord, Timestamp};

fn nar(n: u8) -> NarRecord {
    NarRecord {
        nar_file: NarFile {
            hash: Sha256Hash::digest(&[n, 7]),
            compression: Compression::Xz,
        },
        file_size: 100 + u64::from(n),
        nar_hash: Sha256Hash::digest(&[n, 8]),
    }
}

pub(super) async fn verification_order(db: &dyn MetadataStore) {
    let nars: Vec<NarRecord> = (0..5).map(nar).collect();
    for rec in &nars {
        db.put_nar(rec).await.unwrap();
    }
    let at = |ms: i64| Timestamp::from_unix_ms(1_700_000_000_000 + ms);
    // 3 verified first, then 1 looked at but not found intact; the rest never looked at.
    assert!(db
        .mark_nar_checked(&nars[3].nar_file, at(10), true)
        .await
        .unwrap());
    assert!(db
        .mark_nar_checked(&nars[1].nar_file, at(20), false)
        .await
        .unwrap());
    let missing = nar(9);
    assert!(!db
        .mark_nar_checked(&missing.nar_file, at(30), true)
        .await
        .unwrap());

    let mut never: Vec<String> = [0, 2, 4].iter().map(|&i| nars[i].nar_file.file_name()).collect();
    never.sort();
    let mut expected = never.clone();
    expected.extend([nars[3].nar_file.file_name(), nars[1].nar_file.file_name()]);
    // Paged two at a time.
    let (mut seen, mut cursor) = (Vec::new(), None);
    loop {
        let page = db.nars_by_check(at(1_000), cursor.as_ref(), 2).await.unwrap();
        let Some(last) = page.last() else { break };
        cursor = Some(last.clone());
        seen.extend(
            page.iter()
                .map(|n| (n.nar_file.file_name(), n.checked_at, n.verified_at)),
        );
    }
    let names: Vec<&String> = seen.iter().map(|(name, _, _)| name).collect();
    assert_eq!(names, expected.iter().collect::<Vec<_>>());
    assert_eq!((seen[3].1, seen[3].2), (at(10), at(10)));
    assert_eq!((seen[4].1, seen[4].2), (at(20), Timestamp::from_unix_ms(0)));
    let first = db.nars_by_check(at(1_000), None, 1).await.unwrap();
    let size = nars
        .iter()
        .find(|n| n.nar_file.file_name() == never[0])
        .unwrap()
        .file_size;
    assert_eq!(
        (first[0].file_size, first[0].checked_at),
        (size, Timestamp::from_unix_ms(0))
    );
    // Only those looked at before `before`: not 1 (at 20).
    let before = db.nars_by_check(at(15), None, 10).await.unwrap();
    assert_eq!(before.len(), 4);
}
