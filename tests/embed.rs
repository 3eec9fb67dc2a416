//! `resnet-zoo embed`, `embed-merge` and `similar`, end to end on the real test photos with the
//! resnet18 fixture weights: row order, the report of bad images, shard + merge = one machine,
//! resume after a real kill = uninterrupted run, nearest neighbours.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use candle_core::{DType, Device};
use resnet_zoo::hub::{self, LoadOptions};
use resnet_zoo::index::EmbeddingIndex;
use resnet_zoo::transforms::Preprocess;
use resnet_zoo::ResNetConfig;

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("resnet-zoo-embed-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn photos() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/images");
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("jpg" | "png")))
        .collect();
    files.sort();
    files
}

/// A collection: the photos `copies` times over two nested folders, a corrupt JPEG in the middle,
/// and a text file that folders do not pick up.
fn corpus(name: &str, copies: usize) -> PathBuf {
    let root = temp_dir(name).join("corpus");
    for c in 0..copies {
        let dir = root
            .join(format!("set{c}"))
            .join(if c % 2 == 0 { "a" } else { "b/c" });
        std::fs::create_dir_all(&dir).unwrap();
        for p in photos() {
            std::fs::copy(&p, dir.join(p.file_name().unwrap())).unwrap();
        }
    }
    std::fs::write(
        root.join("set0/a/broken.jpg"),
        b"\xff\xd8\xff\xe0 not really a jpeg",
    )
    .unwrap();
    std::fs::write(root.join("set0/notes.txt"), b"not an image").unwrap();
    root
}

fn embed(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_resnet-zoo"));
    cmd.arg("embed")
        .args(["--arch", "resnet18", "--weights"])
        .arg(common::fixture("resnet18.safetensors"))
        .args(args);
    cmd
}

fn run(mut cmd: Command) -> Output {
    cmd.output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Every image under `root` in the order `embed` promises: sorted paths, recursively.
fn expected_order(root: &Path) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for p in entries {
            if p.is_dir() {
                walk(&p, out);
            } else if matches!(p.extension().and_then(|e| e.to_str()), Some("jpg" | "png")) {
                out.push(p);
            }
        }
    }
    let mut out = Vec::new();
    walk(root, &mut out);
    out
}

#[test]
fn rows_follow_paths_and_bad_images_are_reported() {
    if common::skip_without_fixtures() {
        return;
    }
    let root = corpus("rows", 1);
    let out = root.parent().unwrap().join("emb.safetensors");
    let o = run({
        let mut c = embed(&["--batch-size", "3", "--out"]);
        c.arg(&out).arg(&root);
        c
    });
    // One corrupt image: exit 1 with a summary, every other image embedded.
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let total = expected_order(&root).len();
    assert!(
        stderr(&o).contains(&format!("1 of {total} images could not be embedded")),
        "{}",
        stderr(&o)
    );
    let index = EmbeddingIndex::read(&out).unwrap();
    let broken = root.join("set0/a/broken.jpg");
    let order: Vec<PathBuf> = expected_order(&root)
        .into_iter()
        .filter(|p| *p != broken)
        .collect();
    assert_eq!(index.paths, order);
    assert_eq!((index.len(), index.dim), (total - 1, 512));
    assert_eq!(index.failed.len(), 1);
    assert_eq!(index.failed[0].path, broken);
    let report =
        std::fs::read_to_string(root.parent().unwrap().join("emb.safetensors.failures.tsv"))
            .unwrap();
    assert!(
        report.starts_with(&format!("{}\t", broken.display())),
        "{report}"
    );
    assert!(!root
        .parent()
        .unwrap()
        .join("emb.safetensors.partial")
        .exists());

    // Each row is the library's pooled embedding of its own image.
    let cfg = ResNetConfig::resnet18().with_num_classes(None);
    let skip = LoadOptions {
        skip_classifier: true,
        ..LoadOptions::default()
    };
    let path = common::fixture("resnet18.safetensors");
    let model = hub::load_safetensors_with(&path, &cfg, DType::F32, &Device::Cpu, skip).unwrap();
    for (i, p) in index.paths.iter().enumerate() {
        let x = Preprocess::imagenet_v1().load(p, &Device::Cpu).unwrap();
        let want = model.forward_embedding(&x.unsqueeze(0).unwrap()).unwrap();
        let got = candle_core::Tensor::new(index.row(i), &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let err = common::rel_err(&got, &want);
        assert!(
            err <= 1e-5,
            "row {i} ({}): relative error {err:.2e}",
            p.display()
        );
    }

    // --normalize gives unit rows in the same order.
    let normed = out.with_file_name("normed.safetensors");
    let o = run({
        let mut c = embed(&["--normalize", "--out"]);
        c.arg(&normed).arg(&root);
        c
    });
    assert_eq!(o.status.code(), Some(1));
    let n = EmbeddingIndex::read(&normed).unwrap();
    assert_eq!(n.paths, index.paths);
    for i in 0..n.len() {
        let norm: f32 = n.row(i).iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "row {i}: norm {norm}");
    }
}

