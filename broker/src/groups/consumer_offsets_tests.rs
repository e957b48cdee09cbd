#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

fn commit(topic: &str, queue_id: u32, offset: u64, ranges: &[(u64, u64)]) -> QueueCommit {
    QueueCommit {
        topic: topic.into(),
        queue_id,
        offset,
        acked_above: ranges
            .iter()
            .map(|&(start, end)| OffsetRange { start, end })
            .collect(),
    }
}

#[test]
fn commits_are_normalised_and_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let o = ConsumerOffsets::open(dir.path()).unwrap();
    assert_eq!(o.get("g", "orders", 0), None);
    o.commit("g", &[commit("orders", 0, 0, &[(11, 1000), (0, 10)])])
        .unwrap();
    assert_eq!(
        o.get("g", "orders", 0),
        Some(commit("orders", 0, 10, &[(11, 1000)]))
    );
    assert_eq!(o.get("g", "orders", 1), None);
    assert_eq!(o.get("h", "orders", 0), None);
}

#[test]
fn a_bad_range_refuses_the_whole_commit() {
    let dir = tempfile::tempdir().unwrap();
    let o = ConsumerOffsets::open(dir.path()).unwrap();
    let err = o
        .commit(
            "g",
            &[
                commit("orders", 0, 5, &[]),
                commit("orders", 1, 0, &[(9, 3)]),
            ],
        )
        .unwrap_err();
    assert!(
        matches!(
            err,
            OffsetsError::InvalidRange {
                queue_id: 1,
                start: 9,
                end: 3,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(o.get("g", "orders", 0), None);
    assert!(!o.is_dirty());
}

#[test]
fn persist_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let o = ConsumerOffsets::open(dir.path()).unwrap();
    o.commit(
        "g",
        &[
            commit("orders", 0, 10, &[(11, 1000)]),
            commit("orders", 3, 7, &[]),
        ],
    )
    .unwrap();
    o.commit("h", &[commit("%RETRY%h", 0, 2, &[(4, 5), (8, 9)])])
        .unwrap();
    o.persist().unwrap();
    assert_eq!(o.path(), dir.path().join("config").join("offsets"));
    drop(o);

    let back = ConsumerOffsets::open(dir.path()).unwrap();
    assert!(!back.is_dirty());
    assert_eq!(back.groups(), vec!["g".to_string(), "h".to_string()]);
    assert_eq!(
        back.queues_of("g"),
        vec![
            commit("orders", 0, 10, &[(11, 1000)]),
            commit("orders", 3, 7, &[])
        ]
    );
    assert_eq!(
        back.get("h", "%RETRY%h", 0),
        Some(commit("%RETRY%h", 0, 2, &[(4, 5), (8, 9)]))
    );
}

#[test]
fn dirty_tracking() {
    let dir = tempfile::tempdir().unwrap();
    let o = ConsumerOffsets::open(dir.path()).unwrap();
    assert!(!o.is_dirty());
    o.persist().unwrap();
    assert!(!o.path().exists(), "nothing to save, nothing written");
    o.commit("g", &[commit("t", 0, 4, &[])]).unwrap();
    assert!(o.is_dirty());
    o.persist().unwrap();
    assert!(!o.is_dirty());
    // Committing the same progress again is not a change.
    o.commit("g", &[commit("t", 0, 4, &[])]).unwrap();
    assert!(!o.is_dirty());
    o.commit("g", &[commit("t", 0, 5, &[])]).unwrap();
    assert!(o.is_dirty());
}

#[test]
fn a_failed_persist_keeps_what_was_saved_and_stays_dirty() {
    let dir = tempfile::tempdir().unwrap();
    let o = ConsumerOffsets::open(dir.path()).unwrap();
    o.commit("g", &[commit("t", 0, 1, &[])]).unwrap();
    o.persist().unwrap();
    let before = fs::read(o.path()).unwrap();
    drop(o);

    // A folder where the journal should go makes the next save fail (changes are
    // appended there since the save is append-only).
    let o = ConsumerOffsets::open(dir.path()).unwrap();
    let jnl = o.path().with_file_name("offsets.jnl");
    fs::remove_file(&jnl).unwrap();
    fs::create_dir(&jnl).unwrap();
    o.commit("g", &[commit("t", 0, 2, &[])]).unwrap();
    let err = o.persist().unwrap_err();
    assert!(matches!(err, OffsetsError::Io { .. }), "{err}");
    assert!(o.is_dirty());
    assert_eq!(fs::read(o.path()).unwrap(), before);

    fs::remove_dir(&jnl).unwrap();
    o.persist().unwrap();
    assert!(!o.is_dirty());
    assert_eq!(
        ConsumerOffsets::open(dir.path())
            .unwrap()
            .get("g", "t", 0)
            .unwrap()
            .offset,
        2
    );
}

#[test]
fn a_leftover_temp_file_is_ignored_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let o = ConsumerOffsets::open(dir.path()).unwrap();
    o.commit("g", &[commit("t", 0, 3, &[])]).unwrap();
    o.persist().unwrap();
    fs::write(
        o.path().with_file_name("offsets.x7Yz9Q.tmp"),
        b"{\"version\":1,\"queu",
    )
    .unwrap();
    let back = ConsumerOffsets::open(dir.path()).unwrap();
    assert_eq!(back.get("g", "t", 0).unwrap().offset, 3);
}

#[test]
fn a_corrupt_file_is_an_error_not_a_reset() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config");
    fs::create_dir_all(&config).unwrap();
    let path = config.join("offsets");

    fs::write(&path, b"{\"version\":1,\"queues\":[{\"gro").unwrap();
    let err = ConsumerOffsets::open(dir.path()).unwrap_err();
    assert!(matches!(err, OffsetsError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("offsets"), "{err}");

    fs::write(&path, b"{\"version\":7,\"queues\":[]}").unwrap();
    let err = ConsumerOffsets::open(dir.path()).unwrap_err();
    assert!(
        matches!(err, OffsetsError::UnsupportedVersion { found: 7, .. }),
        "{err}"
    );

    let bad_range = br#"{"version":1,"queues":[{"group":"g","topic":"t","queue_id":0,
        "offset":0,"acked_above":[{"start":5,"end":2}]}]}"#;
    fs::write(&path, bad_range).unwrap();
    let err = ConsumerOffsets::open(dir.path()).unwrap_err();
    assert!(
        matches!(err, OffsetsError::CorruptEntry { ref group, .. } if group == "g"),
        "{err}"
    );
}

