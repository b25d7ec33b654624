//! `raftctl web`: a page that shows a running cluster as it happens, and,
//! with `--lab`, lets you break it with a click.
//!
//! raftctl serves the page itself ([`http`]: synchronous, a thread per
//! request, no async runtime; a request body over 64 KiB is refused from
//! its headers, unread). The page's HTML, CSS and JavaScript are
//! compiled into the binary; nothing is fetched from anywhere else.
//!
//! * `GET /`, `/style.css` and the scripts: the page. `story.js` holds
//!   what arrives and when it is shown (live, or paused and stepped
//!   through), `teach.js` the captions, `tour.js` the guided tour,
//!   `app.js` the drawing.
//! * `GET /stream`: Server-Sent Events, one JSON object per `data:` line:
//!   first `{"type":"hello",…}` (the nodes, whether lab controls are on),
//!   then the latest status of every node and the recent events, then
//!   each update as it comes: `status` (a node's status, several times a
//!   second), `event` (one of a node's events, Raft messages included),
//!   `up` and `down` (a node's stream connected or lost, with why). One
//!   subscription per node feeds every page open (see `observe`); a page
//!   that stops reading is dropped after a bounded queue, as subscribers
//!   of a node are.
//! * `POST /api/put` (`{"key":…,"value":…}`): a write through the leader.
//! * `POST /api/lab/ID/ACTION` with `--lab` only; see [`lab`].
//!
//! Requests that change something must carry the header `X-Raftctl: 1`:
//! a page of another site cannot add it without the browser asking first
//! (CORS preflight), which this server never allows, so only the page
//! served here can press the buttons. And served on a loopback address,
//! it answers only requests addressed to a loopback name (`Host:
//! 127.0.0.1:PORT`, `localhost:PORT`, `[::1]:PORT`), so that another site
//! cannot reach it by pointing a name of its own at 127.0.0.1 (DNS
//! rebinding).

pub mod http;
pub mod lab;

