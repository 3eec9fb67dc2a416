//! Hostile inputs to `embed` and `similar`: file names with tabs, newlines and bytes that are not
//! UTF-8, symbolic-link loops, FIFOs and sockets named like images, and indexes that are FIFOs,
//! gigabytes of nothing, or name a FIFO as their weights. Generated here on a tiny random model.
#![cfg(unix)]
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod embed_support;

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use embed_support::{embed, image, run, run_within, stderr, temp_dir, weights, zoo};
use resnet_zoo::index::EmbeddingIndex;

fn embed_to(w: &Path, out: &Path, inputs: &[&Path]) -> std::process::Output {
    run_within(
        {
            let mut c = embed(w);
            c.arg("--out").arg(out).args(inputs);
            c
        },
        Duration::from_secs(120),
    )
}

fn mkfifo(path: &Path) {
    let ok = Command::new("mkfifo").arg(path).status().unwrap();
    assert!(ok.success(), "mkfifo {}", path.display());
}

#[test]
fn failure_report_escapes_tabs_newlines_and_backslashes() {
    let dir = temp_dir("report");
    let w = weights(&dir);
    let root = dir.join("in");
    image(&root.join("good.png"), 1);
    std::fs::create_dir_all(&root).unwrap();
    for name in ["tab\there.jpg", "new\nline.jpg", "back\\slash.jpg"] {
        std::fs::write(root.join(name), b"not an image").unwrap();
    }
    let out = dir.join("emb.safetensors");
    let o = embed_to(&w, &out, &[&root]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let report = std::fs::read_to_string(dir.join("emb.safetensors.failures.tsv")).unwrap();
    let lines: Vec<&str> = report.lines().collect();
    assert_eq!(lines.len(), 3, "{report:?}");
    let r = root.display();
    for (line, name) in lines
        .iter()
        .zip(["back\\\\slash.jpg", "new\\nline.jpg", "tab\\there.jpg"])
    {
        let (path, error) = line.split_once('\t').unwrap();
        assert_eq!(path, format!("{r}/{name}"));
        assert!(
            !error.contains('\t') && error.contains("cannot decode image"),
            "{error}"
        );
    }
    // The index keeps the real names.
    let index = EmbeddingIndex::read(&out).unwrap();
    assert!(index
        .failed
        .iter()
        .any(|f| f.path == root.join("new\nline.jpg")));
}

#[test]
fn file_names_that_are_not_utf8_embed_that_very_file() {
    let dir = temp_dir("bytes");
    let w = weights(&dir);
    let root = dir.join("in");
    let latin1 = root.join(OsString::from_vec(b"caf\xe9.png".to_vec()));
    image(&latin1, 10);
    // The name a lossy conversion would give, holding another picture, and a copy of the first.
    image(&root.join("caf\u{fffd}.png"), 200);
    image(&root.join("copy.png"), 10);
    let out = dir.join("emb.safetensors");
    let o = embed_to(&w, &out, &[&root]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let index = EmbeddingIndex::read(&out).unwrap();
    let row = |p: &Path| index.row(index.paths.iter().position(|q| q == p).unwrap());
    assert_eq!(index.len(), 3);
    assert_eq!(row(&latin1), row(&root.join("copy.png")));
    assert_ne!(row(&latin1), row(&root.join("caf\u{fffd}.png")));

    // Given directly, and as a query of `similar`, the same file; printed escaped.
    let o = embed_to(&w, &dir.join("one.safetensors"), &[&latin1]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = run({
        let mut c = zoo("similar");
        c.args(["--top-k", "1", "--index"]).arg(&out).arg(&latin1);
        c
    });
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let text = String::from_utf8(o.stdout).unwrap();
    assert!(
        text.starts_with(&format!("{}/caf\\xe9.png\n", root.display())),
        "{text}"
    );
}

#[test]
fn symlink_loops_walk_each_real_folder_once() {
    let dir = temp_dir("links");
    let w = weights(&dir);
    let root = dir.join("in");
    image(&root.join("a/one.png"), 1);
    image(&root.join("b/two.png"), 2);
    image(&root.join("c/three.png"), 3);
    std::os::unix::fs::symlink("..", root.join("a/up")).unwrap(); // to an ancestor
    std::os::unix::fs::symlink("../c", root.join("b/to_c")).unwrap(); // b -> c -> b
    std::os::unix::fs::symlink("../b", root.join("c/to_b")).unwrap();
    std::os::unix::fs::symlink("a/one.png", root.join("z_file_link.png")).unwrap();
    let out = dir.join("emb.safetensors");
    let o = embed_to(&w, &out, &[&root]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let index = EmbeddingIndex::read(&out).unwrap();
    let expect = [
        "a/one.png",
        "b/to_c/three.png",
        "b/two.png",
        "z_file_link.png",
    ];
    assert_eq!(index.paths, expect.map(|p| root.join(p)));
}

#[test]
fn fifos_and_sockets_named_like_images_are_listed_not_opened() {
    let dir = temp_dir("fifo");
    let w = weights(&dir);
    let root = dir.join("in");
    image(&root.join("good.png"), 1);
    mkfifo(&root.join("pipe.jpg"));
    let _socket = std::os::unix::net::UnixListener::bind(root.join("sock.png")).unwrap();
    let out = dir.join("emb.safetensors");
    let o = embed_to(&w, &out, &[&root]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let index = EmbeddingIndex::read(&out).unwrap();
    assert_eq!(index.paths, [root.join("good.png")]);
    let report = std::fs::read_to_string(dir.join("emb.safetensors.failures.tsv")).unwrap();
    assert!(
        report.contains("pipe.jpg is a FIFO (named pipe), not a regular file; skipped")
            && report.contains("sock.png is a socket, not a regular file"),
        "{report}"
    );
}

#[test]
fn similar_reads_only_bounded_regular_files() {
    let dir = temp_dir("similar");
    let w = weights(&dir);
    let query = dir.join("q.png");
    image(&query, 5);
    let similar = |index: &Path| {
        run_within(
            {
                let mut c = zoo("similar");
                c.arg("--index").arg(index).arg(&query);
                c
            },
            Duration::from_secs(60),
        )
    };
    let refused = |index: &Path, want: &str| {
        let o = similar(index);
        assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
        assert!(stderr(&o).contains(want), "{}", stderr(&o));
    };
    // The index is a FIFO; the index is 3 GB of nothing (sparse).
    let fifo = dir.join("fifo.safetensors");
    mkfifo(&fifo);
    refused(
        &fifo,
        "fifo.safetensors is a FIFO (named pipe), not an embeddings file",
    );
    let huge = dir.join("huge.safetensors");
    std::fs::File::create(&huge)
        .unwrap()
        .set_len(3 << 30)
        .unwrap();
    refused(
        &huge,
        "huge.safetensors is not an embeddings file written by resnet-zoo embed",
    );

    // A real index whose metadata names a FIFO as its weights, or rows of another width.
    let good = dir.join("emb.safetensors");
    let o = embed_to(&w, &good, &[&query]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let mut index = EmbeddingIndex::read(&good).unwrap();
    let weights_fifo = dir.join("weights-fifo.safetensors");
    mkfifo(&weights_fifo);
    let mut named = index.clone();
    named
        .meta
        .insert("weights".into(), weights_fifo.display().to_string());
    let bad = dir.join("bad.safetensors");
    named.write(&bad).unwrap();
    refused(&bad, "names the weights");
    refused(
        &bad,
        "weights-fifo.safetensors, which is a FIFO (named pipe)",
    );
    // ... or 5 GB of weights (sparse): refused from its size by the weights loader.
    let big = dir.join("big.safetensors");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(5 << 30)
        .unwrap();
    named
        .meta
        .insert("weights".into(), big.display().to_string());
    named.write(&bad).unwrap();
    refused(&bad, "big.safetensors is 5368709120 bytes, over the limit");
    std::fs::remove_file(&big).unwrap();
    index.embeddings.truncate(8);
    index.dim = 8;
    index.write(&bad).unwrap();
    refused(&bad, "holds rows 8 wide, but its model");
    std::fs::remove_file(&huge).unwrap();
}
