//! How weights files (and images) are read: a FIFO, `/dev/zero` or another non-regular file is
//! refused before reading (which would block or never end), a file over `MAX_WEIGHTS_BYTES` is
//! refused from its size, and a file rewritten in place while it is read gives one whole file or
//! `ChangedWhileReading`, never a mix of what it held before and after a write that landed during
//! the read. Everything is generated here.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use std::collections::HashMap;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use candle_core::{DType, Device, Tensor};
use resnet_zoo::hub::{self, LoadError};
use resnet_zoo::transforms::{load_rgb, ImageLimits};
use resnet_zoo::{ResNet, ResNetConfig};

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("resnet-zoo-read-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn load(path: &Path) -> Result<ResNet, LoadError> {
    hub::load_safetensors(path, &ResNetConfig::resnet20(), DType::F32, &Device::Cpu)
}

/// `classify --weights path` must exit 1 within 30 s, naming the file and `want`.
fn cli_refuses(path: &Path, want: &str) {
    let image = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/images/coffee_small.jpg");
    let mut child = Command::new(env!("CARGO_BIN_EXE_resnet-zoo"))
        .args(["classify", "--arch", "resnet20", "--weights"])
        .arg(path)
        .arg(image)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            panic!("classify --weights {} hangs", path.display());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&path.display().to_string()) && stderr.contains(want),
        "{want:?} not in {stderr}"
    );
}

#[test]
fn fifos_and_devices_are_refused_without_reading() {
    let dir = temp_dir("fifo");
    let fifo = dir.join("weights.safetensors");
    let status = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(status.success());
    for (path, kind) in [
        (fifo.clone(), "a FIFO"),
        (PathBuf::from("/dev/zero"), "a character device"),
    ] {
        let p = path.clone();
        let err = common::within(10, &path.display().to_string(), move || load(&p).err()).unwrap();
        assert!(
            matches!(err, LoadError::NotRegularFile { .. }),
            "{}: {err:?}",
            path.display()
        );
        let msg = err.to_string();
        assert!(
            msg.contains(kind) && msg.contains("not a regular file"),
            "{msg}"
        );
        cli_refuses(&path, kind);
        // `convert` reads its input the same way.
        let (p, out) = (path.clone(), dir.join("out.safetensors"));
        let err = common::within(10, "convert", move || {
            hub::convert_pth(&p, &out, None).err()
        })
        .unwrap();
        assert!(matches!(err, LoadError::NotRegularFile { .. }), "{err:?}");
        // And images.
        let p = path.clone();
        let err = common::within(10, "image", move || {
            load_rgb(&p, &ImageLimits::default()).err()
        })
        .unwrap();
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );
        let cause = std::error::Error::source(&err).unwrap().to_string();
        assert!(cause.contains(kind), "{cause}");
    }
}

#[test]
fn oversized_files_are_refused_from_their_size() {
    let dir = temp_dir("large");
    let path = dir.join("huge.safetensors");
    // Sparse: no disk space used, but reading it would allocate 5 GiB.
    let f = std::fs::File::create(&path).unwrap();
    f.set_len(5 << 30).unwrap();
    drop(f);
    let start = Instant::now();
    let err = load(&path).err().unwrap();
    assert!(start.elapsed() < Duration::from_secs(2));
    assert!(matches!(err, LoadError::TooLarge { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("5368709120 bytes") && msg.contains(&hub::MAX_WEIGHTS_BYTES.to_string()),
        "{msg}"
    );
    cli_refuses(&path, "over the limit");
    let out = dir.join("out.safetensors");
    let err = hub::convert_pth(&path, &out, None).err().unwrap();
    assert!(matches!(err, LoadError::TooLarge { .. }), "{err:?}");
}

/// The bytes of a valid resnet20 file whose every value is `v`.
fn weights(v: f32) -> Vec<u8> {
    let dir = temp_dir(&format!("ser{v}"));
    let tensors: HashMap<String, Tensor> = ResNet::tensor_specs(&ResNetConfig::resnet20())
        .into_iter()
        .map(|s| {
            let t = (Tensor::ones(s.shape.as_slice(), DType::F32, &Device::Cpu).unwrap()
                * f64::from(v))
            .unwrap();
            (s.name, t)
        })
        .collect();
    let path = dir.join("w.safetensors");
    candle_core::safetensors::save(&tensors, &path).unwrap();
    std::fs::read(path).unwrap()
}

/// Rewrites `path` in place with `a`, then `b`, then `a`... in 4 KiB writes until `stop` is set (as
/// another process saving over the file would), counting the writes done in `writes`.
fn rewriter(
    path: &Path,
    a: &[u8],
    b: &[u8],
    stop: &Arc<AtomicBool>,
    writes: &Arc<AtomicU64>,
) -> std::thread::JoinHandle<()> {
    let (path, stop, a, b) = (path.to_path_buf(), Arc::clone(stop), a.to_vec(), b.to_vec());
    let writes = Arc::clone(writes);
    std::thread::spawn(move || {
        let mut f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        for content in [&a, &b].into_iter().cycle() {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            f.seek(SeekFrom::Start(0)).unwrap();
            for piece in content.chunks(4 << 10) {
                f.write_all(piece).unwrap();
                writes.fetch_add(1, Ordering::SeqCst);
            }
        }
    })
}

#[test]
fn files_rewritten_while_read_give_old_new_or_an_error() {
    let dir = temp_dir("rewrite");
    // 32 MiB, so that a read takes long enough for the writer to land inside it.
    let (a, b) = (vec![0xaa_u8; 32 << 20], vec![0x55_u8; 32 << 20]);
    let path = dir.join("w.safetensors");
    std::fs::write(&path, &a).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let writes = Arc::new(AtomicU64::new(0));
    let writer = rewriter(&path, &a, &b, &stop, &writes);
    let (mut old_or_new, mut refused, mut paused) = (0, 0, 0);
    for _ in 0..40 {
        let before = writes.load(Ordering::SeqCst);
        let read = hub::read_weights_file(&path);
        let during = writes.load(Ordering::SeqCst) - before;
        match read {
            Ok(bytes) if bytes == a || bytes == b => old_or_new += 1,
            // The file itself was half rewritten and the writer paused (descheduled) throughout
            // the read: those are the file's bytes at that moment, which only a writer that
            // renames a finished file into place can avoid. A write landing during the read must
            // be detected.
            Ok(_) => {
                assert!(
                    during < 3,
                    "a mix of the old and new file was read while {during} writes landed"
                );
                paused += 1;
            }
            Err(LoadError::ChangedWhileReading { path: p, what }) => {
                assert_eq!(p, path);
                assert!(!what.is_empty());
                refused += 1;
            }
            Err(e) => panic!("{e:?}"),
        }
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    eprintln!("{old_or_new} reads gave one whole file, {refused} were refused as changing, {paused} read a half-rewritten file while its writer was paused");
    // Once the writer is done, the file reads normally.
    let bytes = hub::read_weights_file(&path).unwrap();
    assert!(bytes == a || bytes == b);

    // A model load takes the same path: a whole file or the error, and the error has its hint.
    let (a, b) = (weights(1.0), weights(2.0));
    std::fs::write(&path, &a).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = rewriter(&path, &a, &b, &stop, &writes);
    for _ in 0..10 {
        match load(&path) {
            Ok(_) => {}
            Err(e @ LoadError::ChangedWhileReading { .. }) => {
                assert!(e.to_string().contains("rename it into place"), "{e}");
            }
            Err(e) => panic!("{e:?}"),
        }
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
}
