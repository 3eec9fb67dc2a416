//! Downloads against a Hub stand-in (`support/fake_hub.rs`) on 127.0.0.1: the happy path, the
//! cache, offline mode, and every fault a real server or network can produce. Nothing here reaches
//! the internet.
#![cfg(feature = "download")]
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

#[path = "support/fake_hub.rs"]
mod fake_hub;

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fake_hub::{FakeHub, Fault, HubFile};
use resnet_zoo::hub::{fetch, HubError, HubOptions, Progress};

const REPO: &str = "timm/resnet18.tv_in1k";
const FILE: &str = "model.safetensors";

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("resnet-zoo-hub-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Some bytes with a recognisable pattern (not a real checkpoint: fetch does not parse).
fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

fn options(hub: &FakeHub, cache: &Path) -> HubOptions {
    HubOptions {
        endpoint: hub.endpoint(),
        cache_dir: cache.to_path_buf(),
        token: None,
        offline: false,
        timeout: Duration::from_secs(2),
        retries: 0,
        min_rate: resnet_zoo::hub::download::DEFAULT_MIN_RATE,
        deadline: None,
    }
}

fn quiet() -> impl FnMut(Progress) {
    |_| {}
}

/// Every regular file and symlink under `dir`, relative, sorted.
fn tree(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                walk(base, &p, out);
            } else {
                out.push(p.strip_prefix(base).unwrap().display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

fn blobs(cache: &Path) -> Vec<String> {
    tree(cache)
        .into_iter()
        .filter(|p| p.contains("/blobs/"))
        .collect()
}

fn start(content: Vec<u8>) -> (FakeHub, HubFile) {
    let file = HubFile::new(REPO, FILE, content);
    (FakeHub::start(vec![file.clone()]), file)
}

#[test]
fn first_download_then_cache_hit() {
    let cache = temp_dir("first");
    let (hub, file) = start(payload(300_000));
    let mut events = Vec::new();
    let path = fetch(&options(&hub, &cache), REPO, "main", FILE, &mut |p| {
        events.push(p)
    })
    .unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), *file.content);
    assert!(path.starts_with(&cache));
    assert_eq!(hub.count("GET", "/resolve/"), 1);
    assert_eq!(events.first(), Some(&Progress::Start { total: 300_000 }));
    assert_eq!(events.last(), Some(&Progress::Finish));
    // Python-compatible layout: blob named by sha256, snapshot link, ref.
    let listing = tree(&cache);
    assert!(
        listing.contains(&format!(
            "models--timm--resnet18.tv_in1k/blobs/{}",
            file.sha256()
        )),
        "{listing:?}"
    );
    assert!(
        listing.contains(&format!(
            "models--timm--resnet18.tv_in1k/snapshots/{}/{FILE}",
            file.commit
        )),
        "{listing:?}"
    );
    assert!(
        listing.contains(&"models--timm--resnet18.tv_in1k/refs/main".to_string()),
        "{listing:?}"
    );

    // Second call: metadata only, no GET.
    hub.reset_log();
    let again = fetch(&options(&hub, &cache), REPO, "main", FILE, &mut quiet()).unwrap();
    assert_eq!(again, path);
    assert_eq!(hub.count("GET", "/resolve/"), 0);

    // Pinned commit in cache: no request at all.
    hub.reset_log();
    fetch(
        &options(&hub, &cache),
        REPO,
        &file.commit,
        FILE,
        &mut quiet(),
    )
    .unwrap();
    assert!(hub.requests().is_empty());

    // Server gone: the cached copy is used.
    let opts = options(&hub, &cache);
    drop(hub);
    assert_eq!(
        fetch(&opts, REPO, "main", FILE, &mut quiet()).unwrap(),
        path
    );
}

#[test]
fn offline_mode_uses_only_the_cache() {
    let cache = temp_dir("offline");
    let (hub, _) = start(payload(1000));
    let mut opts = options(&hub, &cache);
    opts.offline = true;
    let err = fetch(&opts, REPO, "main", FILE, &mut quiet()).unwrap_err();
    assert!(matches!(err, HubError::NotCached { .. }), "{err}");
    assert!(err.to_string().contains("offline"), "{err}");
    assert!(hub.requests().is_empty());
    opts.offline = false;
    let path = fetch(&opts, REPO, "main", FILE, &mut quiet()).unwrap();
    opts.offline = true;
    hub.reset_log();
    assert_eq!(
        fetch(&opts, REPO, "main", FILE, &mut quiet()).unwrap(),
        path
    );
    assert!(hub.requests().is_empty());
}

/// Runs one fetch against `fault` and returns the error; the cache must hold no blob afterwards and
/// no temporary file.
fn failing_fetch(name: &str, fault: Fault, timeout: Duration) -> (HubError, Duration) {
    let cache = temp_dir(name);
    let (hub, _) = start(payload(200_000));
    hub.set_fault(REPO, FILE, fault);
    let mut opts = options(&hub, &cache);
    opts.timeout = timeout;
    let t0 = Instant::now();
    let err = fetch(&opts, REPO, "main", FILE, &mut quiet()).unwrap_err();
    let elapsed = t0.elapsed();
    assert!(
        blobs(&cache).is_empty(),
        "{name}: cache holds {:?}",
        tree(&cache)
    );
    assert!(
        !tree(&cache).iter().any(|p| p.contains("snapshots/")),
        "{name}: {:?}",
        tree(&cache)
    );
    (err, elapsed)
}

#[test]
fn http_errors_are_reported_and_cache_nothing() {
    let (err, _) = failing_fetch("404", Fault::NotFound, Duration::from_secs(2));
    let msg = err.to_string();
    assert!(
        msg.contains(REPO) && msg.contains(FILE) && msg.contains("check the model name"),
        "{msg}"
    );
    let cause = std::error::Error::source(&err)
        .map(|c| c.to_string())
        .unwrap_or_default();
    assert!(cause.contains("Entry not found"), "{cause}");

    for (name, fault) in [
        ("500", Fault::ServerError),
        ("get500", Fault::GetServerError),
    ] {
        let (err, _) = failing_fetch(name, fault, Duration::from_secs(2));
        assert!(matches!(err, HubError::Http { .. }), "{name}: {err}");
        let cause = std::error::Error::source(&err)
            .map(|c| c.to_string())
            .unwrap_or_default();
        assert!(cause.contains("500"), "{name}: {cause}");
    }
}

#[test]
fn bad_bodies_are_rejected() {
    let (err, _) = failing_fetch("trunc", Fault::TruncatedBody, Duration::from_secs(2));
    let msg = err.to_string();
    assert!(
        matches!(err, HubError::Integrity { .. } | HubError::Http { .. }),
        "truncated: {msg}"
    );
    let (err, _) = failing_fetch("wrong", Fault::WrongBody, Duration::from_secs(2));
    assert!(matches!(err, HubError::Integrity { .. }), "{err}");
    assert!(err.to_string().contains("sha256"), "{err}");
}

#[test]
fn hostile_headers_never_become_paths() {
    let outside = std::env::temp_dir().join("pwned");
    let _ = std::fs::remove_file(&outside);
    for (name, fault, needle) in [
        ("etag", Fault::HostileEtag, "ETag"),
        ("commit", Fault::HostileCommit, "X-Repo-Commit"),
    ] {
        let (err, _) = failing_fetch(name, fault, Duration::from_secs(2));
        assert!(matches!(err, HubError::Integrity { .. }), "{name}: {err}");
        assert!(err.to_string().contains(needle), "{name}: {err}");
    }
    assert!(!outside.exists());
}

#[test]
fn stalled_server_times_out_in_seconds() {
    // A stalled answer is given up after the timeout, as the message says, not twice that.
    let (err, elapsed) = failing_fetch(
        "stall-h",
        Fault::StallHeaders(Duration::from_secs(8)),
        Duration::from_secs(2),
    );
    assert!(
        elapsed < Duration::from_millis(3500),
        "took {elapsed:?}: {err}"
    );
    assert!(err.to_string().contains("no data for 2 s"), "{err}");
    let (err, elapsed) = failing_fetch(
        "stall-b",
        Fault::StallBody(Duration::from_secs(8)),
        Duration::from_secs(1),
    );
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}: {err}");
    assert!(
        matches!(err, HubError::Timeout { .. } | HubError::Http { .. }),
        "{err}"
    );
}

