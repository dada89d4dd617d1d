//! Compile budget: the ANE stack fails after ~119 compiles per process (reference §2.4, §11.5).
//!
//! A [`CompileBudget`] is a counter plus a limit. The counter is either private to one device
//! or the process-wide one ([`CompileBudget::process_wide`]), which is what the hardware limit
//! really applies to. `limit` compiles succeed; the next one fails with
//! [`DeviceError::CompileBudgetExhausted`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use crate::device::DeviceError;

/// The observed hardware limit of compiles per process.
pub const DEFAULT_COMPILE_BUDGET: u64 = 119;

/// A shared compile counter with a limit.
#[derive(Debug, Clone)]
pub struct CompileBudget {
    counter: Arc<AtomicU64>,
    limit: u64,
}

fn process_counter() -> Arc<AtomicU64> {
    static COUNTER: OnceLock<Arc<AtomicU64>> = OnceLock::new();
    COUNTER.get_or_init(|| Arc::new(AtomicU64::new(0))).clone()
}

impl CompileBudget {
    /// A fresh counter (starting at 0) owned by whoever holds this budget and its clones.
    pub fn private(limit: u64) -> Self {
        Self {
            counter: Arc::new(AtomicU64::new(0)),
            limit,
        }
    }

    /// The process-wide counter shared by every device created with it.
    pub fn process_wide(limit: u64) -> Self {
        Self {
            counter: process_counter(),
            limit,
        }
    }

    /// Compiles counted so far.
    pub fn used(&self) -> u64 {
        self.counter.load(Ordering::SeqCst)
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Set the counter (e.g. after an exec() restart, or in tests).
    pub fn set_used(&self, used: u64) {
        self.counter.store(used, Ordering::SeqCst);
    }

    /// Fail if one more compile would exceed the limit.
    pub fn check(&self) -> Result<(), DeviceError> {
        let used = self.used();
        if used >= self.limit {
            return Err(DeviceError::CompileBudgetExhausted {
                used,
                budget: self.limit,
            });
        }
        Ok(())
    }

    /// Atomically take one compile from the budget.
    pub fn take(&self) -> Result<(), DeviceError> {
        self.counter
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |u| {
                (u < self.limit).then_some(u + 1)
            })
            .map(|_| ())
            .map_err(|used| DeviceError::CompileBudgetExhausted {
                used,
                budget: self.limit,
            })
    }
}

impl Default for CompileBudget {
    fn default() -> Self {
        Self::private(DEFAULT_COMPILE_BUDGET)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_compiles_then_error() {
        let b = CompileBudget::private(3);
        for _ in 0..3 {
            b.check().unwrap();
            b.take().unwrap();
        }
        assert!(matches!(
            b.take(),
            Err(DeviceError::CompileBudgetExhausted { used: 3, budget: 3 })
        ));
        assert!(b.check().is_err());
        b.set_used(1);
        assert!(b.take().is_ok());
    }

    #[test]
    fn clones_share_the_counter() {
        let a = CompileBudget::private(10);
        let b = a.clone();
        a.take().unwrap();
        b.take().unwrap();
        assert_eq!(a.used(), 2);
        assert_eq!(CompileBudget::private(10).used(), 0);
    }
}
