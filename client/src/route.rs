//! Topic metadata the producer needs to pick a queue: the queue count, cached per topic.

use std::collections::HashMap;
use std::sync::Mutex;

use protocol::messages::GetTopicRequest;
use protocol::Status;

use crate::connection::Connection;
use crate::error::Result;

#[derive(Debug, Default)]
pub(crate) struct RouteCache {
    queue_counts: Mutex<HashMap<String, u32>>,
}

impl RouteCache {
    /// The topic's queue count, asking the broker once. A topic the broker does not know
    /// yet is assumed to be auto-created on the first send, with the queue count the broker
    /// announced in its Hello (its `--default-queues`).
    pub(crate) async fn queue_count(&self, conn: &Connection, topic: &str) -> Result<u32> {
        if let Some(n) = self.cached(topic) {
            return Ok(n);
        }
        let req = GetTopicRequest {
            topic: topic.to_string(),
        };
        let n = match conn.call(&req, &[]).await {
            Ok((resp, _)) => resp.topic.queue_count.max(1),
            Err(e) if e.status() == Some(Status::TopicNotFound) => {
                // Not cached: the next call asks again and learns the real count.
                return Ok(conn.hello().map_or(1, |h| h.default_queue_count.max(1)));
            }
            Err(e) => return Err(e),
        };
        if let Ok(mut map) = self.queue_counts.lock() {
            map.insert(topic.to_string(), n);
        }
        Ok(n)
    }

    fn cached(&self, topic: &str) -> Option<u32> {
        self.queue_counts.lock().ok()?.get(topic).copied()
    }

    /// Forgets a topic, e.g. after the broker said it does not exist.
    pub(crate) fn invalidate(&self, topic: &str) {
        if let Ok(mut map) = self.queue_counts.lock() {
            map.remove(topic);
        }
    }
}