#[test]
fn relative_redirect_is_followed() {
    let cache = temp_dir("redirect");
    let (hub, file) = start(payload(5000));
    hub.set_fault(REPO, FILE, Fault::RelativeRedirect);
    let path = fetch(&options(&hub, &cache), REPO, "main", FILE, &mut quiet()).unwrap();
    assert_eq!(std::fs::read(path).unwrap(), *file.content);
    assert!(hub.count("GET", "redirected=1") >= 1);
}

#[test]
fn concurrent_downloads_of_one_file_make_one_get() {
    let cache = temp_dir("concurrent");
    let (hub, file) = start(payload(400_000));
    hub.set_fault(
        REPO,
        FILE,
        Fault::SlowBody {
            chunk: 50_000,
            every: Duration::from_millis(40),
        },
    );
    let opts = Arc::new(options(&hub, &cache));
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let opts = Arc::clone(&opts);
            std::thread::spawn(move || fetch(&opts, REPO, "main", FILE, &mut quiet()))
        })
        .collect();
    let paths: Vec<PathBuf> = threads
        .into_iter()
        .map(|t| t.join().unwrap().unwrap())
        .collect();
    assert!(paths.iter().all(|p| p == &paths[0]));
    assert_eq!(std::fs::read(&paths[0]).unwrap(), *file.content);
    assert_eq!(hub.count("GET", "/resolve/"), 1, "{:?}", hub.requests());
}

