//! systemd's service notifications (`Type=notify`): `READY=1` once the daemon runs,
//! `RELOADING=1` and `READY=1` around a reload, `STOPPING=1` at shutdown, with a `STATUS=`
//! line, and `WATCHDOG=1` pings when the unit sets `WatchdogSec=`. Without `NOTIFY_SOCKET`
//! (not run by systemd) they do nothing.

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

/// Pings systemd's watchdog (`WatchdogSec=` in the unit, `WATCHDOG_USEC` here) at half its
/// period, from a task on the calling thread: the daemon's actix thread, which runs every
/// reader, producer and supervisor. A call that blocks that thread stops the pings, and
/// systemd restarts the daemon once the period passes (`Restart=on-failure`). Without a
/// watchdog (not run by systemd, or no `WatchdogSec=`), nothing is started.
pub fn spawn_watchdog() {
    let Some(period) = sd_notify::watchdog_enabled() else {
        return;
    };
    let every = period / 2;
    tracing::info!(?period, "pinging systemd's watchdog every half period");
    actix_rt::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            send(&[NotifyState::Watchdog]);
        }
    });
}
