//! Container stops in flight, so removals can give way to them.
//!
//! Removing a container costs the engine about as much as stopping one.
//! When many tasks stop at once (a scale-down, a service removal), removing
//! the first stopped containers while the others are still being killed
//! slows those kills down, and a task counts as gone only once its
//! container no longer runs. So a removal waits until no stop is in flight,
//! for at most [`MAX_DEFER`]: a task with a long grace period must not hold
//! every other removal back.

use std::time::Duration;

use tokio::sync::watch;

/// The longest a removal waits for stops in flight.
pub(crate) const MAX_DEFER: Duration = Duration::from_secs(5);

/// Counts the stops in flight.
pub(crate) struct StopsInFlight {
    count: watch::Sender<usize>,
}

/// One stop in flight; it ends when dropped.
pub(crate) struct Stopping<'a> {
    stops: &'a StopsInFlight,
}

impl Drop for Stopping<'_> {
    fn drop(&mut self) {
        self.stops.count.send_modify(|n| *n = n.saturating_sub(1));
    }
}

impl Default for StopsInFlight {
    fn default() -> Self {
        StopsInFlight {
            count: watch::channel(0).0,
        }
    }
}

impl StopsInFlight {
    pub(crate) fn begin(&self) -> Stopping<'_> {
        self.count.send_modify(|n| *n += 1);
        Stopping { stops: self }
    }

    /// Returns once no stop is in flight, or after `at_most`.
    pub(crate) async fn settled(&self, at_most: Duration) {
        let mut count = self.count.subscribe();
        let _ = tokio::time::timeout(at_most, count.wait_for(|n| *n == 0)).await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[tokio::test]
    async fn settles_when_the_last_stop_ends() {
        let stops = Arc::new(StopsInFlight::default());
        // None in flight: at once.
        tokio::time::timeout(Duration::from_secs(1), stops.settled(MAX_DEFER))
            .await
            .expect("settled with no stop in flight");
        let first = stops.begin();
        let second = stops.begin();
        let started = tokio::time::Instant::now();
        let waiter = {
            let stops = stops.clone();
            tokio::spawn(async move { stops.settled(MAX_DEFER).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(first);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished(), "settled with a stop still in flight");
        drop(second);
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .expect("settled once the stops ended")
            .expect("waiter");
        assert!(started.elapsed() < MAX_DEFER);
    }

    #[tokio::test]
    async fn a_long_stop_holds_removals_only_so_long() {
        let stops = StopsInFlight::default();
        let _long = stops.begin();
        let started = tokio::time::Instant::now();
        stops.settled(Duration::from_millis(100)).await;
        assert!(started.elapsed() >= Duration::from_millis(100));
    }
}