#[test]
fn cache_hit_writes_nothing_so_read_only_caches_work() {
    let cache = temp_dir("readonly");
    let (hub, _) = start(payload(1000));
    let opts = options(&hub, &cache);
    let path = fetch(&opts, REPO, "main", FILE, &mut quiet()).unwrap();
    let stamp = |p: &Path| std::fs::symlink_metadata(p).unwrap().modified().unwrap();
    let before: Vec<_> = tree(&cache)
        .into_iter()
        .map(|p| (stamp(&cache.join(&p)), p))
        .collect();
    set_readonly(&cache, true);
    let again = fetch(&opts, REPO, "main", FILE, &mut quiet());
    set_readonly(&cache, false);
    assert_eq!(again.unwrap(), path);
    let after: Vec<_> = tree(&cache)
        .into_iter()
        .map(|p| (stamp(&cache.join(&p)), p))
        .collect();
    // Root ignores permission bits, so also prove that nothing was written.
    assert_eq!(before, after);
}

fn set_readonly(dir: &Path, ro: bool) {
    use std::os::unix::fs::PermissionsExt;
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        if entry.file_type().unwrap().is_dir() {
            set_readonly(&entry.path(), ro);
        }
    }
    let mode = if ro { 0o555 } else { 0o755 };
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// The CLI against the stand-in: `classify --model resnet50.tv_in1k` downloads the fixture weights
/// published under that repo id and gives torchvision's top-5 on a real photo.
#[test]
fn classify_model_end_to_end_matches_torchvision() {
    if common::skip_without_fixtures() {
        return;
    }
    let weights = std::fs::read(common::fixture("resnet50.safetensors")).unwrap();
    let hub = FakeHub::start(vec![HubFile::new("timm/resnet50.tv_in1k", FILE, weights)]);
    let cache = temp_dir("e2e");
    let image = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/images/chelsea.jpg");
    let out = Command::new(env!("CARGO_BIN_EXE_resnet-zoo"))
        .args(["classify", "--model", "resnet50.tv_in1k", "--json"])
        .arg(&image)
        .env("HF_ENDPOINT", hub.endpoint())
        .env("HF_HUB_CACHE", &cache)
        .env_remove("HF_HUB_OFFLINE")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ours: Vec<usize> = json[0]["top"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["index"].as_u64().unwrap() as usize)
        .collect();
    let reference = common::load_tensors("images/chelsea.safetensors");
    let torch = common::top_k(&reference["logits_v1"].unsqueeze(0).unwrap(), 5);
    assert_eq!(ours, torch[0]);
    assert_eq!(hub.count("GET", "/resolve/"), 1);

    // Offline, from the cache, same answer.
    let out = Command::new(env!("CARGO_BIN_EXE_resnet-zoo"))
        .args([
            "classify",
            "--model",
            "resnet50.tv_in1k",
            "--json",
            "--offline",
        ])
        .arg(&image)
        .env("HF_ENDPOINT", "http://127.0.0.1:9")
        .env("HF_HUB_CACHE", &cache)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let again: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(again, json);
}

