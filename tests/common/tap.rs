//! A TCP proxy in front of MongoDB that reads the commands the daemon sends (OP_MSG,
//! section 0) so a test can assert on the command as the server received it, and that can
//! lose the reply to one chosen command (the server applied it, the daemon never learns
//! how it went: a cut connection at the worst moment), and that can rewrite bytes in the
//! server's replies (what a server that stores them as given, a real replica set, would
//! send, where the stand-in rewrites them first).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use mongodb::bson::{Document, RawDocument};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// OP_MSG's opcode.
const OP_MSG: i32 = 2013;

/// What the tap shares with its connections.
#[derive(Default)]
struct Shared {
    /// Every command seen, in order (section 0 of each OP_MSG to the server).
    commands: Mutex<Vec<Document>>,
    /// The name of a command (`insert`, ...) whose next reply is lost, with the
    /// collection it names.
    lose_reply: Mutex<Option<(String, String)>>,
    /// Replies lost so far.
    lost: Mutex<u32>,
    /// Bytes replaced in every reply: (what, by what), of one length.
    rewrite: Mutex<Option<(Vec<u8>, Vec<u8>)>>,
    /// Replacements made so far.
    rewritten: Mutex<u32>,
}

/// A running tap; stops when dropped.
pub struct Tap {
    port: u16,
    shared: Arc<Shared>,
    _stop: std::sync::mpsc::Sender<()>,
}

impl Tap {
    /// Listens on a free loopback port and forwards every connection to `target`.
    pub fn start(target: &str) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap_or_else(|e| panic!("binding the tap: {e}"));
        let port = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("tap address: {e}"))
            .port();
        listener
            .set_nonblocking(true)
            .unwrap_or_else(|e| panic!("tap listener: {e}"));
        let shared = Arc::new(Shared::default());
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let target = target.to_owned();
        let thread_shared = shared.clone();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap_or_else(|e| panic!("tap runtime: {e}"));
            runtime.block_on(async move {
                let listener =
                    TcpListener::from_std(listener).unwrap_or_else(|e| panic!("tap listener: {e}"));
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
                    tokio::spawn(relay(client, target.clone(), thread_shared.clone()));
                }
            });
        });
        Self {
            port,
            shared,
            _stop: stop,
        }
    }

    /// The port the daemon should connect to.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The commands named `name` seen so far (their section 0).
    pub fn commands(&self, name: &str) -> Vec<Document> {
        self.shared
            .commands
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|c| c.keys().next().is_some_and(|k| k == name))
            .cloned()
            .collect()
    }

    /// The next command `name` on collection `collection` reaches the server, but its
    /// reply is lost and its connection closed.
    pub fn lose_reply_to(&self, name: &str, collection: &str) {
        *self
            .shared
            .lose_reply
            .lock()
            .unwrap_or_else(PoisonError::into_inner) =
            Some((name.to_owned(), collection.to_owned()));
    }

    /// Every reply from now on has each `what` replaced by `by` (of the same length, so no
    /// length in the message changes).
    pub fn rewrite_replies(&self, what: &[u8], by: &[u8]) {
        assert_eq!(what.len(), by.len(), "a rewrite keeps the length");
        *self
            .shared
            .rewrite
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some((what.to_vec(), by.to_vec()));
    }

    /// How many replacements [`Tap::rewrite_replies`] made so far.
    pub fn rewritten(&self) -> u32 {
        *self
            .shared
            .rewritten
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// How many replies were lost so far.
    pub fn lost(&self) -> u32 {
        *self
            .shared
            .lost
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// `uri` through the tap on `port`, directly, uncompressed (so the tap reads OP_MSG).
pub fn uri_through(uri: &str, port: u16, extra_options: &str) -> String {
    let through = super::proxy::mongodb_uri_through(uri, port);
    let (base, query) = through.split_once('?').unwrap_or((&through, ""));
    let mut options: Vec<&str> = query
        .split('&')
        .filter(|o| !o.is_empty() && !o.starts_with("compressors="))
        .collect();
    options.extend(extra_options.split('&').filter(|o| !o.is_empty()));
    format!("{base}?{}", options.join("&"))
}

async fn relay(client: TcpStream, target: String, shared: Arc<Shared>) {
    let Ok(server) = TcpStream::connect(&target).await else {
        return;
    };
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    // Set once a reply is to be lost: the server's bytes are no longer passed on.
    let swallow = Arc::new(AtomicBool::new(false));
    let down_shared = shared.clone();
    let up = {
        let swallow = swallow.clone();
        async move {
            let mut pending: Vec<u8> = Vec::new();
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = match client_read.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                pending.extend_from_slice(&buf[..n]);
                let mut lose = false;
                while let Some(len) = message_len(&pending) {
                    if let Some(command) = command_of(&pending[..len]) {
                        lose |= take_lose(&shared, &command);
                        shared
                            .commands
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .push(command);
                    }
                    pending.drain(..len);
                }
                if lose {
                    swallow.store(true, Ordering::SeqCst);
                }
                if server_write.write_all(&buf[..n]).await.is_err() {
                    return;
                }
                if lose {
                    // Time for the server to apply it; then the connection goes.
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    *shared.lost.lock().unwrap_or_else(PoisonError::into_inner) += 1;
                    return;
                }
            }
        }
    };
    let down = async move {
        // Whole messages are passed on, so a rewrite never misses bytes split across reads.
        let mut pending: Vec<u8> = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match server_read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if swallow.load(Ordering::SeqCst) {
                continue;
            }
            pending.extend_from_slice(&buf[..n]);
            while let Some(len) = message_len(&pending) {
                let mut message: Vec<u8> = pending.drain(..len).collect();
                rewrite(&down_shared, &mut message);
                if client_write.write_all(&message).await.is_err() {
                    return;
                }
            }
        }
    };
    // Either side ending closes both.
    tokio::select! {
        () = up => {}
        () = down => {}
    }
}

