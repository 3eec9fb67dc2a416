//! Checks the fake Hub (`tests/support/fake_hub.rs`) with raw HTTP/1.1 over `std::net::TcpStream`,
//! so the download tests that rely on it test the client, not the stand-in.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

#[path = "support/fake_hub.rs"]
mod fake_hub;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use fake_hub::{FakeHub, Fault, HubFile};

const REPO: &str = "timm/resnet50.tv_in1k";
const FILE: &str = "model.safetensors";
const OTHER: &str = "config.json";
const NESTED: &str = "sub dir/file #1.bin";
const STALL: Duration = Duration::from_millis(300);

/// 1000 deterministic bytes (quarter 250, half 500).
fn content() -> Vec<u8> {
    (0..1000u32).map(|i| (i * 7 % 251) as u8).collect()
}

fn hub() -> (FakeHub, HubFile) {
    let file = HubFile::new(REPO, FILE, content());
    let files = vec![
        file.clone(),
        HubFile::new(REPO, OTHER, b"{\"a\":1}".to_vec()),
        HubFile::new(REPO, NESTED, b"nested".to_vec()),
    ];
    (FakeHub::start(files), file)
}

fn addr(hub: &FakeHub) -> SocketAddr {
    hub.endpoint()
        .strip_prefix("http://")
        .unwrap()
        .parse()
        .unwrap()
}

fn url(revision: &str, path: &str) -> String {
    format!("/{REPO}/resolve/{revision}/{path}")
}

