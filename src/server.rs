//! The RPC server: newline-delimited JSON over std TCP, with a bounded pool
//! of worker threads.
//!
//! Connections are kept open by clients and peers, so a pool that handed
//! each *connection* to a worker would be starved by idle ones. Instead each
//! connection gets a small reader thread that blocks in `read` (cheap: it
//! holds no worker), and only a complete request line is handed to the pool.
//! The number of connections is capped; one over the cap is answered with a
//! `busy` error and closed. A reader waits for its request's response
//! before reading the next line, so responses stay in request order.

use std::io::{self, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;

use crossbeam::channel::{Receiver, Sender, bounded};

use crate::wire::{self, ErrorCode, Request, Response, WireError};

/// Answers one request; called on a pool worker.
pub trait Handler: Send + Sync + 'static {
    fn handle(&self, request: Request) -> Handled;
}

/// What a handler produced.
pub enum Handled {
    Now(Response),
    /// The rest of the work only waits (e.g. for a commit); it runs on the
    /// connection's own thread so that it does not hold a pool worker.
    Later(Box<dyn FnOnce() -> Response + Send>),
}

#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// Requests handled at once.
    pub workers: usize,
    /// Open connections allowed at once.
    pub max_connections: usize,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            workers: 8,
            max_connections: 256,
        }
    }
}

struct Job {
    request: Request,
    reply: Sender<Handled>,
}

/// Starts the acceptor and the worker pool; they run until the process
/// exits. Returns the bound address.
pub fn spawn(
    listener: TcpListener,
    handler: Arc<dyn Handler>,
    options: ServerOptions,
) -> io::Result<SocketAddr> {
    let addr = listener.local_addr()?;
    let (jobs_tx, jobs_rx) = bounded::<Job>(options.workers * 2);
    for k in 0..options.workers {
        let rx = jobs_rx.clone();
        let handler = handler.clone();
        thread::Builder::new()
            .name(format!("worker-{k}"))
            .spawn(move || worker(rx, handler))?;
    }
    let open = Arc::new(AtomicUsize::new(0));
    thread::Builder::new()
        .name("acceptor".into())
        .spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                if open.fetch_add(1, Ordering::SeqCst) >= options.max_connections {
                    open.fetch_sub(1, Ordering::SeqCst);
                    let mut s = stream;
                    let _ = wire::write_message(
                        &mut s,
                        &error(ErrorCode::Busy, "too many open connections"),
                    );
                    continue;
                }
                let jobs = jobs_tx.clone();
                let open = open.clone();
                let spawned = thread::Builder::new()
                    .name("conn".into())
                    .stack_size(128 * 1024)
                    .spawn(move || {
                        serve_connection(stream, jobs);
                        open.fetch_sub(1, Ordering::SeqCst);
                    });
                if spawned.is_err() {
                    log::warn!("cannot start a connection thread; connection dropped");
                }
            }
        })?;
    Ok(addr)
}

fn worker(jobs: Receiver<Job>, handler: Arc<dyn Handler>) {
    for job in jobs {
        let _ = job.reply.send(handler.handle(job.request));
    }
}

fn error(code: ErrorCode, message: &str) -> Response {
    Response::error(code, message)
}

fn serve_connection(stream: TcpStream, jobs: Sender<Job>) {
    let _ = stream.set_nodelay(true);
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    let mut buf = Vec::new();
    let (reply_tx, reply_rx) = bounded(1);
    loop {
        let response = match wire::read_line(&mut reader, wire::MAX_LINE, &mut buf) {
            Ok(()) => match serde_json::from_slice::<Request>(&buf) {
                Ok(request) => {
                    if jobs
                        .send(Job {
                            request,
                            reply: reply_tx.clone(),
                        })
                        .is_err()
                    {
                        return;
                    }
                    match reply_rx.recv() {
                        Ok(Handled::Now(r)) => r,
                        Ok(Handled::Later(wait)) => wait(),
                        Err(_) => return,
                    }
                }
                Err(e) => error(ErrorCode::BadRequest, &format!("malformed request: {e}")),
            },
            Err(e @ WireError::TooLarge { .. }) => {
                error(ErrorCode::TooLarge, &format!("request rejected: {e}"))
            }
            Err(_) => return, // closed, reset, or cut mid-line
        };
        if wire::write_message(&mut writer, &response).is_err() {
            return;
        }
    }
}
