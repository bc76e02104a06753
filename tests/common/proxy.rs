//! A TCP proxy between the daemon and a server, on a thread of its own, that fault tests
//! use to cut or freeze the connections at chosen moments without touching the shared
//! server (other tests keep using it).

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

const FORWARD: u8 = 0;
const FREEZE: u8 = 1;
const CUT: u8 = 2;

/// A running proxy; stops when dropped.
pub struct Proxy {
    port: u16,
    mode: Arc<AtomicU8>,
    cut_connections: Arc<AtomicU64>,
    latency_ms: Arc<AtomicU64>,
    changed: watch::Sender<u64>,
    _stop: std::sync::mpsc::Sender<()>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards every connection to `target`
    /// (`host:port`).
    pub fn start(target: &str) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap_or_else(|e| panic!("binding the proxy: {e}"));
        let port = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("proxy address: {e}"))
            .port();
        listener
            .set_nonblocking(true)
            .unwrap_or_else(|e| panic!("proxy listener: {e}"));
        let mode = Arc::new(AtomicU8::new(FORWARD));
        let (changed, watcher) = watch::channel(0u64);
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let target = target.to_owned();
        let thread_mode = mode.clone();
        let cut_connections = Arc::new(AtomicU64::new(0));
        let thread_cuts = cut_connections.clone();
        let latency_ms = Arc::new(AtomicU64::new(0));
        let thread_latency = latency_ms.clone();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap_or_else(|e| panic!("proxy runtime: {e}"));
            runtime.block_on(async move {
                let listener = TcpListener::from_std(listener)
                    .unwrap_or_else(|e| panic!("proxy listener: {e}"));
                loop {
                    if matches!(
                        stopped.try_recv(),
                        Ok(()) | Err(std::sync::mpsc::TryRecvError::Disconnected)
                    ) {
                        return;
                    }
                    let accepted =
                        tokio::time::timeout(Duration::from_millis(100), listener.accept()).await;
                    let Ok(Ok((client, _))) = accepted else {
                        continue;
                    };
                    if thread_mode.load(Ordering::SeqCst) == CUT {
                        drop(client);
                        continue;
                    }
                    tokio::spawn(relay(
                        client,
                        target.clone(),
                        thread_mode.clone(),
                        watcher.clone(),
                        thread_cuts.clone(),
                        thread_latency.clone(),
                    ));
                }
            });
        });
        Self {
            port,
            mode,
            cut_connections,
            latency_ms,
            changed,
            _stop: stop,
        }
    }

    /// How many open connections [`Proxy::cut`] closed so far.
    pub fn cut_connections(&self) -> u64 {
        self.cut_connections.load(Ordering::SeqCst)
    }

    /// The port the daemon should connect to.
    pub fn port(&self) -> u16 {
        self.port
    }

    fn set(&self, mode: u8) {
        self.mode.store(mode, Ordering::SeqCst);
        self.changed.send_modify(|n| *n += 1);
    }

    /// Forwards again (after [`Proxy::cut`] or [`Proxy::freeze`]).
    pub fn forward(&self) {
        self.set(FORWARD);
    }

    /// Closes every connection and refuses new ones (closes them at once).
    pub fn cut(&self) {
        self.set(CUT);
    }

    /// Holds every read for `latency` before passing it on, both ways: the server seems
    /// slow. Zero (the start) passes bytes at once.
    pub fn set_latency(&self, latency: Duration) {
        let millis = u64::try_from(latency.as_millis()).unwrap_or(u64::MAX);
        self.latency_ms.store(millis, Ordering::SeqCst);
    }

    /// Keeps connections open but passes no byte: the server seems to hang.
    pub fn freeze(&self) {
        self.set(FREEZE);
    }
}

async fn relay(
    client: TcpStream,
    target: String,
    mode: Arc<AtomicU8>,
    mut changed: watch::Receiver<u64>,
    cuts: Arc<AtomicU64>,
    latency_ms: Arc<AtomicU64>,
) {
    let Ok(server) = TcpStream::connect(&target).await else {
        return;
    };
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let up = pump(
        (client_read, server_write),
        mode.clone(),
        changed.clone(),
        latency_ms.clone(),
    );
    let down = pump(
        (server_read, client_write),
        mode.clone(),
        changed.clone(),
        latency_ms,
    );
    tokio::select! {
        _ = up => {}
        _ = down => {}
        _ = async {
            while mode.load(Ordering::SeqCst) != CUT {
                if changed.changed().await.is_err() {
                    return;
                }
            }
            cuts.fetch_add(1, Ordering::SeqCst);
        } => {}
    }
}

/// Copies bytes one way, holding them while frozen and for the latency set.
async fn pump(
    (mut from, mut to): (
        tokio::net::tcp::OwnedReadHalf,
        tokio::net::tcp::OwnedWriteHalf,
    ),
    mode: Arc<AtomicU8>,
    mut changed: watch::Receiver<u64>,
    latency_ms: Arc<AtomicU64>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let latency = latency_ms.load(Ordering::SeqCst);
        if latency > 0 {
            tokio::time::sleep(Duration::from_millis(latency)).await;
        }
        while mode.load(Ordering::SeqCst) == FREEZE {
            if changed.changed().await.is_err() {
                return;
            }
        }
        if mode.load(Ordering::SeqCst) == CUT || to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// The first `host:port` of a MongoDB connection string.
pub fn mongodb_target(uri: &str) -> String {
    let rest = uri.split_once("://").map_or(uri, |(_, rest)| rest);
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    let hosts = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let first = hosts.split(',').next().unwrap_or_default();
    if first.contains(':') {
        first.to_owned()
    } else {
        format!("{first}:27017")
    }
}

/// `uri` with its hosts replaced by the proxy on `port`, connecting directly (a replica
/// set's other members would be reached around the proxy otherwise).
pub fn mongodb_uri_through(uri: &str, port: u16) -> String {
    let (scheme, rest) = uri.split_once("://").unwrap_or(("mongodb", uri));
    let (authority, tail) = match rest.find(['/', '?']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let credentials = authority
        .rsplit_once('@')
        .map_or(String::new(), |(c, _)| format!("{c}@"));
    let (path, query) = tail.split_once('?').unwrap_or((tail, ""));
    let mut options: Vec<&str> = query
        .split('&')
        .filter(|o| {
            !o.is_empty() && !o.starts_with("replicaSet=") && !o.starts_with("directConnection=")
        })
        .collect();
    options.push("directConnection=true");
    let path = if path.is_empty() { "/" } else { path };
    let scheme = if scheme == "mongodb+srv" {
        "mongodb"
    } else {
        scheme
    };
    format!(
        "{scheme}://{credentials}127.0.0.1:{port}{path}?{}",
        options.join("&")
    )
}

/// A daemon configuration (from `config_toml`) whose MongoDB is reached through `proxy`.
pub fn config_through(config: &str, proxy: &Proxy) -> String {
    let uri = super::mongodb_uri();
    config.replace(
        &format!("uri = \"{uri}\""),
        &format!("uri = \"{}\"", mongodb_uri_through(&uri, proxy.port())),
    )
}
