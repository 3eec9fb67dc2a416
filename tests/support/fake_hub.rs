//! A stand-in for the Hugging Face Hub's `resolve` endpoint, for integration tests.
//!
//! Serves `HEAD`/`GET /{owner}/{name}/resolve/{revision}/{path}` on `127.0.0.1` (random port) with
//! the headers `hf-hub` reads (`ETag`, `X-Linked-Etag`, `X-Linked-Size`, `X-Repo-Commit`), answers
//! unknown entries with the Hub's 404, and can inject one [`Fault`] per file. Plain std: one thread
//! per connection, HTTP/1.1 parsed by hand, `Connection: close` on every response.
//!
//! Include it with `#[path = "support/fake_hub.rs"] mod fake_hub;`.
#![allow(dead_code)] // each test crate uses its own subset

use std::borrow::Cow;
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use sha2::{Digest, Sha256};

/// One file of one repository on the fake Hub.
#[derive(Clone)]
pub struct HubFile {
    /// Repository id, e.g. `"timm/resnet50.tv_in1k"`.
    pub repo: String,
    /// Path inside the repository, e.g. `"model.safetensors"`.
    pub path: String,
    /// The file's bytes.
    pub content: Arc<Vec<u8>>,
    /// The commit the repository's `main` points at: 40 lowercase hex digits.
    pub commit: String,
}

impl HubFile {
    /// A file of `repo` at `path`; its commit is the first 40 hex digits of `sha256(repo)`, so every
    /// file of one repository shares one commit.
    pub fn new(repo: &str, path: &str, content: Vec<u8>) -> Self {
        let mut commit = sha256_hex(repo.as_bytes());
        commit.truncate(40);
        HubFile {
            repo: repo.to_string(),
            path: path.to_string(),
            content: Arc::new(content),
            commit,
        }
    }

    /// Lowercase hex SHA-256 of the content (what the Hub sends as an LFS file's etag).
    pub fn sha256(&self) -> String {
        sha256_hex(&self.content)
    }
}

/// A misbehaviour injected on one file's resolve URL (whatever the revision, `main` or the commit).
#[derive(Clone, Debug, PartialEq)]
pub enum Fault {
    /// Answer normally.
    None,
    /// 404 `EntryNotFound` although the file exists.
    NotFound,
    /// 500 with an HTML body on both `HEAD` and `GET`.
    ServerError,
    /// `HEAD` answers normally, `GET` answers 500 with an HTML body.
    GetServerError,
    /// `GET`: full `Content-Length`, but only the first half of the bytes, then close.
    TruncatedBody,
    /// `GET`: same headers and length, but every byte xor `0xFF`.
    WrongBody,
    /// `ETag` and `X-Linked-Etag` are `"../../../../tmp/pwned"` (quoted).
    HostileEtag,
    /// `X-Repo-Commit` is `../../x`.
    HostileCommit,
    /// Sleep this long before sending any response headers (`HEAD` and `GET`).
    StallHeaders(Duration),
    /// `GET`: headers and the first quarter of the body, then sleep this long, then the rest.
    StallBody(Duration),
    /// 307 with a relative `Location` (the same path plus `?redirected=1`), carrying
    /// `X-Linked-Etag`, `X-Linked-Size` and `X-Repo-Commit` but no `ETag`; the redirected URL
    /// answers normally.
    RelativeRedirect,
    /// `GET`: the body in chunks of `chunk` bytes, sleeping `every` between chunks.
    SlowBody { chunk: usize, every: Duration },
    /// `GET`: the body one byte at a time, sleeping `every` between bytes (a trickling server:
    /// data always arrives well within any per-read timeout, but the whole takes forever).
    Trickle(Duration),
}

/// One request as received.
#[derive(Clone, Debug)]
pub struct Request {
    /// `GET`, `HEAD`, ...
    pub method: String,
    /// The raw request target, percent-encoding and query included.
    pub path: String,
    /// Header names lowercased, values trimmed, in arrival order.
    pub headers: Vec<(String, String)>,
}

