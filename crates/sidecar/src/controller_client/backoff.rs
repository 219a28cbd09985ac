//! How long to wait before reconnecting to the controller: exponential backoff with jitter, so
//! that a controller restart is not met by every sidecar at the same instant.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::time::Duration;

/// Reconnection delays grow from the first to the last, doubling, each with jitter so that a
/// controller restart is not met by every sidecar at the same instant.
const BACKOFF_FIRST: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Exponential backoff with jitter: each delay is drawn between half and all of the current
/// step, and the step doubles up to [`BACKOFF_MAX`].
#[derive(Debug)]
pub(crate) struct Backoff {
    step: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            step: BACKOFF_FIRST,
        }
    }
}

impl Backoff {
    pub(crate) fn next_delay(&mut self) -> Duration {
        let step = self.step;
        self.step = (self.step * 2).min(BACKOFF_MAX);
        // `RandomState` is seeded from the OS generator: enough to spread reconnections.
        let random = RandomState::new().hash_one(step);
        let half = step / 2;
        half + Duration::from_nanos(random % (half.as_nanos() as u64).max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_up_to_its_maximum() {
        let mut backoff = Backoff::default();
        let mut previous_step = Duration::ZERO;
        for _ in 0..20 {
            let step = backoff.step;
            let delay = backoff.next_delay();
            assert!(delay >= step / 2 && delay <= step, "{delay:?} for {step:?}");
            assert!(step >= previous_step);
            previous_step = step;
        }
        assert_eq!(backoff.step, BACKOFF_MAX);
    }
}