/// Applies the armed rewrite to a whole reply.
fn rewrite(shared: &Shared, message: &mut [u8]) {
    let armed = shared
        .rewrite
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    let Some((what, by)) = armed else {
        return;
    };
    let mut at = 0;
    while let Some(found) = message
        .get(at..)
        .and_then(|rest| rest.windows(what.len()).position(|w| w == what.as_slice()))
    {
        let start = at + found;
        message[start..start + by.len()].copy_from_slice(&by);
        *shared
            .rewritten
            .lock()
            .unwrap_or_else(PoisonError::into_inner) += 1;
        at = start + by.len();
    }
}

/// Whether `command` is the one whose reply is to be lost (and disarms it).
fn take_lose(shared: &Shared, command: &Document) -> bool {
    let mut armed = shared
        .lose_reply
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    let hit = armed
        .as_ref()
        .is_some_and(|(name, collection)| command.get_str(name).ok() == Some(collection.as_str()));
    if hit {
        *armed = None;
    }
    hit
}

/// The length of the first whole message in `bytes`, if it arrived whole.
fn message_len(bytes: &[u8]) -> Option<usize> {
    let len = i32::from_le_bytes(bytes.get(..4)?.try_into().ok()?);
    let len = usize::try_from(len).ok()?;
    (len >= 16 && bytes.len() >= len).then_some(len)
}

/// Section 0 of an OP_MSG (the command), with its document sequences (section 1, the
/// driver's way of sending `documents`) left out.
fn command_of(message: &[u8]) -> Option<Document> {
    let opcode = i32::from_le_bytes(message.get(12..16)?.try_into().ok()?);
    if opcode != OP_MSG {
        return None;
    }
    // Header (16), flag bits (4), then sections.
    let mut at = 20;
    while at < message.len() {
        let kind = *message.get(at)?;
        at += 1;
        let size = usize::try_from(i32::from_le_bytes(
            message.get(at..at + 4)?.try_into().ok()?,
        ))
        .ok()?;
        if kind == 0 {
            let raw = RawDocument::from_bytes(message.get(at..at + size)?).ok()?;
            return Document::try_from(raw).ok();
        }
        at += size;
    }
    None
}
