//! Many concurrent send-backs: every nacked message arrives exactly once in its group's
//! retry topic (no crash, so no redelivery), whatever the interleaving.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::sync::Arc;

use crate::support::retry::*;
use broker::store::{GetRequest, QueueOffset, TagFilter};
use protocol::properties::ORIGIN_MSG_ID;

const THREADS: usize = 8;
const PER_THREAD: usize = 25;

#[test]
fn concurrent_nacks_all_arrive_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    let service = Arc::new(start(&store, 16));
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let store = Arc::clone(&store);
            let service = Arc::clone(&service);
            std::thread::spawn(move || {
                let group = if t % 2 == 0 { "even" } else { "odd" };
                (0..PER_THREAD)
                    .map(|i| {
                        let id = produce(&store, format!("t{t} m{i}").as_bytes());
                        assert_eq!(nack(&service, group, &id).reconsume_times, 1);
                        (group, id)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let sent: Vec<(&str, String)> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();

    for group in ["even", "odd"] {
        let topic = format!("%RETRY%{group}");
        let want: BTreeSet<String> = sent
            .iter()
            .filter(|(g, _)| *g == group)
            .map(|(_, id)| id.clone())
            .collect();
        let n = want.len() as u64;
        wait_message(&store, &topic, n - 1);
        let got = store
            .get_messages(GetRequest {
                topic: &topic,
                queue_id: 0,
                from: QueueOffset::new(0),
                max_count: 1_000,
                max_bytes: 16 << 20,
                filter: &TagFilter::All,
            })
            .unwrap();
        let origins: Vec<String> = got
            .messages
            .iter()
            .map(|r| prop(r, ORIGIN_MSG_ID).unwrap())
            .collect();
        assert_eq!(origins.len() as u64, n, "{group}: duplicates or losses");
        assert_eq!(origins.into_iter().collect::<BTreeSet<_>>(), want);
    }
    let service = Arc::try_unwrap(service).unwrap();
    shut_down(service, store);
}
