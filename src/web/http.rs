//! The little HTTP/1.1 that `raftctl web` speaks: one request per
//! connection, a head of bounded size read under a timeout, and a body
//! read only when its declared length is within [`MAX_BODY`].
//!
//! Written here rather than taken from a crate because the bound on the
//! body is the point: tiny_http (used before) reads a request's unread
//! body to its end when the request is dropped, into one buffer allocated
//! at the size `Content-Length` claims: a `POST` of a gigabyte, answered
//! at once, was still read whole (issue 19 saw `raftctl web` grow by
//! hundreds of megabytes meanwhile), and one claiming a terabyte aborted
//! it (the allocation failed). Here a body over the limit is refused from
//! its headers alone, and never read.
//!
//! What the page needs is small: `GET` of three files and an event
//! stream, and `POST` of a small JSON object. No keep-alive (every answer
//! says `Connection: close`), no chunked bodies (refused with 411).

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

/// The largest request body read: a `put` of a key and a value.
pub const MAX_BODY: usize = 64 * 1024;
/// The largest request line plus headers.
const MAX_HEAD: usize = 16 * 1024;
/// How long a client may take to send its head and body.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// A request, its body read.
pub struct HttpRequest {
    pub method: String,
    /// The request target as sent, query included (`/api/put?x`).
    pub url: String,
    headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    stream: TcpStream,
}

/// Method, target, headers (names in lower case), body.
type Parsed = (String, String, Vec<(String, String)>, Vec<u8>);

/// Why a request was not read; answered with `code` and closed.
#[derive(Debug)]
pub struct Refused {
    pub code: u16,
    pub why: String,
}

impl HttpRequest {
    /// Reads one request from `stream`. A request that is malformed,
    /// too large or too slow is answered here (400, 411, 413, 431 or 408)
    /// and the connection closed; the error says why.
    pub fn read(stream: TcpStream) -> Result<HttpRequest, Refused> {
        match Self::parse(&stream) {
            Ok((method, url, headers, body)) => Ok(HttpRequest {
                method,
                url,
                headers,
                body,
                stream,
            }),
            Err(refused) => {
                refuse(&stream, refused.code, &refused.why);
                Err(refused)
            }
        }
    }

    fn parse(stream: &TcpStream) -> Result<Parsed, Refused> {
        let refuse = |code: u16, why: &str| Refused {
            code,
            why: why.to_string(),
        };
        stream
            .set_read_timeout(Some(READ_TIMEOUT))
            .map_err(|e| refuse(400, &e.to_string()))?;
        let started = Instant::now();
        let mut reader = BufReader::new(stream.take(MAX_HEAD as u64));
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            let n = reader.read_line(&mut line).map_err(|e| match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                    refuse(408, "the request's head did not arrive in time")
                }
                _ => refuse(400, "the request's head is not text"),
            })?;
            if n == 0 || !line.ends_with('\n') {
                return Err(refuse(431, "the request's head is too large or cut short"));
            }
            if started.elapsed() > READ_TIMEOUT {
                return Err(refuse(408, "the request's head did not arrive in time"));
            }
            let line = line.trim_end_matches(['\r', '\n']).to_string();
            if line.is_empty() {
                break;
            }
            lines.push(line);
        }
        let mut first = lines
            .first()
            .ok_or_else(|| refuse(400, "no request line"))?
            .split(' ');
        let (Some(method), Some(url), Some(version), None) =
            (first.next(), first.next(), first.next(), first.next())
        else {
            return Err(refuse(400, "the request line is not METHOD TARGET VERSION"));
        };
        if !version.starts_with("HTTP/1.") {
            return Err(refuse(400, "only HTTP/1.x is spoken here"));
        }
        let mut headers = Vec::new();
        for line in &lines[1..] {
            let (name, value) = line
                .split_once(':')
                .ok_or_else(|| refuse(400, "a header line without a colon"))?;
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
        let find = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v)| v);
        if find("transfer-encoding").is_some() {
            return Err(refuse(411, "send the body with a Content-Length"));
        }
        let length: usize = match find("content-length") {
            None => 0,
            Some(v) => v
                .parse()
                .map_err(|_| refuse(400, "Content-Length is not a number"))?,
        };
        // Refused from the header alone: nothing of it is read.
        if length > MAX_BODY {
            return Err(refuse(
                413,
                &format!("a request body may hold at most {MAX_BODY} bytes"),
            ));
        }
        // What the head's reader took in already, then the socket.
        let mut body = reader.buffer().to_vec();
        body.truncate(length);
        let mut rest = vec![0; length - body.len()];
        let mut socket = reader.into_inner().into_inner();
        socket
            .read_exact(&mut rest)
            .map_err(|_| refuse(400, "the body is shorter than its Content-Length"))?;
        body.extend_from_slice(&rest);
        Ok((method.to_string(), url.to_string(), headers, body))
    }

    /// The value of header `name` (any case), if sent.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The path, without the query.
    pub fn path(&self) -> &str {
        self.url.split('?').next().unwrap_or("/")
    }

    /// Answers with `code` and `body`, and closes the connection.
    pub fn respond(self, code: u16, content_type: &str, body: &[u8]) -> io::Result<()> {
        respond_on(&self.stream, code, content_type, body)?;
        let _ = self.stream.shutdown(Shutdown::Both);
        Ok(())
    }

    /// The connection, to write a streamed answer on (its head included).
    pub fn into_stream(self) -> TcpStream {
        self.stream
    }
}

