//! What operators see and touch: logs, metrics, the HTTP endpoint, health, signals.

pub mod allocator;
pub mod control;
pub mod health;
pub mod healthcheck;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod positions;
pub mod preflight;
pub mod progress;
pub mod signals;
pub mod status;
pub mod systemd;
