//! Image files that cost more than their size suggests: a progressive JPEG with thousands of empty
//! scans (every scan is another pass over the coefficients) and a file of gigabytes named `.jpg`.
//! Both are generated here and must be refused by name, quickly, before the decoder or a read.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use resnet_zoo::transforms::{decode_rgb, load_rgb, ImageError, ImageLimits};

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("resnet-zoo-limits-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The segments of a JPEG as byte ranges, a scan together with its entropy-coded data.
fn segments(b: &[u8]) -> Vec<(u8, std::ops::Range<usize>)> {
    let mut out = Vec::new();
    let mut pos = 2;
    while pos + 2 <= b.len() {
        assert_eq!(b[pos], 0xff, "marker expected at {pos}");
        let marker = b[pos + 1];
        if marker == 0xd9 {
            out.push((marker, pos..pos + 2));
            break;
        }
        let mut end = pos + 2 + usize::from(u16::from_be_bytes([b[pos + 2], b[pos + 3]]));
        if marker == 0xda {
            while b[end] != 0xff || matches!(b[end + 1], 0x00 | 0xd0..=0xd7) {
                end += 1;
            }
        }
        out.push((marker, pos..end));
        pos = end;
    }
    out
}

/// A valid progressive JPEG (the test photo) with its last scan repeated `extra` more times:
/// a scan that refines nothing new, as many times as an attacker likes.
fn many_scans(extra: usize) -> Vec<u8> {
    let photo = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/images/rocket_tall.jpg");
    let jpeg = std::fs::read(photo).unwrap();
    let segs = segments(&jpeg);
    let last = segs
        .iter()
        .rev()
        .find(|(m, _)| *m == 0xda)
        .unwrap()
        .1
        .clone();
    let mut out = jpeg[..2].to_vec();
    for (marker, range) in &segs {
        if *marker == 0xd9 {
            for _ in 0..extra {
                out.extend_from_slice(&jpeg[last.clone()]);
            }
        }
        out.extend_from_slice(&jpeg[range.clone()]);
    }
    out
}

#[test]
fn jpeg_with_thousands_of_scans_is_refused_before_decoding() {
    let limits = ImageLimits::default();
    // The photo itself (10 scans) and a few repeated scans still decode.
    decode_rgb(&many_scans(0), Path::new("ok.jpg"), &limits).unwrap();
    decode_rgb(&many_scans(20), Path::new("ok.jpg"), &limits).unwrap();

    let bytes = many_scans(20_000);
    let started = Instant::now();
    let err = decode_rgb(&bytes, Path::new("scans.jpg"), &limits).unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(matches!(err, ImageError::TooManyScans { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("scans.jpg") && msg.contains("ImageLimits::max_scans"),
        "{msg}"
    );

    // From a file, through the CLI's decoder entry point, the same error.
    let dir = temp_dir("scans");
    let path = dir.join("scans.jpg");
    std::fs::write(&path, &bytes).unwrap();
    let err = load_rgb(&path, &limits).unwrap_err();
    assert!(matches!(err, ImageError::TooManyScans { .. }), "{err}");
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
}

#[test]
fn huge_file_named_jpg_is_refused_from_its_size() {
    let dir = temp_dir("huge");
    let path = dir.join("huge.jpg");
    // 3 GB, sparse: no disk is used, but reading it would allocate 3 GB.
    let file = std::fs::File::create(&path).unwrap();
    file.set_len(3 << 30).unwrap();
    drop(file);
    let started = Instant::now();
    let err = load_rgb(&path, &ImageLimits::default()).unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert!(matches!(err, ImageError::FileTooLarge { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("huge.jpg")
            && msg.contains("3221225472 bytes")
            && msg.contains("max_file_bytes"),
        "{msg}"
    );
    std::fs::remove_file(&path).unwrap();
}