#[test]
fn reset_and_remove_topic() {
    let dir = tempfile::tempdir().unwrap();
    let o = ConsumerOffsets::open(dir.path()).unwrap();
    o.commit(
        "g",
        &[commit("t", 0, 10, &[(12, 20)]), commit("u", 0, 1, &[])],
    )
    .unwrap();
    o.persist().unwrap();
    let c = o.reset("g", "t", 0, 3);
    assert_eq!(c, commit("t", 0, 3, &[]));
    assert_eq!(o.get("g", "t", 0), Some(c));
    assert!(o.is_dirty());
    o.persist().unwrap();
    o.remove_topic("t");
    assert!(o.is_dirty());
    assert_eq!(o.queues_of("g"), vec![commit("u", 0, 1, &[])]);
    o.remove_topic("u");
    assert!(o.groups().is_empty());
}

#[test]
fn exact_ack_survives_a_restart() {
    // Acked 0..1000 except 10: after a restart the next owner must redeliver 10 only.
    let dir = tempfile::tempdir().unwrap();
    let o = ConsumerOffsets::open(dir.path()).unwrap();
    o.commit("g", &[commit("t", 0, 0, &[(0, 10), (11, 1000)])])
        .unwrap();
    o.persist().unwrap();
    drop(o);
    let c = ConsumerOffsets::open(dir.path())
        .unwrap()
        .get("g", "t", 0)
        .unwrap();
    let pending: Vec<u64> = (0..1000)
        .filter(|q| !ack::is_acked(c.offset, &c.acked_above, *q))
        .collect();
    assert_eq!(pending, vec![10]);
}