#[test]
fn shards_merge_into_the_single_run_file() {
    if common::skip_without_fixtures() {
        return;
    }
    let root = corpus("shards", 2);
    let dir = root.parent().unwrap().to_path_buf();
    let single = dir.join("single.safetensors");
    let o = run({
        let mut c = embed(&["--chunk-size", "3", "--out"]);
        c.arg(&single).arg(&root);
        c
    });
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let mut shards = Vec::new();
    for i in 0..3 {
        let path = dir.join(format!("shard{i}.safetensors"));
        let o = run({
            let mut c = embed(&["--chunk-size", "3", "--shard", &format!("{i}/3"), "--out"]);
            c.arg(&path).arg(&root);
            c
        });
        assert!(
            o.status.code() == Some(0) || o.status.code() == Some(1),
            "{}",
            stderr(&o)
        );
        shards.push(path);
    }
    let merged = dir.join("merged.safetensors");
    let merge = |files: &[&PathBuf]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_resnet-zoo"));
        c.arg("embed-merge").args(files).arg("--out").arg(&merged);
        c.output().unwrap()
    };
    let o = merge(&[&shards[2], &shards[0], &shards[1]]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o)); // the broken image, reported again
    assert_eq!(
        std::fs::read(&merged).unwrap(),
        std::fs::read(&single).unwrap()
    );
    assert_eq!(
        std::fs::read(dir.join("merged.safetensors.failures.tsv")).unwrap(),
        std::fs::read(dir.join("single.safetensors.failures.tsv")).unwrap()
    );
    // A missing shard is a usage error naming it.
    let o = merge(&[&shards[0], &shards[2]]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("shard 1/3 is missing"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn killed_run_resumes_to_the_same_file() {
    if common::skip_without_fixtures() {
        return;
    }
    let root = corpus("resume", 4);
    let dir = root.parent().unwrap().to_path_buf();
    let reference = dir.join("reference.safetensors");
    let o = run({
        let mut c = embed(&["--chunk-size", "2", "--out"]);
        c.arg(&reference).arg(&root);
        c
    });
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));

    let out = dir.join("killed.safetensors");
    let partial = dir.join("killed.safetensors.partial");
    let mut child = embed(&["--chunk-size", "2", "--out"])
        .arg(&out)
        .arg(&root)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let chunks = || {
        std::fs::read_dir(&partial)
            .map(|d| {
                d.filter(|e| {
                    e.as_ref()
                        .unwrap()
                        .file_name()
                        .to_string_lossy()
                        .starts_with("chunk-")
                })
                .count()
            })
            .unwrap_or(0)
    };
    let t = Instant::now();
    while chunks() < 2 && t.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let done = chunks();
    assert!(done >= 2, "no progress before the kill");
    assert!(
        !out.exists(),
        "the run finished before it could be killed ({done} chunks)"
    );

    let o = run({
        let mut c = embed(&["--chunk-size", "2", "--out"]);
        c.arg(&out).arg(&root);
        c
    });
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("resuming:"), "{}", stderr(&o));
    assert_eq!(
        std::fs::read(&out).unwrap(),
        std::fs::read(&reference).unwrap()
    );
    assert!(!partial.exists());

    // A leftover run with other options is refused, not mixed in, and a folder resnet-zoo did not
    // make (no marker naming a run) is refused too; neither is touched.
    std::fs::create_dir_all(&partial).unwrap();
    for (marker, want) in [
        (
            r#"{"format": "resnet-zoo-embed-partial/1", "run": "0123456789abcdef"}"#,
            "unfinished run with other inputs",
        ),
        ("{}", "was not made by resnet-zoo embed"),
    ] {
        std::fs::write(partial.join("run.json"), marker).unwrap();
        let o = run({
            let mut c = embed(&["--chunk-size", "2", "--out"]);
            c.arg(&out).arg(&root);
            c
        });
        assert_eq!(o.status.code(), Some(2));
        assert!(stderr(&o).contains(want), "{}", stderr(&o));
        assert_eq!(
            std::fs::read_to_string(partial.join("run.json")).unwrap(),
            marker
        );
    }
}

#[test]
fn similar_finds_the_query_itself() {
    if common::skip_without_fixtures() {
        return;
    }
    let root = corpus("similar", 1);
    let dir = root.parent().unwrap().to_path_buf();
    // The index records the weights' path; the file then moves, and --weights says where to.
    let weights = dir.join("weights.safetensors");
    std::fs::copy(common::fixture("resnet18.safetensors"), &weights).unwrap();
    let index = dir.join("index.safetensors");
    let o = Command::new(env!("CARGO_BIN_EXE_resnet-zoo"))
        .args(["embed", "--arch", "resnet18", "--normalize", "--weights"])
        .arg(&weights)
        .arg("--out")
        .arg(&index)
        .arg(&root)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let moved = dir.join("moved.safetensors");
    std::fs::rename(&weights, &moved).unwrap();
    let query = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/images/rocket_tall.jpg");
    let similar = |more: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_resnet-zoo"))
            .args(["similar", "--top-k", "3", "--index"])
            .arg(&index)
            .args(more)
            .arg(&query)
            .output()
            .unwrap()
    };
    let o = similar(&[]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("weights.safetensors"), "{}", stderr(&o));
    let o = similar(&["--weights", moved.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8(o.stdout).unwrap();
    let first = text.lines().nth(1).unwrap();
    let (score, path) = first.trim().split_once("  ").unwrap();
    assert!(path.ends_with("rocket_tall.jpg"), "{text}");
    assert!(score.parse::<f32>().unwrap() > 0.9999, "{text}");
    assert_eq!(text.lines().count(), 4, "{text}");
    // --json: the same answer as data.
    let o = similar(&["--weights", moved.to_str().unwrap(), "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let matches = v[0]["matches"].as_array().unwrap();
    assert_eq!(matches.len(), 3);
    assert!(matches[0]["path"]
        .as_str()
        .unwrap()
        .ends_with("rocket_tall.jpg"));
    assert!(matches[0]["score"].as_f64().unwrap() > 0.9999, "{v}");
    assert!(v[0]["query"].as_str().unwrap().ends_with("rocket_tall.jpg"));
}