/// A running fake Hub; dropping it stops the server.
pub struct FakeHub {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

/// State shared by the accept loop and the connection threads.
struct Shared {
    files: Vec<HubFile>,
    faults: Mutex<HashMap<(String, String), Fault>>,
    log: Mutex<Vec<Request>>,
}

impl FakeHub {
    /// Serves `files` on `127.0.0.1` at a random port. Panics only if the socket cannot be bound.
    pub fn start(files: Vec<HubFile>) -> FakeHub {
        let listener = TcpListener::bind("127.0.0.1:0").expect("fake hub: bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("fake hub: local address");
        listener
            .set_nonblocking(true)
            .expect("fake hub: nonblocking listener");
        let shared = Arc::new(Shared {
            files,
            faults: Mutex::default(),
            log: Mutex::default(),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let (shared2, stop2) = (Arc::clone(&shared), Arc::clone(&stop));
        let accept = thread::Builder::new()
            .name("fake-hub-accept".into())
            .spawn(move || accept_loop(&listener, &shared2, &stop2))
            .expect("fake hub: spawn accept thread");
        FakeHub {
            addr,
            shared,
            stop,
            accept: Some(accept),
        }
    }

    /// The base URL, `http://127.0.0.1:PORT` (no trailing slash).
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Injects `fault` for `repo`/`path` on every later request; [`Fault::None`] clears it.
    pub fn set_fault(&self, repo: &str, path: &str, fault: Fault) {
        let key = (repo.to_string(), path.to_string());
        let mut faults = lock(&self.shared.faults);
        if fault == Fault::None {
            faults.remove(&key);
        } else {
            faults.insert(key, fault);
        }
    }

    /// Every well-formed request received so far, in arrival order.
    pub fn requests(&self) -> Vec<Request> {
        lock(&self.shared.log).clone()
    }

    /// How many logged requests have this method (case-insensitive) and a target containing
    /// `path_contains`.
    pub fn count(&self, method: &str, path_contains: &str) -> usize {
        let log = lock(&self.shared.log);
        log.iter()
            .filter(|r| r.method.eq_ignore_ascii_case(method) && r.path.contains(path_contains))
            .count()
    }

    /// Forgets the logged requests.
    pub fn reset_log(&self) {
        lock(&self.shared.log).clear();
    }
}

impl Drop for FakeHub {
    /// Stops the accept loop and joins it, which closes the listening socket. Connection threads
    /// still stalling are left to finish on their own.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }
}

/// Locks a mutex, ignoring poisoning (a panicking test must not wedge the server).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Polls the nonblocking listener until `stop` is set; one thread per accepted connection.
fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>, stop: &AtomicBool) {
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                let shared = Arc::clone(shared);
                // If the thread cannot be spawned the stream is dropped: the connection closes.
                let _ = thread::Builder::new()
                    .name("fake-hub-conn".into())
                    .spawn(move || serve(stream, &shared));
            }
            Err(_) => thread::sleep(Duration::from_millis(2)),
        }
    }
}

/// Reads one request, logs it, answers it, then closes the connection gracefully.
fn serve(mut stream: TcpStream, shared: &Shared) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(10)));
    let Some(req) = read_request(&mut stream) else {
        return;
    };
    lock(&shared.log).push(req.clone());
    let _ = respond(&mut stream, shared, &req).and_then(|()| stream.flush());
    // Half-close, then drain briefly, so the close does not turn into a reset that loses data.
    let _ = stream.shutdown(Shutdown::Write);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    let mut sink = [0u8; 1024];
    for _ in 0..64 {
        if !matches!(stream.read(&mut sink), Ok(n) if n > 0) {
            break;
        }
    }
}

/// Reads up to the blank line ending the headers (at most 64 KiB); `None` if malformed.
fn read_request(stream: &mut TcpStream) -> Option<Request> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    let end = loop {
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos;
        }
        if buf.len() > 64 * 1024 {
            return None;
        }
        let n = stream.read(&mut chunk).ok().filter(|&n| n > 0)?;
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..end]);
    let mut lines = head.split("\r\n");
    let mut parts = lines.next()?.split(' ');
    let (method, path, version) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some()
        || method.is_empty()
        || !path.starts_with('/')
        || !version.starts_with("HTTP/1.")
    {
        return None;
    }
    let mut headers = Vec::new();
    for line in lines {
        let (name, value) = line.split_once(':')?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
    }
    Some(Request {
        method: method.to_string(),
        path: path.to_string(),
        headers,
    })
}

/// Decodes `%XX` escapes (anything else, bad escapes included, is kept as is).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match hex.filter(|h| b[i] == b'%' && h.bytes().all(|c| c.is_ascii_hexdigit())) {
            Some(h) => {
                out.push(u8::from_str_radix(h, 16).unwrap_or(b'%'));
                i += 3;
            }
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Percent-decodes each path segment and joins them with `/`.
fn decode_segments(segments: &[&str]) -> String {
    let decoded: Vec<String> = segments.iter().map(|s| percent_decode(s)).collect();
    decoded.join("/")
}

/// What a request target resolves to.
enum Route<'a> {
    /// A known file; `redirected` if the query carries `redirected=1`.
    File { file: &'a HubFile, redirected: bool },
    /// No such entry; `commit` is the repository's commit when the repository exists.
    Missing { commit: Option<&'a str> },
}

/// Resolves `/{owner}/{name}/resolve/{revision}/{path}` (or `/{name}/resolve/...`); the revision
/// may be `main` or the repository's commit.
fn route<'a>(files: &'a [HubFile], target: &str) -> Route<'a> {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let segs: Vec<&str> = path.split('/').collect();
    let is_resolve = |k: usize| segs.get(k) == Some(&"resolve") && segs.len() >= k + 3;
    let Some(k) = [3, 2].into_iter().find(|&k| is_resolve(k)) else {
        return Route::Missing { commit: None };
    };
    let repo = decode_segments(&segs[1..k]);
    let revision = percent_decode(segs[k + 1]);
    let file_path = decode_segments(&segs[k + 2..]);
    let commit = files
        .iter()
        .find(|f| f.repo == repo)
        .map(|f| f.commit.as_str());
    let wanted = |f: &&HubFile| {
        f.repo == repo && f.path == file_path && (revision == "main" || revision == f.commit)
    };
    match files.iter().find(wanted) {
        Some(file) => {
            let redirected = query.split('&').any(|p| p == "redirected=1");
            Route::File { file, redirected }
        }
        None => Route::Missing { commit },
    }
}