#[test]
fn a_commit_from_before_a_reset_is_refused_and_one_after_applies() {
    let dir = tempfile::tempdir().unwrap();
    let o = ConsumerOffsets::open(dir.path()).unwrap();
    assert_eq!(o.reset_epoch("g"), 0);
    // No reset since start: whatever epoch a member remembers, its commit applies.
    o.commit_fenced("g", Some(7), &[commit("orders", 0, 50, &[])])
        .unwrap();

    let epoch = o.begin_reset("g", 1_000);
    assert_eq!(
        (epoch, o.reset_epoch("g"), o.reset_epoch("h")),
        (1_000, 1_000, 0)
    );
    o.reset("g", "orders", 0, 0);
    let err = o
        .commit_fenced("g", Some(0), &[commit("orders", 0, 50, &[])])
        .unwrap_err();
    assert!(
        matches!(err, OffsetsError::ResetSince { current: 1_000, .. }),
        "{err}"
    );
    assert_eq!(o.get("g", "orders", 0), Some(commit("orders", 0, 0, &[])));

    o.commit_fenced("g", Some(epoch), &[commit("orders", 0, 3, &[])])
        .unwrap();
    o.commit_fenced("g", None, &[commit("orders", 0, 4, &[])])
        .unwrap();
    assert_eq!(o.get("g", "orders", 0), Some(commit("orders", 0, 4, &[])));
    // Epochs only grow, even when the clock says otherwise.
    assert_eq!(o.begin_reset("g", 5), 1_001);
}

#[test]
fn removing_a_group_forgets_only_its_offsets_and_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let o = ConsumerOffsets::open(dir.path()).unwrap();
    o.commit("g", &[commit("a", 0, 3, &[]), commit("b", 1, 4, &[])])
        .unwrap();
    o.commit("h", &[commit("a", 0, 9, &[])]).unwrap();
    o.persist().unwrap();
    assert_eq!(o.remove_group("g"), 2);
    assert_eq!(o.remove_group("g"), 0, "already gone");
    assert!(o.is_dirty());
    o.persist().unwrap();
    let o = ConsumerOffsets::open(dir.path()).unwrap();
    assert_eq!(o.get("g", "a", 0), None);
    assert_eq!(o.groups(), vec!["h".to_string()]);
}

#[test]
fn a_persist_appends_only_what_changed_and_a_reopen_replays_it() {
    let dir = tempfile::tempdir().unwrap();
    let o = ConsumerOffsets::open(dir.path()).unwrap();
    let jnl = dir.path().join("config").join("offsets.jnl");
    for g in 0..300 {
        o.commit(&format!("g{g}"), &[commit("orders", 0, 1, &[])])
            .unwrap();
    }
    o.persist().unwrap();
    let before = std::fs::metadata(&jnl).unwrap().len();
    o.commit("g7", &[commit("orders", 0, 9, &[(11, 12)])])
        .unwrap();
    o.remove_group("g8");
    o.persist().unwrap();
    let grew = std::fs::metadata(&jnl).unwrap().len() - before;
    assert!(grew < 300, "two entries, not 300 groups: {grew} bytes");
    let o = ConsumerOffsets::open(dir.path()).unwrap();
    assert_eq!(
        o.get("g7", "orders", 0),
        Some(commit("orders", 0, 9, &[(11, 12)]))
    );
    assert_eq!(o.get("g8", "orders", 0), None);
    assert_eq!(o.groups().len(), 299);
}

#[test]
fn the_journal_is_folded_into_the_snapshot_and_a_torn_tail_is_cut() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config");
    let jnl = config.join("offsets.jnl");
    let o = ConsumerOffsets::open(dir.path()).unwrap();
    let mut shrank = false;
    let mut last = 0;
    for i in 0..3_000u64 {
        o.commit("g", &[commit("orders", (i % 7) as u32, i, &[])])
            .unwrap();
        o.persist().unwrap();
        let len = std::fs::metadata(&jnl).unwrap().len();
        shrank |= len < last;
        last = len;
    }
    assert!(shrank, "compacted at least once");
    assert!(config.join("offsets").exists());
    o.commit("g", &[commit("orders", 0, 5_000, &[])]).unwrap();
    o.persist().unwrap();
    drop(o);
    // A torn last frame: the commit it held is lost (redelivery), nothing else.
    let len = std::fs::metadata(&jnl).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&jnl)
        .unwrap()
        .set_len(len - 2)
        .unwrap();
    let o = ConsumerOffsets::open(dir.path()).unwrap();
    assert_eq!(o.get("g", "orders", 0).unwrap().offset, 2_996);
    assert_eq!(o.get("g", "orders", 6).unwrap().offset, 2_995);
    // Appends go on after the cut.
    o.commit("g", &[commit("orders", 1, 7_000, &[])]).unwrap();
    o.persist().unwrap();
    drop(o);
    let o = ConsumerOffsets::open(dir.path()).unwrap();
    assert_eq!(o.get("g", "orders", 1).unwrap().offset, 7_000);
}