/// A parsed response.
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Sends raw bytes and reads until the server closes (3 s read timeout).
fn raw(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    s.write_all(bytes).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

fn request_bytes(method: &str, target: &str, extra: &[(&str, &str)]) -> Vec<u8> {
    let mut req = format!("{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    for (n, v) in extra {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.into_bytes()
}

fn parse(bytes: &[u8]) -> Resp {
    let end = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("no header terminator");
    let head = std::str::from_utf8(&bytes[..end]).unwrap();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .map(|l| {
            let (n, v) = l.split_once(':').unwrap();
            (n.to_string(), v.trim().to_string())
        })
        .collect();
    Resp {
        status,
        headers,
        body: bytes[end + 4..].to_vec(),
    }
}

fn send(hub: &FakeHub, method: &str, target: &str, extra: &[(&str, &str)]) -> Resp {
    parse(&raw(addr(hub), &request_bytes(method, target, extra)))
}

#[test]
fn head_of_a_normal_file_carries_the_hub_headers() {
    let (hub, file) = hub();
    let r = send(&hub, "HEAD", &url("main", FILE), &[]);
    assert_eq!(r.status, 200);
    let sha = file.sha256();
    assert_eq!(sha, fake_hub_sha(&content()));
    assert_eq!(r.header("ETag"), Some(format!("\"{sha}\"").as_str()));
    assert_eq!(
        r.header("X-Linked-Etag"),
        Some(format!("\"{sha}\"").as_str())
    );
    assert_eq!(r.header("X-Linked-Size"), Some("1000"));
    assert_eq!(r.header("Content-Length"), Some("1000"));
    assert_eq!(r.header("Content-Type"), Some("application/octet-stream"));
    assert_eq!(r.header("Connection"), Some("close"));
    let commit = r.header("X-Repo-Commit").unwrap();
    assert_eq!(commit, file.commit);
    assert!(
        commit.len() == 40
            && commit
                .chars()
                .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
    );
    assert!(r.body.is_empty(), "HEAD must not send a body");
}

fn fake_hub_sha(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn get_sends_the_content_by_branch_and_by_commit() {
    let (hub, file) = hub();
    let r = send(&hub, "GET", &url("main", FILE), &[]);
    assert_eq!((r.status, r.body.as_slice()), (200, content().as_slice()));
    let r = send(&hub, "GET", &url(&file.commit, FILE), &[]);
    assert_eq!((r.status, r.body.as_slice()), (200, content().as_slice()));
    assert_eq!(r.header("X-Repo-Commit"), Some(file.commit.as_str()));
    // Percent-encoded path segments are decoded.
    let r = send(&hub, "GET", &url("main", "sub%20dir/file%20%231.bin"), &[]);
    assert_eq!((r.status, r.body.as_slice()), (200, b"nested".as_slice()));
}

#[test]
fn unknown_entries_are_404_entry_not_found() {
    let (hub, file) = hub();
    for (target, commit) in [
        (url("main", "nope.bin"), Some(file.commit.as_str())),
        (url("refs%2Fpr%2F1", FILE), Some(file.commit.as_str())),
        (url(&"0".repeat(40), FILE), Some(file.commit.as_str())),
        ("/nobody/nothing/resolve/main/x.bin".to_string(), None),
        ("/api/models/x".to_string(), None),
    ] {
        let r = send(&hub, "GET", &target, &[]);
        assert_eq!(r.status, 404, "{target}");
        assert_eq!(r.header("X-Error-Code"), Some("EntryNotFound"));
        assert_eq!(r.body, br#"{"error":"Entry not found"}"#);
        assert_eq!(
            r.header("Content-Length"),
            Some(r.body.len().to_string().as_str())
        );
        assert_eq!(r.header("X-Repo-Commit"), commit, "{target}");
        let h = send(&hub, "HEAD", &target, &[]);
        assert_eq!((h.status, h.body.len()), (404, 0));
    }
}

#[test]
fn not_found_and_server_errors() {
    let (hub, _) = hub();
    hub.set_fault(REPO, FILE, Fault::NotFound);
    let r = send(&hub, "HEAD", &url("main", FILE), &[]);
    assert_eq!(
        (r.status, r.header("X-Error-Code")),
        (404, Some("EntryNotFound"))
    );
    assert_eq!(
        send(&hub, "GET", &url("main", OTHER), &[]).status,
        200,
        "faults are per file"
    );

    hub.set_fault(REPO, FILE, Fault::ServerError);
    let r = send(&hub, "HEAD", &url("main", FILE), &[]);
    assert_eq!(
        (r.status, r.header("Content-Type")),
        (500, Some("text/html"))
    );
    let r = send(&hub, "GET", &url("main", FILE), &[]);
    assert_eq!(r.status, 500);
    assert!(String::from_utf8(r.body)
        .unwrap()
        .contains("Internal Error"));

    hub.set_fault(REPO, FILE, Fault::GetServerError);
    assert_eq!(send(&hub, "HEAD", &url("main", FILE), &[]).status, 200);
    assert_eq!(send(&hub, "GET", &url("main", FILE), &[]).status, 500);

    hub.set_fault(REPO, FILE, Fault::None);
    assert_eq!(
        send(&hub, "GET", &url("main", FILE), &[]).status,
        200,
        "Fault::None clears"
    );
}

#[test]
fn truncated_and_wrong_bodies() {
    let (hub, file) = hub();
    hub.set_fault(REPO, FILE, Fault::TruncatedBody);
    let r = send(&hub, "GET", &url(&file.commit, FILE), &[]);
    assert_eq!((r.status, r.header("Content-Length")), (200, Some("1000")));
    assert_eq!(r.body, content()[..500]);

    hub.set_fault(REPO, FILE, Fault::WrongBody);
    let r = send(&hub, "GET", &url("main", FILE), &[]);
    assert_eq!(
        (r.status, r.header("Content-Length"), r.body.len()),
        (200, Some("1000"), 1000)
    );
    assert_ne!(r.body, content());
    assert_eq!(
        r.body,
        content().iter().map(|b| b ^ 0xFF).collect::<Vec<_>>()
    );
    assert_eq!(
        r.header("X-Linked-Etag"),
        Some(format!("\"{}\"", file.sha256()).as_str())
    );
}

#[test]
fn hostile_etag_and_commit() {
    let (hub, _) = hub();
    hub.set_fault(REPO, FILE, Fault::HostileEtag);
    for method in ["HEAD", "GET"] {
        let r = send(&hub, method, &url("main", FILE), &[]);
        assert_eq!(r.header("ETag"), Some("\"../../../../tmp/pwned\""));
        assert_eq!(r.header("X-Linked-Etag"), Some("\"../../../../tmp/pwned\""));
    }
    hub.set_fault(REPO, FILE, Fault::HostileCommit);
    let r = send(&hub, "HEAD", &url("main", FILE), &[]);
    assert_eq!(r.header("X-Repo-Commit"), Some("../../x"));
}

#[test]
fn stall_headers_delays_head_and_get() {
    let (hub, _) = hub();
    hub.set_fault(REPO, FILE, Fault::StallHeaders(STALL));
    for method in ["HEAD", "GET"] {
        let t = Instant::now();
        let r = send(&hub, method, &url("main", FILE), &[]);
        assert!(
            t.elapsed() >= STALL,
            "{method} answered after {:?}",
            t.elapsed()
        );
        assert_eq!(r.status, 200);
    }
}

#[test]
fn stall_body_pauses_after_the_first_quarter() {
    let (hub, _) = hub();
    hub.set_fault(REPO, FILE, Fault::StallBody(STALL));
    let mut s = TcpStream::connect(addr(&hub)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    s.write_all(&request_bytes("GET", &url("main", FILE), &[]))
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    // Read the headers and the first quarter, then time the rest.
    let quarter_at = loop {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "closed early");
        got.extend_from_slice(&buf[..n]);
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            if got.len() >= end + 4 + 250 {
                break Instant::now();
            }
        }
    };
    s.read_to_end(&mut got).unwrap();
    assert!(
        quarter_at.elapsed() >= Duration::from_millis(200),
        "rest came after {:?}",
        quarter_at.elapsed()
    );
    let r = parse(&got);
    assert_eq!((r.status, r.body), (200, content()));
}

#[test]
fn relative_redirect_then_normal_answer() {
    let (hub, file) = hub();
    hub.set_fault(REPO, FILE, Fault::RelativeRedirect);
    for revision in ["main", file.commit.as_str()] {
        let r = send(&hub, "HEAD", &url(revision, FILE), &[]);
        assert_eq!(r.status, 307);
        let location = r.header("Location").unwrap().to_string();
        assert_eq!(location, format!("{}?redirected=1", url(revision, FILE)));
        assert!(
            location.starts_with('/') && !location.starts_with("//"),
            "relative: {location}"
        );
        assert_eq!(
            r.header("X-Linked-Etag"),
            Some(format!("\"{}\"", file.sha256()).as_str())
        );
        assert_eq!(r.header("X-Linked-Size"), Some("1000"));
        assert_eq!(r.header("X-Repo-Commit"), Some(file.commit.as_str()));
        assert_eq!(send(&hub, "GET", &url(revision, FILE), &[]).status, 307);
        let h = send(&hub, "HEAD", &location, &[]);
        assert_eq!((h.status, h.header("ETag").is_some()), (200, true));
        let g = send(&hub, "GET", &location, &[]);
        assert_eq!((g.status, g.body), (200, content()));
    }
}

#[test]
fn slow_bodies_overlap_across_clients() {
    let (hub, _) = hub();
    hub.set_fault(
        REPO,
        FILE,
        Fault::SlowBody {
            chunk: 200,
            every: Duration::from_millis(80),
        },
    );
    let addr = addr(&hub);
    let start = Instant::now();
    let clients: Vec<_> = (0..2)
        .map(|_| {
            thread::spawn(move || {
                let mut s = TcpStream::connect(addr).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
                s.write_all(&request_bytes("GET", &url("main", FILE), &[]))
                    .unwrap();
                let mut got = vec![0u8; 1];
                s.read_exact(&mut got).unwrap();
                let first_byte = start.elapsed();
                s.read_to_end(&mut got).unwrap();
                (first_byte, start.elapsed(), got)
            })
        })
        .collect();
    let results: Vec<_> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    for (_, done, got) in &results {
        assert!(
            *done >= Duration::from_millis(320),
            "5 chunks, 4 pauses: {done:?}"
        );
        assert_eq!(parse(got).body, content());
    }
    let last_first_byte = results.iter().map(|r| r.0).max().unwrap();
    let first_done = results.iter().map(|r| r.1).min().unwrap();
    assert!(
        last_first_byte < first_done,
        "the two downloads did not overlap"
    );
}

#[test]
fn request_log_records_methods_paths_and_headers() {
    let (hub, _) = hub();
    send(
        &hub,
        "HEAD",
        &url("main", FILE),
        &[("Authorization", "Bearer hf_test")],
    );
    send(&hub, "GET", &url("main", FILE), &[]);
    send(&hub, "GET", &url("main", "missing.bin"), &[]);
    let log = hub.requests();
    let seen: Vec<_> = log
        .iter()
        .map(|r| (r.method.as_str(), r.path.as_str()))
        .collect();
    let expected = [
        ("HEAD", url("main", FILE)),
        ("GET", url("main", FILE)),
        ("GET", url("main", "missing.bin")),
    ];
    assert_eq!(
        seen,
        expected
            .iter()
            .map(|(m, p)| (*m, p.as_str()))
            .collect::<Vec<_>>()
    );
    assert!(log[0]
        .headers
        .contains(&("authorization".to_string(), "Bearer hf_test".to_string())));
    assert!(log[0]
        .headers
        .iter()
        .all(|(n, _)| *n == n.to_ascii_lowercase()));
    assert!(!log[1].headers.iter().any(|(n, _)| n == "authorization"));
    assert_eq!(hub.count("HEAD", FILE), 1);
    assert_eq!(hub.count("GET", "/resolve/"), 2);
    assert_eq!(hub.count("GET", FILE), 1);
    hub.reset_log();
    assert!(hub.requests().is_empty());
    assert_eq!(hub.count("GET", ""), 0);
}

#[test]
fn malformed_requests_are_closed_without_an_answer() {
    let (hub, _) = hub();
    assert!(raw(addr(&hub), b"NONSENSE\r\n\r\n").is_empty());
    assert!(raw(addr(&hub), b"GET no-slash HTTP/1.1\r\n\r\n").is_empty());
    assert!(raw(addr(&hub), b"GET / HTTP/1.1\r\nno colon here\r\n\r\n").is_empty());
    drop(TcpStream::connect(addr(&hub)).unwrap()); // connect and hang up
    assert!(hub.requests().is_empty());
    assert_eq!(
        send(&hub, "GET", &url("main", FILE), &[]).status,
        200,
        "still serving"
    );
    assert_eq!(send(&hub, "POST", &url("main", FILE), &[]).status, 405);
}

#[test]
fn dropping_the_hub_stops_it() {
    let (hub, _) = hub();
    let addr = addr(&hub);
    assert_eq!(send(&hub, "HEAD", &url("main", FILE), &[]).status, 200);
    let t = Instant::now();
    drop(hub);
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "drop took {:?}",
        t.elapsed()
    );
    match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
        Err(_) => {} // refused: the listener is gone
        Ok(mut s) => {
            s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
            let _ = s.write_all(&request_bytes("HEAD", &url("main", FILE), &[]));
            let mut buf = [0u8; 16];
            assert!(
                !matches!(s.read(&mut buf), Ok(n) if n > 0),
                "a dropped hub still answers"
            );
        }
    }
}