/// Writes a status line, `headers`, `Content-Length: len` and `Connection: close`.
fn write_head(
    s: &mut TcpStream,
    status: &str,
    headers: &[(&str, String)],
    len: usize,
) -> io::Result<()> {
    let mut head = format!("HTTP/1.1 {status}\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(&format!("Content-Length: {len}\r\nConnection: close\r\n"));
    s.write_all(format!("{head}\r\n").as_bytes())
}

/// Sends an error answer: headers, then `body` unless the request was a `HEAD`.
fn send_error(
    s: &mut TcpStream,
    status: &str,
    headers: &[(&str, String)],
    body: &[u8],
    is_get: bool,
) -> io::Result<()> {
    write_head(s, status, headers, body.len())?;
    if is_get {
        s.write_all(body)?;
    }
    Ok(())
}

/// The Hub's 404: `X-Error-Code: EntryNotFound`, a JSON body, `X-Repo-Commit` if the repo exists.
fn not_found(s: &mut TcpStream, commit: Option<&str>, is_get: bool) -> io::Result<()> {
    let mut headers = vec![("Content-Type", "application/json".to_string())];
    headers.push(("X-Error-Code", "EntryNotFound".to_string()));
    headers.extend(commit.map(|c| ("X-Repo-Commit", c.to_string())));
    let body = br#"{"error":"Entry not found"}"#;
    send_error(s, "404 Not Found", &headers, body, is_get)
}

/// A 500 with an HTML body, as a failing front end sends it.
fn server_error(s: &mut TcpStream, is_get: bool) -> io::Result<()> {
    let body =
        b"<!DOCTYPE html><html><head><title>500</title></head><body>Internal Error</body></html>";
    let headers = [("Content-Type", "text/html".to_string())];
    send_error(s, "500 Internal Server Error", &headers, body, is_get)
}

/// Answers one request, applying the file's fault if any.
fn respond(s: &mut TcpStream, shared: &Shared, req: &Request) -> io::Result<()> {
    let is_get = req.method == "GET";
    if !is_get && req.method != "HEAD" {
        return write_head(s, "405 Method Not Allowed", &[], 0);
    }
    let (file, redirected) = match route(&shared.files, &req.path) {
        Route::File { file, redirected } => (file, redirected),
        Route::Missing { commit } => return not_found(s, commit, is_get),
    };
    let key = (file.repo.clone(), file.path.clone());
    let fault = lock(&shared.faults)
        .get(&key)
        .cloned()
        .unwrap_or(Fault::None);
    let len = file.content.len();
    let mut etag = format!("\"{}\"", file.sha256());
    let mut commit = file.commit.clone();
    match fault {
        Fault::HostileEtag => etag = "\"../../../../tmp/pwned\"".to_string(),
        Fault::HostileCommit => commit = "../../x".to_string(),
        Fault::StallHeaders(d) => thread::sleep(d),
        Fault::NotFound => return not_found(s, Some(&file.commit), is_get),
        Fault::ServerError => return server_error(s, is_get),
        Fault::GetServerError if is_get => return server_error(s, is_get),
        _ => {}
    }
    let mut headers = vec![
        ("X-Linked-Etag", etag.clone()),
        ("X-Linked-Size", len.to_string()),
    ];
    headers.push(("X-Repo-Commit", commit));
    if fault == Fault::RelativeRedirect && !redirected {
        let path = req.path.split('?').next().unwrap_or_default();
        headers.push(("Location", format!("{path}?redirected=1")));
        return write_head(s, "307 Temporary Redirect", &headers, 0);
    }
    headers.push(("ETag", etag));
    headers.push(("Content-Type", "application/octet-stream".to_string()));
    write_head(s, "200 OK", &headers, len)?;
    if !is_get {
        return Ok(());
    }
    let body: Cow<'_, [u8]> = match fault {
        Fault::WrongBody => Cow::Owned(file.content.iter().map(|b| b ^ 0xFF).collect()),
        _ => Cow::Borrowed(file.content.as_slice()),
    };
    match fault {
        Fault::TruncatedBody => s.write_all(&body[..len / 2]),
        Fault::StallBody(d) => {
            s.write_all(&body[..len / 4])?;
            s.flush()?;
            thread::sleep(d);
            s.write_all(&body[len / 4..])
        }
        Fault::Trickle(every) => {
            for &b in body.iter() {
                s.write_all(&[b])?;
                s.flush()?;
                thread::sleep(every);
            }
            Ok(())
        }
        Fault::SlowBody { chunk, every } => {
            for (i, piece) in body.chunks(chunk.max(1)).enumerate() {
                if i > 0 {
                    thread::sleep(every);
                }
                s.write_all(piece)?;
                s.flush()?;
            }
            Ok(())
        }
        _ => s.write_all(&body),
    }
}
