//! Slow Hub servers (`support/fake_hub.rs`, `Fault::Trickle`): a body that trickles in, each byte
//! well within the per-read timeout, is given up on by the minimum transfer rate or by the deadline
//! proportional to its size, with an error naming the file and the knob, and leaves nothing in the
//! cache: no blob, no snapshot, no half-written temporary.
#![cfg(feature = "download")]
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

#[path = "support/fake_hub.rs"]
mod fake_hub;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fake_hub::{FakeHub, Fault, HubFile};
use resnet_zoo::hub::{fetch, HubError, HubOptions};

const REPO: &str = "timm/resnet18.tv_in1k";
const FILE: &str = "model.safetensors";

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("resnet-zoo-slow-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Every file under `dir`, relative (lock files aside).
fn files(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(base, &p, out);
            } else if !p.to_string_lossy().ends_with(".lock") {
                out.push(p.strip_prefix(base).unwrap().display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out
}

/// Fetches a 100 KB file from a server trickling one byte every `every`, with `opts` edited by
/// `edit`; returns the error and how long it took, after checking the cache holds no file.
fn trickled(name: &str, every: Duration, edit: fn(&mut HubOptions)) -> (HubError, Duration) {
    let cache = temp_dir(name);
    let content: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let hub = FakeHub::start(vec![HubFile::new(REPO, FILE, content)]);
    hub.set_fault(REPO, FILE, Fault::Trickle(every));
    let mut opts = HubOptions {
        endpoint: hub.endpoint(),
        cache_dir: cache.clone(),
        token: None,
        offline: false,
        timeout: Duration::from_secs(1),
        retries: 0,
        min_rate: resnet_zoo::hub::download::DEFAULT_MIN_RATE,
        deadline: None,
    };
    edit(&mut opts);
    let start = Instant::now();
    let err = fetch(&opts, REPO, "main", FILE, &mut |_| {}).unwrap_err();
    let took = start.elapsed();
    assert!(
        files(&cache).is_empty(),
        "{name}: the cache holds {:?}",
        files(&cache)
    );
    (err, took)
}

#[test]
fn trickling_server_is_below_the_minimum_rate() {
    // 100 bytes/s, every byte 10 ms after the last: never a per-read timeout, but at 100 KB it would
    // take 17 minutes. The rate over the first 1 s window is far below 16 KiB/s.
    let (err, took) = trickled("rate", Duration::from_millis(10), |_| {});
    assert!(took < Duration::from_secs(10), "took {took:?}: {err}");
    assert!(matches!(err, HubError::TooSlow { .. }), "{err:?}");
    let msg = err.to_string();
    for want in [
        REPO,
        FILE,
        "below the minimum of 16384 bytes/s",
        "RESNET_ZOO_HUB_MIN_RATE",
    ] {
        assert!(msg.contains(want), "{want:?} not in {msg}");
    }
}

#[test]
fn trickling_server_misses_the_deadline() {
    // Rate check off, an explicit 2 s deadline: the deadline ends it.
    let (err, took) = trickled("deadline", Duration::from_millis(10), |o| {
        o.min_rate = 0;
        o.deadline = Some(Duration::from_secs(2));
    });
    assert!(took < Duration::from_secs(10), "took {took:?}: {err}");
    assert!(matches!(err, HubError::DeadlineExceeded { .. }), "{err:?}");
    let msg = err.to_string();
    for want in [REPO, "not finished after 2 s", "RESNET_ZOO_HUB_DEADLINE"] {
        assert!(msg.contains(want), "{want:?} not in {msg}");
    }
}

#[test]
fn environment_configures_the_limits() {
    // One test owns these variables (tests of this file run in parallel, in one process).
    std::env::set_var("RESNET_ZOO_HUB_MIN_RATE", "1000");
    std::env::set_var("RESNET_ZOO_HUB_DEADLINE", "7");
    let opts = HubOptions::from_env();
    std::env::remove_var("RESNET_ZOO_HUB_MIN_RATE");
    std::env::remove_var("RESNET_ZOO_HUB_DEADLINE");
    assert_eq!(opts.min_rate, 1000);
    assert_eq!(opts.deadline, Some(Duration::from_secs(7)));
    let defaults = HubOptions::from_env();
    assert_eq!(defaults.min_rate, 16384);
    assert_eq!(defaults.deadline, None);
}
