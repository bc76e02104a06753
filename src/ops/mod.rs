//! What operators see and touch: logs, metrics, the HTTP endpoint, health, signals.

pub mod health;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod signals;
pub mod systemd;