fn respond_on(
    mut stream: &TcpStream,
    code: u16,
    content_type: &str,
    body: &[u8],
) -> io::Result<()> {
    let reason = match code {
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "",
    };
    let head = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    stream.flush()
}

/// Answers a connection with `code` and `{"error": why}` without reading
/// (more of) its request, and closes it.
pub fn refuse(stream: &TcpStream, code: u16, why: &str) {
    let text = format!("{{\"error\":{}}}", serde_json::Value::from(why));
    let _ = respond_on(stream, code, "application/json", text.as_bytes());
    close_unread(stream);
}

/// Closes a connection whose client may still be sending. Closing with
/// unread data makes the kernel reset the connection, which can discard
/// the answer before the client reads it; so the sending side is shut
/// first, and what arrives meanwhile is read and dropped, through a small
/// buffer, for a moment at most.
fn close_unread(stream: &TcpStream) {
    let _ = stream.shutdown(Shutdown::Write);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(100)));
    let deadline = Instant::now() + Duration::from_millis(500);
    let mut buf = [0u8; 8192];
    let mut reader = stream;
    while Instant::now() < deadline {
        match reader.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// Sends `raw` to a server that reads one request; returns what the
    /// server made of it and the answer's status line.
    /// What the server saw (method, target, body), or the code it refused
    /// the request with.
    type Seen = Result<(String, String, Vec<u8>), u16>;

    fn exchange(raw: &[u8]) -> (Seen, String) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            match HttpRequest::read(stream) {
                Ok(r) => {
                    let seen = (r.method.clone(), r.url.clone(), r.body.clone());
                    r.respond(200, "text/plain", b"ok").unwrap();
                    Ok(seen)
                }
                Err(refused) => Err(refused.code),
            }
        });
        let mut client = TcpStream::connect(address).unwrap();
        client.write_all(raw).unwrap();
        let mut answer = String::new();
        let _ = client.read_to_string(&mut answer);
        let status = answer.lines().next().unwrap_or_default().to_string();
        (server.join().unwrap(), status)
    }

    #[test]
    fn a_request_with_a_small_body_is_read_whole() {
        let (seen, status) = exchange(
            b"POST /api/put?x=1 HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nX-Raftctl: 1\r\n\r\nhello",
        );
        assert_eq!(
            seen.unwrap(),
            ("POST".into(), "/api/put?x=1".into(), b"hello".to_vec())
        );
        assert_eq!(status, "HTTP/1.1 200 OK");
    }

    #[test]
    fn a_body_over_the_limit_is_refused_from_its_header_without_being_read() {
        // A terabyte claimed, nothing sent: answered at once, not after
        // the body (which never comes) or a timeout.
        let started = Instant::now();
        let (seen, status) =
            exchange(b"POST /api/put HTTP/1.1\r\nHost: h\r\nContent-Length: 1000000000000\r\n\r\n");
        assert_eq!(seen.unwrap_err(), 413);
        assert!(status.starts_with("HTTP/1.1 413"), "{status}");
        assert!(started.elapsed() < READ_TIMEOUT);
    }

    #[test]
    fn malformed_chunked_and_oversized_heads_are_refused() {
        for (raw, code) in [
            (&b"garbage\r\n\r\n"[..], 400),
            (b"GET / SPDY/3\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nno colon here\r\n\r\n", 400),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
                411,
            ),
            (b"POST / HTTP/1.1\r\nContent-Length: lots\r\n\r\n", 400),
        ] {
            let (seen, status) = exchange(raw);
            assert_eq!(seen.unwrap_err(), code, "{}", String::from_utf8_lossy(raw));
            assert!(status.contains(&code.to_string()), "{status}");
        }
        let mut huge = b"GET / HTTP/1.1\r\nX-Filler: ".to_vec();
        huge.extend(std::iter::repeat_n(b'a', MAX_HEAD * 2));
        huge.extend_from_slice(b"\r\n\r\n");
        assert_eq!(exchange(&huge).0.unwrap_err(), 431);
    }
}
