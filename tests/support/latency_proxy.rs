//! A TCP proxy that adds a fixed latency to every HTTP request, to stand for a remote
//! store's first-byte latency (real S3: 20-100 ms) in front of the in-process S3 server.
//!
//! It forwards bytes unchanged both ways (so SigV4 signatures, made for the proxy's
//! `Host`, still verify), and holds the first bytes of each request for `delay` before
//! forwarding them. The delay is per request, not per connection: on a kept-alive
//! connection, client bytes that arrive after the server has answered and that start
//! with an HTTP method begin a new request, and are delayed again. A
//! request body sent after `100 Continue` does not start with a method and is not
//! delayed. Pipelined requests (no HTTP client here sends them) would be delayed once.

use std::net::TcpListener as StdTcpListener;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// HTTP/1.1 request methods, each with its trailing space.
const METHODS: [&[u8]; 7] = [
    b"GET ",
    b"PUT ",
    b"POST ",
    b"HEAD ",
    b"DELETE ",
    b"OPTIONS ",
    b"PATCH ",
];

/// A running proxy on `127.0.0.1:<free port>`; stops when dropped.
pub struct LatencyProxy {
    endpoint: String,
    requests: Arc<AtomicU64>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl LatencyProxy {
    /// Starts a proxy forwarding to `127.0.0.1:upstream_port`, delaying each request by
    /// `delay`. It runs on its own thread and runtime, so it keeps serving while the caller
    /// blocks on a child process.
    pub fn start(upstream_port: u16, delay: Duration) -> LatencyProxy {
        let listener = StdTcpListener::bind("127.0.0.1:0").expect("bind latency proxy");
        listener
            .set_nonblocking(true)
            .expect("set latency proxy listener non-blocking");
        let port = listener.local_addr().expect("latency proxy address").port();
        let requests = Arc::new(AtomicU64::new(0));
        let counted = requests.clone();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(format!("latency-proxy-{port}"))
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .thread_name("latency-proxy")
                    .enable_all()
                    .build()
                    .expect("latency proxy runtime");
                rt.block_on(serve(listener, upstream_port, delay, counted, stop_rx));
                // Dropping the runtime cancels the connection tasks.
            })
            .expect("spawn latency proxy thread");
        LatencyProxy {
            endpoint: format!("http://127.0.0.1:{port}"),
            requests,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        self.endpoint.clone()
    }

    /// How many requests were delayed so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
}

impl Drop for LatencyProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn serve(
    listener: StdTcpListener,
    upstream_port: u16,
    delay: Duration,
    requests: Arc<AtomicU64>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    let listener = tokio::net::TcpListener::from_std(listener).expect("tokio latency proxy listener");
    loop {
        let client = tokio::select! {
            _ = &mut stop => break,
            res = listener.accept() => match res {
                Ok((socket, _)) => socket,
                Err(e) => {
                    eprintln!("latency proxy: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        tokio::spawn(forward(client, upstream_port, delay, requests.clone()));
    }
}

/// Whether `chunk`, the first client bytes after an answer, starts an HTTP request.
fn starts_request(chunk: &[u8]) -> bool {
    METHODS
        .iter()
        .any(|m| chunk.starts_with(m) || (chunk.len() < m.len() && m.starts_with(chunk)))
}

/// One client connection: its own upstream connection, bytes copied both ways.
async fn forward(client: TcpStream, upstream_port: u16, delay: Duration, requests: Arc<AtomicU64>) {
    let Ok(upstream) = TcpStream::connect(("127.0.0.1", upstream_port)).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let (mut client_rx, mut client_tx) = client.into_split();
    let (mut upstream_rx, mut upstream_tx) = upstream.into_split();
    // True when the next client bytes may start a request: at first, and after every
    // byte of an answer.
    let answered = Arc::new(AtomicBool::new(true));
    let answered_up = answered.clone();
    let up = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match client_rx.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if answered_up.swap(false, Ordering::SeqCst) && starts_request(&buf[..n]) {
                requests.fetch_add(1, Ordering::Relaxed);
                // Not even a zero sleep: the timer's resolution is 1 ms.
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
            }
            if upstream_tx.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = upstream_tx.shutdown().await;
    };
    let down = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match upstream_rx.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            // Set before the client can see the answer, so its next request is delayed.
            answered.store(true, Ordering::SeqCst);
            if client_tx.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = client_tx.shutdown().await;
    };
    tokio::join!(up, down);
}
