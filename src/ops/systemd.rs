//! systemd's service notifications (`Type=notify`): `READY=1` once the daemon runs,
//! `RELOADING=1` and `READY=1` around a reload, `STOPPING=1` at shutdown, with a `STATUS=`
//! line. Without `NOTIFY_SOCKET` (not run by systemd) they do nothing.

use sd_notify::NotifyState;

fn send(states: &[NotifyState<'_>]) {
    if let Err(error) = sd_notify::notify(states) {
        tracing::warn!(%error, "telling systemd the daemon's state failed");
    }
}

/// The daemon runs (its endpoint listens, its supervisor started).
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// A reload begins. systemd 253+ wants the monotonic time with it.
pub fn reloading() {
    let mut states = vec![
        NotifyState::Reloading,
        NotifyState::Status("reloading the configuration"),
    ];
    if let Ok(now) = NotifyState::monotonic_usec_now() {
        states.push(now);
    }
    send(&states);
}

/// A graceful shutdown begins.
pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("shutting down")]);
}