use std::io::{self, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use crossbeam::channel::{Receiver, RecvTimeoutError, Sender, TrySendError, bounded};
use parking_lot::Mutex;
use serde_json::{Value, json};

use http::HttpRequest;

use crate::client::{Client, ClientOptions};
use crate::config::ClusterConfig;
use crate::consensus::NodeId;
use crate::observe::{self, ClusterView, FeedOptions, Update};

const INDEX_HTML: &str = include_str!("page/index.html");
const APP_JS: &str = include_str!("page/app.js");
const STORY_JS: &str = include_str!("page/story.js");
const TEACH_JS: &str = include_str!("page/teach.js");
const TOUR_JS: &str = include_str!("page/tour.js");
const STYLE_CSS: &str = include_str!("page/style.css");

const JS: &str = "text/javascript; charset=utf-8";

/// Pages streaming at once.
const MAX_PAGES: usize = 16;
/// Other requests being answered at once (each on a thread of its own);
/// more are answered 503 at once.
const MAX_REQUESTS: usize = 64;
/// SSE lines queued for one page before it counts as too slow.
const PAGE_QUEUE: usize = 8192;
/// Events (not messages) replayed to a page that opens.
const REPLAYED_EVENTS: usize = 300;
/// How often each node sends its status: the shortest a node allows, so
/// that the page shows a node gone silent (paused, say) within about a
/// heartbeat interval, and its timers and HEARD move as they do.
const STATUS_EVERY: Duration = Duration::from_millis(50);

/// What every page is told first, and the pages themselves.
struct Pages {
    /// The cluster so far, without Raft messages.
    view: ClusterView,
    open: Vec<Sender<Arc<str>>>,
}

/// `raftctl web`.
pub struct Web {
    config: ClusterConfig,
    lab: Option<lab::Lab>,
    pages: Mutex<Pages>,
    /// Requests other than streams being answered.
    answering: AtomicUsize,
}

impl Web {
    pub fn new(config: ClusterConfig, lab: Option<lab::Lab>) -> Arc<Web> {
        let mut view = ClusterView::new(&config, REPLAYED_EVENTS);
        view.status_every = STATUS_EVERY;
        Arc::new(Web {
            config: config.clone(),
            lab,
            pages: Mutex::new(Pages {
                view,
                open: Vec::new(),
            }),
            answering: AtomicUsize::new(0),
        })
    }

    /// Serves on `listen` until the process ends; `bound` is told the
    /// address (port 0 picks a free one).
    pub fn serve(self: &Arc<Self>, listen: &str, bound: impl FnOnce(&str)) -> io::Result<()> {
        let listener = TcpListener::bind(listen)?;
        let bound_to = listener.local_addr()?;
        let address = bound_to.to_string();
        let loopback_port = bound_to.ip().is_loopback().then_some(bound_to.port());
        let feed = observe::follow(
            &self.config,
            &[],
            FeedOptions {
                recent: true,
                messages: true,
                status_every: STATUS_EVERY,
            },
        );
        {
            let web = self.clone();
            thread::Builder::new()
                .name("fan-out".into())
                .spawn(move || web.fan_out(&feed))?;
        }
        bound(&address);
        for connection in listener.incoming() {
            let Ok(connection) = connection else {
                continue; // a connection that failed before it was accepted
            };
            // Each connection is read and answered on a thread of its own;
            // those not yet answered are bounded (streams, by MAX_PAGES).
            if self.answering.fetch_add(1, Ordering::Relaxed) >= MAX_REQUESTS {
                self.answering.fetch_sub(1, Ordering::Relaxed);
                http::refuse(&connection, 503, "too many requests at once");
                continue;
            }
            let web = self.clone();
            thread::Builder::new().name("http".into()).spawn(move || {
                let request = match HttpRequest::read(connection) {
                    Ok(request)
                        if loopback_port
                            .is_some_and(|port| !addressed_to_loopback(&request, port)) =>
                    {
                        let _ = request_refused(
                            request,
                            "this server answers requests to 127.0.0.1 or localhost only",
                        );
                        None
                    }
                    Ok(request) => Some(request),
                    Err(_) => None, // answered already
                };
                match request {
                    Some(request) if request.path() == "/stream" => {
                        web.answering.fetch_sub(1, Ordering::Relaxed);
                        web.stream(request);
                    }
                    Some(request) => {
                        web.handle(request);
                        web.answering.fetch_sub(1, Ordering::Relaxed);
                    }
                    None => {
                        web.answering.fetch_sub(1, Ordering::Relaxed);
                    }
                }
            })?;
        }
        Ok(())
    }

    /// Passes every update to every open page, remembering what a page
    /// that opens later must be told first.
    fn fan_out(&self, feed: &Receiver<Update>) {
        for update in feed {
            let mut pages = self.pages.lock();
            // Encoded only for pages that are open.
            let line: Option<Arc<str>> = (!pages.open.is_empty()).then(|| {
                let message = match &update {
                    Update::Connected { node } => json!({"type": "up", "node": node}),
                    Update::Unreachable { node, error } => {
                        json!({"type": "down", "node": node, "error": error})
                    }
                    Update::Status(s) => json!({"type": "status", "status": s}),
                    Update::Event(e) => json!({"type": "event", "event": e}),
                };
                sse(&message).into()
            });
            if !matches!(&update, Update::Event(e) if e.level == "debug") {
                pages.view.apply(update);
            }
            // A page whose queue is full is dropped: its stream ends.
            if let Some(line) = line {
                pages.open.retain(|page| {
                    !matches!(
                        page.try_send(line.clone()),
                        Err(TrySendError::Full(_) | TrySendError::Disconnected(_))
                    )
                });
            }
        }
    }

    fn hello(&self) -> Value {
        let nodes: Vec<Value> = self
            .config
            .members
            .iter()
            .map(|m| json!({"id": m.id, "address": m.address()}))
            .collect();
        json!({
            "type": "hello",
            "config": self.config.path.display().to_string(),
            "nodes": nodes,
            "status_ms": STATUS_EVERY.as_millis() as u64,
            "lab": self.lab.as_ref().map(|l| l.describe()),
        })
    }

    /// A page opens its stream: what it must know first, then updates.
    fn open_page(&self) -> Option<(Vec<String>, Receiver<Arc<str>>)> {
        let mut pages = self.pages.lock();
        if pages.open.len() >= MAX_PAGES {
            return None;
        }
        let mut first = vec![sse(&self.hello())];
        for (node, v) in &pages.view.nodes {
            // A node that went down is told with its last status, which
            // the page shows greyed (its log as it last was).
            if let Some(s) = &v.status {
                first.push(sse(&json!({"type": "status", "status": s, "replay": true})));
            }
            if !v.reachable {
                let error = v.error.as_deref().unwrap_or("connecting");
                first.push(sse(&json!({"type": "down", "node": node, "error": error})));
            }
        }
        for e in &pages.view.events {
            first.push(sse(&json!({"type": "event", "event": e, "replay": true})));
        }
        let (tx, rx) = bounded(PAGE_QUEUE);
        pages.open.push(tx);
        Some((first, rx))
    }

    fn handle(&self, request: HttpRequest) {
        let url = request.url.clone();
        let path = request.path().to_string();
        let method = request.method.clone();
        let result = match (method.as_str(), path.as_str()) {
            ("GET", "/" | "/index.html") => {
                reply(request, 200, "text/html; charset=utf-8", INDEX_HTML)
            }
            ("GET", "/app.js") => reply(request, 200, JS, APP_JS),
            ("GET", "/story.js") => reply(request, 200, JS, STORY_JS),
            ("GET", "/teach.js") => reply(request, 200, JS, TEACH_JS),
            ("GET", "/tour.js") => reply(request, 200, JS, TOUR_JS),
            ("GET", "/style.css") => reply(request, 200, "text/css; charset=utf-8", STYLE_CSS),
            ("POST", _) if !has_our_header(&request) => reply_json(
                request,
                403,
                &json!({"error": "requests that change something need the header X-Raftctl: 1"}),
            ),
            ("POST", "/api/put") => {
                let body = read_body(&request);
                let (code, answer) = self.put(body);
                reply_json(request, code, &answer)
            }
            ("POST", p) if p.starts_with("/api/lab/") => {
                let (code, answer) = self.lab_action(&p["/api/lab/".len()..]);
                reply_json(request, code, &answer)
            }
            _ => reply_json(request, 404, &json!({"error": format!("no {path} here")})),
        };
        if let Err(e) = result {
            log::debug!("answering {url}: {e}");
        }
    }

    fn put(&self, body: Result<Value, String>) -> (u16, Value) {
        let body = match body {
            Ok(body) => body,
            Err(e) => return (400, json!({"error": e})),
        };
        let (Some(key), Some(value)) = (body["key"].as_str(), body["value"].as_str()) else {
            return (
                400,
                json!({"error": "expected {\"key\": \"…\", \"value\": \"…\"}"}),
            );
        };
        let options = ClientOptions {
            timeout: Duration::from_secs(3),
            ..ClientOptions::default()
        };
        let mut client = Client::new(self.config.clone(), options);
        match client.put(key, value) {
            Ok(index) => (200, json!({"index": index})),
            Err(e) => (503, json!({"error": e.to_string()})),
        }
    }

    fn lab_action(&self, rest: &str) -> (u16, Value) {
        let Some(lab) = &self.lab else {
            return (
                403,
                json!({"error": "lab controls are off: start raftctl web with --lab"}),
            );
        };
        let Some((id, action)) = rest.split_once('/') else {
            return (404, json!({"error": "expected /api/lab/ID/ACTION"}));
        };
        let (Ok(id), Ok(action)) = (id.parse::<NodeId>(), action.parse::<lab::Action>()) else {
            return (404, json!({"error": format!("no node or action {rest:?}")}));
        };
        match lab.act(id, action) {
            Ok(done) => (200, json!({"done": done})),
            Err(e) => (409, json!({"error": e.to_string()})),
        }
    }

    /// Server-Sent Events until the page goes away.
    fn stream(&self, request: HttpRequest) {
        let Some((first, updates)) = self.open_page() else {
            let _ = reply_json(
                request,
                503,
                &json!({"error": format!("at most {MAX_PAGES} pages at once")}),
            );
            return;
        };
        let mut out = request.into_stream();
        let head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nConnection: close\r\n\r\n";
        let mut send = |text: &str| out.write_all(text.as_bytes()).and_then(|()| out.flush());
        if send(head).is_err() || first.iter().any(|line| send(line).is_err()) {
            return;
        }
        loop {
            let sent = match updates.recv_timeout(Duration::from_secs(15)) {
                Ok(line) => send(&line),
                // A comment now and then, so a closed page is noticed.
                Err(RecvTimeoutError::Timeout) => send(": still here\n\n"),
                Err(RecvTimeoutError::Disconnected) => {
                    let _ = send(&sse(
                        &json!({"type": "dropped", "error": "this page fell too far behind"}),
                    ));
                    return;
                }
            };
            if sent.is_err() {
                return;
            }
        }
    }
}

/// One Server-Sent Event carrying `message`.
fn sse(message: &Value) -> String {
    format!("data: {message}\n\n")
}

/// Whether the request's `Host` names this server by a loopback name.
fn addressed_to_loopback(request: &HttpRequest, port: u16) -> bool {
    let host = request.header("Host").map(str::to_ascii_lowercase);
    host.is_some_and(|host| {
        ["127.0.0.1", "localhost", "[::1]"]
            .iter()
            .any(|name| host == format!("{name}:{port}"))
    })
}

fn has_our_header(request: &HttpRequest) -> bool {
    request.header("X-Raftctl") == Some("1")
}

fn read_body(request: &HttpRequest) -> Result<Value, String> {
    serde_json::from_slice(&request.body).map_err(|e| format!("not JSON: {e}"))
}

fn reply(request: HttpRequest, code: u16, content_type: &str, body: &str) -> io::Result<()> {
    request.respond(code, content_type, body.as_bytes())
}

fn reply_json(request: HttpRequest, code: u16, body: &Value) -> io::Result<()> {
    reply(request, code, "application/json", &body.to_string())
}

/// Answers a request addressed to a name that is not ours with 403.
fn request_refused(request: HttpRequest, why: &str) -> io::Result<()> {
    reply_json(request, 403, &json!({ "error": why }))
}
