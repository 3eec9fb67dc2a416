//! Hostile `.pth` checkpoints, generated here (`support/torch_pth.rs`): each class is refused with a
//! named error that names the file, in bounded time and memory, from the library and from
//! `resnet-zoo convert` (exit 1, never a panic), and shared storages are read once.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

#[path = "support/torch_pth.rs"]
mod torch_pth;

use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::{DType, Device};
use resnet_zoo::hub::{self, LoadError};
use resnet_zoo::ResNetConfig;
use torch_pth::{f32_storage, pth, state_dict, Entry, Pickle};

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("resnet-zoo-pth-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Converts `bytes` saved as `name`: the library error (checked by `check`), then the CLI, which
/// must exit 1 naming the file and every `want`.
fn refused(dir: &Path, name: &str, bytes: &[u8], want: &[&str], check: fn(&LoadError) -> bool) {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    let out = dir.join(format!("{name}.safetensors"));
    let (p, o) = (path.clone(), out.clone());
    let err = common::within(20, name, move || hub::convert_pth(&p, &o, None))
        .err()
        .unwrap_or_else(|| panic!("{name} converted"));
    assert!(check(&err), "{name}: unexpected variant {err:?}");
    let msg = err.to_string();
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    for w in want {
        assert!(msg.contains(w), "{name}: {w:?} not in {msg}");
    }
    let cli = Command::new(env!("CARGO_BIN_EXE_resnet-zoo"))
        .arg("convert")
        .args([&path, &out])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&cli.stderr);
    assert_eq!(cli.status.code(), Some(1), "{name}: {stderr}");
    assert!(
        stderr.contains(&path.display().to_string()) && !stderr.contains("panicked"),
        "{stderr}"
    );
    for w in want {
        assert!(stderr.contains(w), "{name}: {w:?} not in {stderr}");
    }
    assert!(!out.exists(), "{name}: an output was written");
}

fn one(name: &str, shape: &[i64], stride: &[i64]) -> Vec<u8> {
    let entry = Entry {
        name,
        key: "0",
        numel: 4,
        offset: 0,
        shape,
        stride,
    };
    pth(&state_dict(&[entry]), &[("0", &f32_storage(4))])
}

#[test]
fn duplicate_keys_are_refused_by_name() {
    let dir = temp_dir("dup");
    let e = |name| Entry {
        name,
        key: "0",
        numel: 4,
        offset: 0,
        shape: &[4],
        stride: &[1],
    };
    let bytes = pth(
        &state_dict(&[e("fc.bias"), e("conv1.weight"), e("fc.bias")]),
        &[("0", &f32_storage(4))],
    );
    refused(&dir, "dup.pth", &bytes, &["more than once: fc.bias"], |e| {
        matches!(e, LoadError::PthDuplicateKey { .. })
    });
}

#[test]
fn huge_views_are_refused_before_allocating() {
    let dir = temp_dir("huge");
    let too_large = |e: &LoadError| matches!(e, LoadError::PthTensorTooLarge { .. });
    // Stride-0 (broadcast) views of one stored element: 2^61 elements (8 EiB), 2^62 (the byte
    // count wraps to 0), 2^40 (4 TiB); a 2-d one whose element product overflows; a shape whose
    // product fits but whose strides walk outside the storage.
    for (name, shape, stride) in [
        ("p61.pth", vec![1i64 << 61], vec![0i64]),
        ("p62.pth", vec![1 << 62], vec![0]),
        ("p40.pth", vec![1 << 40], vec![0]),
        ("p2d.pth", vec![1 << 32, 1 << 32], vec![0, 0]),
        ("p3d.pth", vec![1 << 20, 1 << 20, 1 << 4], vec![0, 0, 0]),
    ] {
        refused(
            &dir,
            name,
            &one("w", &shape, &stride),
            &["tensor 'w'", "more than the"],
            too_large,
        );
    }
    // Within what the archive holds but outside the storage: a plain refusal.
    refused(
        &dir,
        "outside.pth",
        &one("w", &[2, 2], &[8, 1]),
        &["outside"],
        |e| matches!(e, LoadError::Pth { .. }),
    );
}

fn pickle_error(e: &LoadError) -> bool {
    matches!(e, LoadError::PthPickle { .. })
}

#[test]
fn declared_lengths_beyond_the_input_are_refused() {
    let dir = temp_dir("lengths");
    for (name, op) in [
        ("unicode.pth", b"X\xff\xff\xff\xff".to_vec()), // BINUNICODE, 4 GiB
        ("bytes.pth", b"B\xff\xff\xff\xff".to_vec()),   // BINBYTES, 4 GiB
        (
            "unicode8.pth",
            [&[0x8d][..], &(1u64 << 62).to_le_bytes()].concat(),
        ),
        (
            "bytes8.pth",
            [&[0x8e][..], &u64::MAX.to_le_bytes()].concat(),
        ),
        ("long4.pth", [&[0x8b][..], &u32::MAX.to_le_bytes()].concat()),
        (
            "frame.pth",
            [&[0x95][..], &(1u64 << 40).to_le_bytes()].concat(),
        ),
    ] {
        let mut p = Pickle::new();
        p.raw(&op).raw(b"only a few bytes follow");
        refused(
            &dir,
            name,
            &pth(&p.finish(), &[]),
            &["bytes is declared, but only"],
            pickle_error,
        );
    }
}

