//! The thread (`ferromq-timer-save`) that makes timer saves durable: the slot-file syncs
//! and the checkpoint write of a [`SaveWrite`]. The delivering thread hands a save over
//! and goes on delivering, so a save after a burst of new timers (a sync of every slot
//! file the burst touched) never holds up timers falling due.

use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::error::TimerError;
use super::slots::Unsynced;
use super::wheel::SaveWrite;

/// A save slower than this is logged.
const SLOW_SAVE: Duration = Duration::from_secs(1);

/// What failed saves left to make durable, for the next save.
#[derive(Debug, Default)]
pub(crate) struct Leftover {
    pub(crate) unsynced: Unsynced,
    pub(crate) remove: Vec<PathBuf>,
}

/// Handle on the save thread; one save at a time.
#[derive(Debug)]
pub(crate) struct Saver {
    busy: Arc<(Mutex<bool>, Condvar)>,
    tx: Mutex<Option<mpsc::Sender<SaveWrite>>>,
    thread: Mutex<Option<JoinHandle<Leftover>>>,
}

impl Saver {
    /// Starts the thread.
    ///
    /// # Errors
    /// The thread did not start.
    pub(crate) fn start() -> Result<Self, TimerError> {
        let busy = Arc::new((Mutex::new(false), Condvar::new()));
        let (tx, rx) = mpsc::channel::<SaveWrite>();
        let done = Arc::clone(&busy);
        let thread = std::thread::Builder::new()
            .name("ferromq-timer-save".into())
            .spawn(move || {
                let mut left = Leftover::default();
                while let Ok(save) = rx.recv() {
                    let started = Instant::now();
                    if let Err(e) = save.write(&mut left.unsynced, &mut left.remove) {
                        tracing::warn!(error = %e, "timer checkpoint not saved; will retry");
                    }
                    let took = started.elapsed();
                    if took >= SLOW_SAVE {
                        tracing::info!(took_ms = took.as_millis(), "slow timer checkpoint save");
                    }
                    *done.0.lock().unwrap_or_else(PoisonError::into_inner) = false;
                    done.1.notify_all();
                }
                left
            })
            .map_err(|e| TimerError::io("start the timer save thread for", "timer", e))?;
        Ok(Self {
            busy,
            tx: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Whether a save is being written.
    pub(crate) fn is_busy(&self) -> bool {
        *self.busy.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Hands `save` to the thread; gives it back when the thread is gone.
    pub(crate) fn submit(&self, save: SaveWrite) -> Result<(), SaveWrite> {
        let tx = self.tx.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(tx) = tx.as_ref() else {
            return Err(save);
        };
        *self.busy.0.lock().unwrap_or_else(PoisonError::into_inner) = true;
        tx.send(save).map_err(|mpsc::SendError(save)| {
            *self.busy.0.lock().unwrap_or_else(PoisonError::into_inner) = false;
            save
        })
    }

    /// Waits until no save is being written (a recall's tombstone claims the slot files
    /// written before it are durable).
    pub(crate) fn wait_idle(&self) {
        let (lock, cond) = &*self.busy;
        let mut busy = lock.lock().unwrap_or_else(PoisonError::into_inner);
        while *busy {
            busy = cond.wait(busy).unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Stops the thread once its save is written; returns what failed saves left.
    pub(crate) fn close(&self) -> Leftover {
        drop(
            self.tx
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take(),
        );
        let thread = self
            .thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        match thread.map(JoinHandle::join) {
            Some(Ok(left)) => left,
            Some(Err(_)) => {
                tracing::error!("timer save thread panicked");
                Leftover::default()
            }
            None => Leftover::default(),
        }
    }
}
