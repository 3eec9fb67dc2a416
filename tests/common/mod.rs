//! Shared helpers for the integration tests: fixture paths and error metrics.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use candle_core::{DType, Device, Tensor};

pub mod cli;

/// The folder the parity harness writes to (`tests/parity/make_fixtures.py`), or
/// `$RESNET_ZOO_FIXTURES`. Missing fixtures fail the test with the command that makes them.
pub fn fixtures_dir() -> PathBuf {
    let dir = fixtures_path();
    assert!(
        dir.join("STAMP").exists(),
        "PyTorch fixtures missing in {}: run `make test` (or `make fixtures`); without \
         RESNET_ZOO_REQUIRE_FIXTURES, a test that needs them starts with \
         `if common::skip_without_fixtures() {{ return; }}` and is skipped",
        dir.display()
    );
    dir
}

fn fixtures_path() -> PathBuf {
    std::env::var_os("RESNET_ZOO_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures"))
}

/// Tests skipped by [`skip_without_fixtures`] in this test binary.
static SKIPPED: AtomicUsize = AtomicUsize::new(0);

/// The first line of a test that needs the PyTorch fixtures:
/// `if common::skip_without_fixtures() { return; }`.
///
/// Plain `cargo test` on a fresh clone has no fixtures (they take the 5.5 GB Python stack that
/// `make test` installs): such a test then returns at once, and the test binary prints one line
/// when it exits, after its `test result:` line, saying how many tests were skipped and that
/// `make test` runs them. `make test` (and `scripts/gpu-check.sh`) set
/// `RESNET_ZOO_REQUIRE_FIXTURES=1`: there a missing fixture fails the test, so it cannot pass
/// without checking anything.
///
/// Why at exit: libtest captures what a passing test prints with `eprintln!` and drops it, so a
/// line printed from the test itself is never seen; and one line per skipped test would be a page.
/// The line is written to the process's stderr from an `atexit` handler, which runs after
/// libtest's summary whether the binary exits through `main` or `process::exit`, outside any
/// capture (cargo passes a test binary's stderr through). Without `atexit` (not Unix) the line is
/// written straight to stderr, which libtest does not capture either, at the first skip.
pub fn skip_without_fixtures() -> bool {
    if fixtures_path().join("STAMP").exists()
        || std::env::var_os("RESNET_ZOO_REQUIRE_FIXTURES").is_some_and(|v| !v.is_empty())
    {
        return false;
    }
    if SKIPPED.fetch_add(1, Ordering::SeqCst) == 0 {
        #[cfg(unix)]
        // SAFETY: `report_skipped` is an `extern "C" fn()` that does not unwind; registering it
        // has no other precondition.
        unsafe {
            libc::atexit(report_skipped);
        }
        #[cfg(not(unix))]
        let _ = writeln!(
            std::io::stderr(),
            "note: tests that need the PyTorch fixtures were skipped (missing in {}); `make test` runs them",
            fixtures_path().display()
        );
    }
    true
}

#[cfg(unix)]
extern "C" fn report_skipped() {
    let n = SKIPPED.load(Ordering::SeqCst);
    let (tests, need) = if n == 1 {
        ("test", "it needs")
    } else {
        ("tests", "they need")
    };
    // Written to the stderr handle directly: print macros could panic in an exit handler.
    let _ = writeln!(
        std::io::stderr(),
        "note: {n} {tests} reported ok above did not run: {need} the PyTorch fixtures, missing in {}; `make test` generates them and runs every test",
        fixtures_path().display()
    );
}

pub fn fixture(name: &str) -> PathBuf {
    fixtures_dir().join(name)
}

/// Every tensor of a safetensors file, on the CPU.
pub fn load_tensors(name: &str) -> HashMap<String, Tensor> {
    let path = fixture(name);
    candle_core::safetensors::load(&path, &Device::Cpu)
        .unwrap_or_else(|e| panic!("cannot read fixture {}: {e}", path.display()))
}

/// The device the model tests run on: `$RESNET_ZOO_TEST_DEVICE` (`cpu` when unset; `cuda`,
/// `cuda:N` or `metal` in a GPU build, as `scripts/gpu-check.sh` runs them).
pub fn device() -> Device {
    match std::env::var("RESNET_ZOO_TEST_DEVICE") {
        Ok(name) => {
            let (kind, ordinal) = name.split_once(':').unwrap_or((&name, "0"));
            let ordinal: usize = ordinal
                .parse()
                .unwrap_or_else(|e| panic!("RESNET_ZOO_TEST_DEVICE={name}: ordinal: {e}"));
            match kind {
                "cpu" => Ok(Device::Cpu),
                "cuda" => Device::new_cuda(ordinal),
                "metal" => Device::new_metal(ordinal),
                other => panic!("RESNET_ZOO_TEST_DEVICE={name}: unknown device {other}"),
            }
            .unwrap_or_else(|e| panic!("RESNET_ZOO_TEST_DEVICE={name}: {e}"))
        }
        Err(_) => Device::Cpu,
    }
}

/// `max|t|`, computed in f64 on the CPU.
fn max_abs(t: &Tensor) -> f64 {
    let t = t
        .to_device(&Device::Cpu)
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .abs()
        .unwrap();
    t.flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f64>()
        .unwrap()
}

/// `max|ours - reference|`, computed in f64.
pub fn max_abs_diff(ours: &Tensor, reference: &Tensor) -> f64 {
    assert_eq!(ours.dims(), reference.dims(), "shape mismatch");
    let cpu_f64 = |t: &Tensor| {
        t.to_device(&Device::Cpu)
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap()
    };
    let (a, b) = (cpu_f64(ours), cpu_f64(reference));
    max_abs(&(a - b).unwrap())
}

/// `max|ours - reference| / max|reference|`, computed in f64.
pub fn rel_err(ours: &Tensor, reference: &Tensor) -> f64 {
    max_abs_diff(ours, reference) / max_abs(reference)
}

/// Indices of the `k` largest values of each row of a `[N, C]` tensor, best first.
pub fn top_k(logits: &Tensor, k: usize) -> Vec<Vec<usize>> {
    let rows = logits
        .to_dtype(DType::F32)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    rows.iter()
        .map(|row| {
            let mut idx: Vec<usize> = (0..row.len()).collect();
            idx.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
            idx.truncate(k);
            idx
        })
        .collect()
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A PNG whose header claims `width` x `height` 8-bit RGB, followed by a few KB of compressed
/// zeros: a decompression bomb (30000x30000 would be 2.7 GB decoded) in under 8 KB.
pub fn png_bomb(width: u32, height: u32) -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut chunk = |kind: &[u8; 4], data: &[u8]| {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let start = out.len();
        out.extend_from_slice(kind);
        out.extend_from_slice(data);
        let crc = crc32(&out[start..]);
        out.extend_from_slice(&crc.to_be_bytes());
    };
    let mut ihdr = width.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    chunk(b"IHDR", &ihdr);
    let mut idat = vec![0x78, 0x9c];
    idat.extend(std::iter::repeat_n(0u8, 4096));
    chunk(b"IDAT", &idat);
    chunk(b"IEND", &[]);
    out
}

/// Runs `f` on a thread and fails the test if it does not return within `secs`: what a hang, an
/// endless read or an unbounded allocation looks like to a test.
pub fn within<T: Send + 'static>(
    secs: u64,
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(std::time::Duration::from_secs(secs))
        .unwrap_or_else(|_| panic!("{what}: panicked, or no answer within {secs} s"))
}
