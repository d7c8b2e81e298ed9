//! The virtual latency queue of the drift-plus-penalty method.

use serde::{Deserialize, Serialize};

use crate::error::{AllocError, non_negative, positive};

/// Virtual queue `Q^{t+1} = max(Q^t + T^t − T̄, 0)`: the accumulated excess
/// of the round latencies over the budget `T̄`. Keeping it stable keeps the
/// long-run average latency at or under `T̄` (`(1/T)·Σ_t T^t ≤ T̄ + Q^T/T`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct VirtualQueue {
    /// Current backlog `Q^t` in seconds.
    pub backlog_s: f64,
    /// Per-round latency budget `T̄` in seconds.
    pub budget_s: f64,
}

impl VirtualQueue {
    /// An empty queue (`Q^0 = 0`) for the budget `budget_s`.
    ///
    /// # Errors
    /// [`AllocError::InvalidField`] unless `budget_s` is finite and `> 0`.
    pub fn new(budget_s: f64) -> Result<Self, AllocError> {
        positive(|| "budget_s".into(), budget_s)?;
        Ok(Self {
            backlog_s: 0.0,
            budget_s,
        })
    }

    /// Applies one round of latency `latency_s` and returns the new backlog.
    ///
    /// # Errors
    /// [`AllocError::InvalidField`] for a negative or non-finite latency.
    pub fn update(&mut self, latency_s: f64) -> Result<f64, AllocError> {
        non_negative(|| "latency_s".into(), latency_s)?;
        self.backlog_s = (self.backlog_s + latency_s - self.budget_s).max(0.0);
        Ok(self.backlog_s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_recursion_by_hand() {
        // T̄ = 1: 0 → +1.5 → 0.5 → +0.2 → 0 (clamped) → +3 → 2.
        let mut q = VirtualQueue::new(1.0).unwrap();
        assert_eq!(q.update(1.5).unwrap(), 0.5);
        assert_eq!(q.update(0.2).unwrap(), 0.0);
        assert_eq!(q.update(3.0).unwrap(), 2.0);
        assert!(q.update(f64::NAN).is_err());
        assert!(VirtualQueue::new(0.0).is_err());
    }
}
