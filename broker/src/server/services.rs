//! What every request handler may use, shared by all connections.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::send::Appender;
use super::tx_producers::TxProducers;
use crate::config::Config;
use crate::groups::{ConsumerOffsets, GroupCoordinator, QueueLocks};
use crate::long_polling::LongPolling;
use crate::pop::PopService;
use crate::retry::RetryService;
use crate::stats::Stats;
use crate::store::MessageStore;
use crate::timer::TimerService;
use crate::tx::TxService;

/// Everything a request handler may use, shared by all connections.
pub(crate) struct Services {
    pub(crate) config: Config,
    pub(crate) store: Arc<MessageStore>,
    pub(crate) groups: GroupCoordinator,
    pub(crate) offsets: ConsumerOffsets,
    pub(crate) retry: RetryService,
    /// Leases of the groups that consume by receive (per-message acks).
    pub(crate) pop: PopService,
    /// Timer messages (the retry service's delays wait on the same timer).
    pub(crate) timer: Arc<TimerService>,
    pub(crate) long_polling: Arc<LongPolling>,
    pub(crate) stats: Arc<Stats>,
    /// Stores the sends of every connection.
    pub(crate) appender: Appender,
    /// Cancelled once, when shutdown starts; every loop selects on it.
    pub(crate) shutdown: CancellationToken,
    /// Every task the server spawns, so shutdown can wait for all of them.
    pub(crate) tracker: TaskTracker,
    /// Queue locks of ordered consumers; a lock lasts one session timeout.
    pub(crate) queue_locks: QueueLocks,
    /// Transactions (half messages, decisions, check-back schedule).
    pub(crate) tx: Arc<TxService>,
    /// Connections of live transactional producers, per producer group.
    pub(crate) tx_producers: TxProducers,
    /// TLS acceptor, users and access rules.
    pub(crate) security: Arc<crate::security::Security>,
    /// Replication (master or replica); `None` for a standalone broker.
    pub(crate) ha: Option<Arc<crate::ha::Replication>>,
}
