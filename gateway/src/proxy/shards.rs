//! Thread-per-core serving: N shard threads, each running its own single-threaded tokio
//! runtime (own epoll, timers and task queue), like nginx's worker processes.
//!
//! Every traffic port is bound N times with `SO_REUSEPORT`, one socket per shard, so the kernel
//! spreads connections over the shards; a connection, its requests, its upstream connections
//! (pools keep one idle stack per shard) and any tasks it spawns stay on one thread. No wakeup
//! crosses threads on the request path, which matters most on a busy machine where a woken
//! thread waits for the scheduler.

use std::cell::Cell;
use std::sync::mpsc;

use tokio::runtime::Handle;
use tokio::sync::oneshot;
use tracing::warn;

thread_local! {
    /// The shard index of the current thread (0 outside shard threads).
    static SHARD: Cell<usize> = const { Cell::new(0) };
}

/// The index of the shard running the current thread (0 on any other thread).
pub(crate) fn current() -> usize {
    SHARD.with(Cell::get)
}

/// Running shard threads; dropping this stops them.
#[derive(Debug)]
pub(crate) struct Shards {
    handles: Vec<Handle>,
    stops: Vec<oneshot::Sender<()>>,
}

impl Shards {
    /// Starts `n` shard threads (at least one).
    pub(crate) fn start(n: usize) -> std::io::Result<Self> {
        let n = n.max(1);
        let mut handles = Vec::with_capacity(n);
        let mut stops = Vec::with_capacity(n);
        for index in 0..n {
            let (handle_tx, handle_rx) = mpsc::channel();
            let (stop_tx, stop_rx) = oneshot::channel::<()>();
            std::thread::Builder::new()
                .name(format!("gateway-shard-{index}"))
                .spawn(move || {
                    SHARD.with(|s| s.set(index));
                    let runtime = match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(runtime) => runtime,
                        Err(error) => {
                            let _ = handle_tx.send(Err(error));
                            return;
                        }
                    };
                    let _ = handle_tx.send(Ok(runtime.handle().clone()));
                    runtime.block_on(async move {
                        let _ = stop_rx.await;
                    });
                })?;
            let handle = handle_rx
                .recv()
                .map_err(|_| std::io::Error::other("shard thread exited during startup"))??;
            handles.push(handle);
            stops.push(stop_tx);
        }
        Ok(Self { handles, stops })
    }

    /// Number of shards.
    pub(crate) fn len(&self) -> usize {
        self.handles.len()
    }

    /// The runtime of shard `index` (modulo the shard count).
    pub(crate) fn handle(&self, index: usize) -> &Handle {
        &self.handles[index % self.handles.len()]
    }
}

impl Drop for Shards {
    fn drop(&mut self) {
        for stop in self.stops.drain(..) {
            if stop.send(()).is_err() {
                warn!("a gateway shard thread had already stopped");
            }
        }
    }
}
