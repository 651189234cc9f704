//! A TCP proxy in front of the apiserver that can stop forwarding without closing anything, the
//! way a partitioned network or a wedged load balancer holds a request: bytes stay unanswered,
//! connections stay open, and the client (which has no read timeout) waits.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// A running proxy; dropping it closes every connection.
pub struct StallingProxy {
    /// Where clients connect.
    pub addr: SocketAddr,
    stalled: Arc<watch::Sender<bool>>,
    stop: CancellationToken,
}

impl StallingProxy {
    /// Forward 127.0.0.1:<ephemeral> to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("binding the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let stalled = Arc::new(watch::channel(false).0);
        let stop = CancellationToken::new();
        let (s, st) = (stalled.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let conn = tokio::select! {
                    () = st.cancelled() => return,
                    c = listener.accept() => c,
                };
                let Ok((down, _)) = conn else { continue };
                let (s, st) = (s.clone(), st.clone());
                tokio::spawn(async move {
                    let Ok(up) = TcpStream::connect(upstream).await else { return };
                    let (dr, dw) = down.into_split();
                    let (ur, uw) = up.into_split();
                    tokio::select! {
                        () = st.cancelled() => {}
                        () = pump(dr, uw, s.subscribe()) => {}
                        () = pump(ur, dw, s.subscribe()) => {}
                    }
                });
            }
        });
        Self { addr, stalled, stop }
    }

    /// Stop forwarding in both directions; connections (old and new) stay open, unanswered.
    pub fn stall(&self) {
        self.stalled.send_replace(true);
    }

    /// Forward again (held bytes are delivered).
    pub fn resume(&self) {
        self.stalled.send_replace(false);
    }
}

impl Drop for StallingProxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Copy `from` to `to`, holding every chunk while the proxy is stalled.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut stalled: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if stalled.wait_for(|s| !*s).await.is_err() {
            return;
        }
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        // A chunk read just before the stall is held too: nothing crosses while stalled.
        if stalled.wait_for(|s| !*s).await.is_err() {
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