#[test]
fn memo_blowups_stop_at_the_object_limit() {
    let dir = temp_dir("memo");
    // Each memo entry is a tuple of the previous entry twice: 2^200 objects once expanded.
    let mut p = Pickle::new();
    p.raw(b"]q\x00");
    for i in 1u32..=200 {
        let prev = (i - 1).to_le_bytes();
        p.raw(b"j").raw(&prev).raw(b"j").raw(&prev).raw(b"\x86");
        p.raw(b"r").raw(&i.to_le_bytes());
    }
    refused(
        &dir,
        "tuples.pth",
        &pth(&p.finish(), &[]),
        &["more than 2097152 objects"],
        pickle_error,
    );
    // The same through lists grown by APPENDS of the previous entry, and dicts by SETITEMS.
    let mut p = Pickle::new();
    p.raw(b"]q\x00");
    for i in 1u32..=200 {
        let prev = (i - 1).to_le_bytes();
        p.raw(b"](j").raw(&prev).raw(b"j").raw(&prev).raw(b"e");
        p.raw(b"r").raw(&i.to_le_bytes());
    }
    refused(
        &dir,
        "lists.pth",
        &pth(&p.finish(), &[]),
        &["objects"],
        pickle_error,
    );
    // Copy-on-write of a big shared list, over and over: counted too.
    let mut p = Pickle::new();
    p.raw(b"](");
    for _ in 0..100_000 {
        p.raw(b"N");
    }
    p.raw(b"eq\x00");
    for _ in 0..100 {
        p.raw(b"h\x00Na0");
    }
    refused(
        &dir,
        "copies.pth",
        &pth(&p.finish(), &[]),
        &["objects"],
        pickle_error,
    );
}

#[test]
fn deep_nesting_is_refused_without_overflowing_the_stack() {
    let dir = temp_dir("deep");
    let n = 1_000_000;
    let mut lists = Pickle::new();
    lists.raw(&vec![b']'; n]).raw(&vec![b'a'; n - 1]);
    let mut tuples = Pickle::new();
    tuples.raw(&vec![b'('; n]).raw(&vec![b't'; n]);
    // f(f(f(...f(()))...)): the callable pushed a million times from the memo, then called.
    let mut calls = Pickle::new();
    calls.global("builtins", "f").raw(b"q\x000");
    calls
        .raw(&b"h\x00".repeat(n))
        .raw(b")")
        .raw(&b"\x85R".repeat(n));
    for (name, mut p) in [
        ("lists.pth", lists),
        ("tuples.pth", tuples),
        ("calls.pth", calls),
    ] {
        refused(
            &dir,
            name,
            &pth(&p.finish(), &[]),
            &["more than 100 deep"],
            pickle_error,
        );
    }
}

#[test]
fn shared_storage_is_read_once() {
    // 20,000 tensors, each a 1024-element slice of one 80 MiB storage (a model saved as views of
    // one flat buffer). Read once: 80 MiB. Read once per tensor, as before: 1.6 TB of reading
    // and CRC checks, hours, which the 60 s hang guard turns into a failure (no speed assertion:
    // the margin is a factor of thousands).
    let dir = temp_dir("shared");
    let (n, len) = (20_000usize, 1024usize);
    let storage = f32_storage(n * len);
    let names: Vec<String> = (0..n).map(|i| format!("t{i}")).collect();
    let offsets: Vec<i64> = (0..n).map(|i| (i * len) as i64).collect();
    let entries: Vec<Entry> = (0..n)
        .map(|i| Entry {
            name: &names[i],
            key: "flat",
            numel: (n * len) as i64,
            offset: offsets[i],
            shape: &[32, 32],
            stride: &[32, 1],
        })
        .collect();
    let bytes = pth(&state_dict(&entries), &[("flat", &storage)]);
    let path = dir.join("flat.pth");
    std::fs::write(&path, &bytes).unwrap();
    let tensors = common::within(60, "flat.pth", move || hub::read_pth(&path, None).unwrap());
    assert_eq!(tensors.len(), n);
    for (i, t) in tensors.iter().enumerate() {
        assert_eq!(t.name, names[i]);
        assert_eq!(t.shape, vec![32, 32]);
        assert_eq!(t.data, storage[i * len * 4..(i + 1) * len * 4]);
    }
}

#[test]
fn a_pth_given_as_weights_names_convert() {
    let dir = temp_dir("weights");
    let path = dir.join("resnet20.pth");
    std::fs::write(&path, one("w", &[4], &[1])).unwrap();
    let err = hub::load_safetensors(&path, &ResNetConfig::resnet20(), DType::F32, &Device::Cpu)
        .err()
        .unwrap();
    assert!(
        matches!(err, LoadError::PyTorchCheckpoint { .. }),
        "{err:?}"
    );
    let msg = err.to_string();
    for want in ["PyTorch .pth checkpoint", "pickle", "convert_pth"] {
        assert!(msg.contains(want), "{want:?} not in {msg}");
    }
    // The library speaks library; the command (with the path) is the CLI's line.
    assert!(!msg.contains("resnet-zoo convert"), "{msg}");
    let image = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/images/coffee_small.jpg");
    let out = Command::new(env!("CARGO_BIN_EXE_resnet-zoo"))
        .args(["classify", "--arch", "resnet20", "--weights"])
        .arg(&path)
        .arg(image)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "(on the command line: resnet-zoo convert {} OUT.safetensors)",
            path.display()
        )),
        "{stderr}"
    );
    // The converted file loads where the .pth did not (the hint is right): a tiny round trip.
    let converted = dir.join("w.safetensors");
    assert_eq!(hub::convert_pth(&path, &converted, None).unwrap(), 1);
}