/// A download killed mid-transfer (the process, for real) leaves no file that a later run would
/// take for the weights, and a retry completes and cleans up.
#[test]
fn killed_download_then_retry() {
    let content = payload(3_000_000);
    let (hub, file) = start(content);
    hub.set_fault(
        REPO,
        FILE,
        Fault::SlowBody {
            chunk: 100_000,
            every: Duration::from_millis(100),
        },
    );
    let cache = temp_dir("killed");
    let image = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/images/coffee.png");
    let mut child = Command::new(env!("CARGO_BIN_EXE_resnet-zoo"))
        .args(["classify", "--model", "resnet18.tv_in1k"])
        .arg(&image)
        .env("HF_ENDPOINT", hub.endpoint())
        .env("HF_HUB_CACHE", &cache)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait until part of the file has arrived, then kill the process.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let partial = tree(&cache)
            .into_iter()
            .find(|p| p.ends_with(".incomplete"));
        if let Some(p) = partial {
            if std::fs::metadata(cache.join(&p))
                .map(|m| m.len() > 200_000)
                .unwrap_or(false)
            {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "download never started: {:?}",
            tree(&cache)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        blobs(&cache).iter().all(|p| p.ends_with(".incomplete")),
        "{:?}",
        tree(&cache)
    );
    let mut offline = options(&hub, &cache);
    offline.offline = true;
    assert!(
        fetch(&offline, REPO, "main", FILE, &mut quiet()).is_err(),
        "a partial file was taken as cached"
    );

    hub.set_fault(REPO, FILE, Fault::None);
    let path = fetch(&options(&hub, &cache), REPO, "main", FILE, &mut quiet()).unwrap();
    assert_eq!(std::fs::read(path).unwrap(), *file.content);
    assert_eq!(
        blobs(&cache),
        [format!(
            "models--timm--resnet18.tv_in1k/blobs/{}",
            file.sha256()
        )]
    );
}

/// Every naming scheme through the whole library path (`load_pretrained`: registry row, download,
/// key map, strict load): timm's ResNet-D names (our own), timm's ResNetV2 and BiT names (mapped),
/// served under the real repo ids of the registry's rows. The outputs are the references' logits.
#[test]
fn pretrained_rows_of_every_family_load_through_the_hub() {
    if common::skip_without_fixtures() {
        return;
    }
    use candle_core::{DType, Device, Module};
    let rows = [
        ("resnet50d.a1_in1k", "resnet50d"),
        ("resnetv2_50.a1h_in1k", "resnetv2_50"),
        ("resnetv2_50x1_bit.goog_in21k_ft_in1k", "resnetv2_50x1_bit"),
    ];
    let files = rows
        .iter()
        .map(|(name, fixture)| {
            let bytes = std::fs::read(common::fixture(&format!("{fixture}.safetensors"))).unwrap();
            HubFile::new(&format!("timm/{name}"), FILE, bytes)
        })
        .collect();
    let hub = FakeHub::start(files);
    let cache = temp_dir("families");
    for (name, fixture) in rows {
        let (model, info) = resnet_zoo::hub::load_pretrained(
            name,
            DType::F32,
            &Device::Cpu,
            &options(&hub, &cache),
            &mut quiet(),
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(info.arch, fixture);
        let io = common::load_tensors(&format!("{fixture}.io.safetensors"));
        let logits = model.forward(&io["input_224"]).unwrap();
        let err = common::rel_err(&logits, &io["logits_224"]);
        assert!(err <= 1e-4, "{name}: relative error {err:.2e}");
    }
    assert_eq!(hub.count("GET", "/resolve/"), rows.len());
}
