//! Liveness and readiness, shared between the supervisor (which sets it) and the HTTP
//! endpoint (which reports it).

use std::sync::{Arc, RwLock};

/// Whether the daemon is ready, and if not, why.
#[derive(Debug, Clone)]
pub struct Readiness(Arc<RwLock<Result<(), String>>>);

impl Default for Readiness {
    fn default() -> Self {
        Self(Arc::new(RwLock::new(Err("starting".to_owned()))))
    }
}

impl Readiness {
    /// Marks the daemon ready.
    pub fn set_ready(&self) {
        self.set(Ok(()));
    }

    /// Marks the daemon not ready, saying why.
    pub fn set_not_ready(&self, reason: impl Into<String>) {
        self.set(Err(reason.into()));
    }

    fn set(&self, value: Result<(), String>) {
        // A poisoned lock only means a writer panicked mid-assignment of a plain value.
        match self.0.write() {
            Ok(mut guard) => *guard = value,
            Err(poisoned) => *poisoned.into_inner() = value,
        }
    }

    /// `Ok` when ready, else the reason.
    pub fn status(&self) -> Result<(), String> {
        match self.0.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_not_ready_and_flips() {
        let r = Readiness::default();
        assert_eq!(r.status(), Err("starting".to_owned()));
        r.set_ready();
        assert_eq!(r.status(), Ok(()));
        r.set_not_ready("Kafka down");
        assert_eq!(r.status(), Err("Kafka down".to_owned()));
    }
}
