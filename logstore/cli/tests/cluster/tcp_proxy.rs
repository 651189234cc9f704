//! A TCP proxy in front of a node's service port that can stop forwarding without closing anything: the
//! connections stay open, bytes stop moving in both directions (a network partition as a client sees
//! it: no reset, no EOF, just silence), and forwarding resumes when the partition heals.
//!
//! Plain threads (not the test's runtime), so the proxy keeps working while a test blocks a runtime
//! thread and outlives any one runtime.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

/// How often a blocked pump re-checks the partition and stop flags.
const TICK: Duration = Duration::from_millis(20);

#[derive(Debug)]
struct State {
    target: SocketAddr,
    partitioned: AtomicBool,
    stopped: AtomicBool,
    connections: AtomicUsize,
}

impl State {
    /// Waits while partitioned; false once the proxy is stopped.
    fn wait_healed(&self) -> bool {
        while self.partitioned.load(Ordering::Acquire) {
            if self.stopped.load(Ordering::Acquire) {
                return false;
            }
            std::thread::sleep(TICK);
        }
        !self.stopped.load(Ordering::Acquire)
    }
}

/// A proxy listening on an ephemeral loopback port and forwarding to `target`.
#[derive(Debug)]
pub struct TcpProxy {
    addr: SocketAddr,
    state: Arc<State>,
}

impl TcpProxy {
    /// Starts forwarding 127.0.0.1:<ephemeral> to `target`.
    pub fn start(target: SocketAddr) -> Arc<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address");
        listener.set_nonblocking(true).expect("non-blocking accept");
        let state = Arc::new(State {
            target,
            partitioned: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            connections: AtomicUsize::new(0),
        });
        let s = state.clone();
        std::thread::Builder::new()
            .name(format!("proxy-{addr}"))
            .spawn(move || accept_loop(listener, s))
            .expect("spawn the proxy");
        Arc::new(Self { addr, state })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops forwarding (true) or resumes (false). Open connections are neither closed nor reset.
    pub fn partition(&self, on: bool) {
        self.state.partitioned.store(on, Ordering::Release);
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::Acquire)
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.state.stopped.store(true, Ordering::Release);
    }
}

fn accept_loop(listener: TcpListener, state: Arc<State>) {
    while !state.stopped.load(Ordering::Acquire) {
        match listener.accept() {
            Ok((client, _)) => {
                state.connections.fetch_add(1, Ordering::AcqRel);
                let s = state.clone();
                let _ = std::thread::Builder::new().name("proxy-conn".into()).spawn(move || connect(client, s));
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::sleep(TICK),
            Err(_) => std::thread::sleep(TICK),
        }
    }
}

fn connect(client: TcpStream, state: Arc<State>) {
    // A partition also holds new connections: accepted (the kernel does that anyway), never forwarded.
    if !state.wait_healed() {
        return;
    }
    let _ = client.set_nonblocking(false);
    let Ok(server) = TcpStream::connect_timeout(&state.target, Duration::from_secs(2)) else {
        // The node is down: the client sees the connection close, as with the node itself.
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) else { return };
    let s = state.clone();
    let up = std::thread::Builder::new().name("proxy-up".into()).spawn(move || pump(client, server, s));
    pump(s2, c2, state);
    if let Ok(h) = up {
        let _ = h.join();
    }
}

/// Copies `from` to `to` while not partitioned; a chunk read during a partition is held until it heals.
fn pump(mut from: TcpStream, mut to: TcpStream, state: Arc<State>) {
    let _ = from.set_read_timeout(Some(TICK * 5));
    let mut buf = vec![0u8; 64 << 10];
    loop {
        if !state.wait_healed() {
            break;
        }
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if !state.wait_healed() || to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
    }
    let _ = to.shutdown(Shutdown::Write);
    let _ = from.shutdown(Shutdown::Read);
}
