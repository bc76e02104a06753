//! The actor mailbox hand-off: one message per event into a bounded mailbox with
//! `send().await`, as a source's change-stream reader hands each event to the producer actor
//! (same thread), and as a message crossing to an actor on another arbiter (thread), as the
//! sink's consumer thread hands records to partition writers.
//!
//! `elem/s` is hand-offs per second (each one a round trip: the sender awaits the handler's
//! answer). Run: `cargo bench --bench mailbox`.

use std::time::{Duration, Instant};

use actix::prelude::*;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

/// The source producer's default mailbox (`queue_capacity`).
const CAPACITY: usize = 1024;

/// A record-sized message: the handler takes ownership of its bytes, as the producer does.
#[derive(Message)]
#[rtype(result = "Result<usize, ()>")]
struct Handoff(Vec<u8>);

struct Receiver {
    bytes: usize,
}

impl Actor for Receiver {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(CAPACITY);
    }
}

impl Handler<Handoff> for Receiver {
    type Result = Result<usize, ()>;

    fn handle(&mut self, msg: Handoff, _: &mut Context<Self>) -> Self::Result {
        self.bytes += msg.0.len();
        Ok(self.bytes)
    }
}

/// Sends `iters` messages one after the other, each awaited, and returns the time it took.
async fn hand_off(addr: &Addr<Receiver>, payload: &[u8], iters: u64) -> Duration {
    let started = Instant::now();
    for _ in 0..iters {
        if addr.send(Handoff(payload.to_vec())).await.is_err() {
            panic!("the receiver stopped");
        }
    }
    started.elapsed()
}

fn mailbox(c: &mut Criterion) {
    let payload = vec![b'x'; 1024];
    let system = System::new();
    let mut group = c.benchmark_group("mailbox");
    group.throughput(Throughput::Elements(1));

    let local = system.block_on(async { Receiver { bytes: 0 }.start() });
    group.bench_function("send_await_same_thread", |b| {
        b.iter_custom(|iters| system.block_on(hand_off(&local, &payload, iters)))
    });

    let other = Arbiter::new();
    let remote = system
        .block_on(async { Receiver::start_in_arbiter(&other.handle(), |_| Receiver { bytes: 0 }) });
    group.bench_function("send_await_other_thread", |b| {
        b.iter_custom(|iters| system.block_on(hand_off(&remote, &payload, iters)))
    });
    group.finish();
    other.stop();
}

criterion_group!(benches, mailbox);
criterion_main!(benches);
