//! Recovery of commits that a crash cut short, on crafted logs: the commit record and a
//! prefix of its copies (as a SIGKILL in the middle of the append leaves them), and the
//! same again inside recovery's own completion.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use protocol::properties::Properties;
use protocol::tx::TX_INDEX;

use super::*;
use crate::store::{MessageStore, StoreConfig, TagFilter};
use crate::tx::{TxConfig, TxService};

fn msg(body: &[u8]) -> PutMessage<'_> {
    PutMessage {
        properties: &[],
        body,
        born_timestamp_ms: 1,
        reconsume_times: 0,
    }
}

/// Indexes of the committed copies in queue 0 of `t`, in queue order.
fn indexes(store: &MessageStore) -> Vec<u32> {
    let end = store.queue_range("t", 0).unwrap().1;
    if end.get() > 0 {
        assert!(store.wait_for_message(
            "t",
            0,
            QueueOffset::new(end.get() - 1),
            Duration::from_secs(10)
        ));
    }
    let got = store
        .get_messages(GetRequest {
            topic: "t",
            queue_id: 0,
            from: QueueOffset::new(0),
            max_count: 100,
            max_bytes: 1 << 20,
            filter: &TagFilter::All,
        })
        .unwrap();
    got.messages
        .iter()
        .map(|r| {
            Properties::new(r.view().properties())
                .get(TX_INDEX)
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect()
}

fn no_acks(_: &[records::AckItem]) -> Result<(), String> {
    Ok(())
}

/// A transaction of five messages to `t`, sent and not ended.
fn five(store: &Arc<MessageStore>) -> (TxService, u64, Vec<MessageId>) {
    let tx = TxService::open(Arc::clone(store), TxConfig::default()).unwrap();
    let id = tx.begin("pg", None).unwrap();
    let bodies: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i]).collect();
    let msgs: Vec<PutMessage<'_>> = bodies.iter().map(|b| msg(b)).collect();
    tx.send(&id, "t", 0, &msgs).unwrap();
    let n = records::parse_id(&id).unwrap();
    let ids = tx.lock().txs[&n].msgs.clone();
    (tx, n, ids)
}

#[test]
fn a_commit_cut_after_two_copies_is_completed_once_at_start() {
    let dir = tempfile::TempDir::new().unwrap();
    let store = Arc::new(MessageStore::open(StoreConfig::new(dir.path())).unwrap());
    let (tx, n, ids) = five(&store);
    // What survives a crash in the middle of the commit's append: the commit record
    // (saying copies from 0 follow) and the first two copies.
    tx.append_commit(n, &ids[..2], 0).unwrap();
    drop(tx);
    assert_eq!(indexes(&store), [0, 1]);

    let tx = TxService::open(Arc::clone(&store), TxConfig::default()).unwrap();
    let report = tx.recover(&no_acks).unwrap();
    assert_eq!((report.pending, report.completed), (0, 1));
    assert_eq!(indexes(&store), [0, 1, 2, 3, 4]);
    assert!(tx.list().is_empty());
    drop(tx);

    // A second start finds the done record: nothing is copied twice.
    let tx = TxService::open(Arc::clone(&store), TxConfig::default()).unwrap();
    assert_eq!(tx.recover(&no_acks).unwrap(), Recovered::default());
    assert_eq!(indexes(&store), [0, 1, 2, 3, 4]);
}

#[test]
fn a_completion_cut_by_a_second_crash_continues_where_it_stopped() {
    let dir = tempfile::TempDir::new().unwrap();
    let store = Arc::new(MessageStore::open(StoreConfig::new(dir.path())).unwrap());
    let (tx, n, ids) = five(&store);
    tx.append_commit(n, &ids[..1], 0).unwrap();
    // Recovery began completing (copies from 1 follow its commit record) and crashed
    // after one more copy.
    tx.append_commit(n, &ids[..2], 1).unwrap();
    drop(tx);
    assert_eq!(indexes(&store), [0, 1]);

    let tx = TxService::open(Arc::clone(&store), TxConfig::default()).unwrap();
    assert_eq!(tx.recover(&no_acks).unwrap().completed, 1);
    assert_eq!(indexes(&store), [0, 1, 2, 3, 4]);
}

#[test]
fn an_open_transaction_survives_a_restart_and_a_rolled_back_one_stays_invisible() {
    let dir = tempfile::TempDir::new().unwrap();
    let store = Arc::new(MessageStore::open(StoreConfig::new(dir.path())).unwrap());
    let (tx, n, _) = five(&store);
    let other = tx.begin("pg", None).unwrap();
    tx.send(&other, "t", 0, &[msg(b"x")]).unwrap();
    tx.rollback(&other, "test").unwrap();
    // The checkpoint moves past nothing that is still open.
    tx.save_checkpoint(None).unwrap();
    drop(tx);

    let tx = TxService::open(Arc::clone(&store), TxConfig::default()).unwrap();
    assert_eq!(tx.recover(&no_acks).unwrap().pending, 1);
    let open = tx.list();
    assert_eq!(open.len(), 1);
    assert_eq!(
        (open[0].id.as_str(), open[0].messages),
        (records::id_text(n).as_str(), 5)
    );
    tx.commit(&records::id_text(n), &no_acks).unwrap();
    assert_eq!(indexes(&store), [0, 1, 2, 3, 4]);
    let e = tx.commit(&other, &no_acks).unwrap_err();
    assert!(matches!(e, TxError::Finished { .. }), "{e}");
}
