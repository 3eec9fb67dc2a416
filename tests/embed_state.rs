//! `embed`'s on-disk state under attack: chunks moved or altered in `OUT.partial/`, a folder
//! resnet-zoo did not make, input lists that hash alike, and shards of another width or size.
//! Every case is generated here on a tiny random model.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod embed_support;

use std::path::{Path, PathBuf};

use embed_support::{embed, files_under, image, run, stderr, temp_dir, weights, zoo};
use resnet_zoo::index::EmbeddingIndex;

/// `n` images in `dir/images`.
fn images(dir: &Path, n: u8) -> PathBuf {
    let root = dir.join("images");
    for i in 0..n {
        image(&root.join(format!("{i:02}.png")), i);
    }
    root
}

/// Embeds `root` into `out` with chunks of 2, and leaves every chunk in `out.partial/`: `out`
/// is a folder, so the final write fails after the last chunk.
fn leave_partial(w: &Path, root: &Path, out: &Path) -> PathBuf {
    std::fs::create_dir_all(out).unwrap();
    let o = run({
        let mut c = embed(w);
        c.args(["--chunk-size", "2", "--out"]).arg(out).arg(root);
        c
    });
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    std::fs::remove_dir(out).unwrap();
    let partial = PathBuf::from(format!("{}.partial", out.display()));
    assert!(partial.join("chunk-00000002.safetensors").exists());
    partial
}

fn resume(w: &Path, root: &Path, out: &Path) -> std::process::Output {
    run({
        let mut c = embed(w);
        c.args(["--chunk-size", "2", "--out"]).arg(out).arg(root);
        c
    })
}

#[test]
fn resume_refuses_chunks_from_another_position_or_width() {
    let dir = temp_dir("chunks");
    let w = weights(&dir);
    let root = images(&dir, 6);
    let out = dir.join("emb.safetensors");

    // Chunks 1 and 2 swapped: each is refused by name, and nothing in OUT.partial is deleted.
    let partial = leave_partial(&w, &root, &out);
    let (c1, c2) = (
        partial.join("chunk-00000001.safetensors"),
        partial.join("chunk-00000002.safetensors"),
    );
    let tmp = partial.join("swap");
    std::fs::rename(&c1, &tmp).unwrap();
    std::fs::rename(&c2, &c1).unwrap();
    std::fs::rename(&tmp, &c2).unwrap();
    let before = files_under(&partial);
    let o = resume(&w, &root, &out);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("chunk-00000001.safetensors is not chunk 1 of this run")
            && stderr(&o).contains("nothing was deleted"),
        "{}",
        stderr(&o)
    );
    assert!(!out.exists());
    assert_eq!(files_under(&partial), before);

    // A chunk of the right run and position whose rows are narrower (another model).
    std::fs::remove_dir_all(&partial).unwrap();
    let partial = leave_partial(&w, &root, &out);
    let c1 = partial.join("chunk-00000001.safetensors");
    let mut chunk = EmbeddingIndex::read(&c1).unwrap();
    chunk.embeddings = chunk
        .embeddings
        .chunks(chunk.dim)
        .flat_map(|r| r[..32].to_vec())
        .collect();
    chunk.dim = 32;
    chunk.write(&c1).unwrap();
    let o = resume(&w, &root, &out);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("its rows are 32 wide, the model's are 64"),
        "{}",
        stderr(&o)
    );
    assert!(!out.exists() && c1.exists());

    // A chunk that lost a row (and its path) is not the inputs of its chunk.
    let mut chunk = EmbeddingIndex::read(&partial.join("chunk-00000000.safetensors")).unwrap();
    chunk.embeddings.truncate(chunk.dim);
    chunk.paths.truncate(1);
    chunk
        .write(&partial.join("chunk-00000001.safetensors"))
        .unwrap();
    let o = resume(&w, &root, &out);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("is not chunk 1 of this run"),
        "{}",
        stderr(&o)
    );

    // Put right, the run resumes and finishes, and removes what it wrote.
    std::fs::remove_file(partial.join("chunk-00000001.safetensors")).unwrap();
    let o = resume(&w, &root, &out);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stderr(&o).contains("resuming: 4 of 6"), "{}", stderr(&o));
    assert_eq!(EmbeddingIndex::read(&out).unwrap().len(), 6);
    assert!(!partial.exists());
}

#[test]
fn partial_folder_not_made_by_embed_is_refused_untouched() {
    let dir = temp_dir("foreign");
    let w = weights(&dir);
    let root = images(&dir, 2);
    let out = dir.join("emb.safetensors");
    let partial = dir.join("emb.safetensors.partial");
    std::fs::create_dir_all(&partial).unwrap();
    std::fs::write(partial.join("precious.txt"), b"the user's own file").unwrap();
    let o = resume(&w, &root, &out);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("exists but was not made by resnet-zoo embed")
            && stderr(&o).contains("nothing in it was used or deleted"),
        "{}",
        stderr(&o)
    );
    assert_eq!(files_under(&partial), [PathBuf::from("precious.txt")]);

    // A file where the folder would be is refused as well.
    std::fs::remove_dir_all(&partial).unwrap();
    std::fs::write(&partial, b"not a folder").unwrap();
    let o = resume(&w, &root, &out);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("is a regular file, not a folder"),
        "{}",
        stderr(&o)
    );
    assert_eq!(std::fs::read(&partial).unwrap(), b"not a folder");
}

#[test]
fn input_lists_joined_alike_with_newlines_are_different_runs() {
    let dir = temp_dir("identity");
    let w = weights(&dir);
    let root = dir.join("in");
    // Joined with newlines, both lists read "d/x.png\nd/y.png\ne.png\ne/z.png\n".
    let a = ["d/x.png", "d/y.png", "e.png\ne/z.png"];
    let b = ["d/x.png\nd/y.png", "e.png", "e/z.png"];
    for (i, p) in a.iter().chain(&b).enumerate() {
        image(&root.join(p), i as u8);
    }
    let hash = |list: &[&str], name: &str| {
        let out = dir.join(name);
        let o = run({
            let mut c = embed(&w);
            c.current_dir(&root).arg("--out").arg(&out).args(list);
            c
        });
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        let index = EmbeddingIndex::read(&out).unwrap();
        assert_eq!(
            index.paths,
            list.iter().map(PathBuf::from).collect::<Vec<_>>()
        );
        index.meta["inputs_sha256"].clone()
    };
    assert_ne!(hash(&a, "a.safetensors"), hash(&b, "b.safetensors"));
}

#[test]
fn merge_refuses_shards_of_another_width_or_size() {
    let dir = temp_dir("merge");
    let w = weights(&dir);
    let root = images(&dir, 6);
    let shard = |i: usize| {
        let out = dir.join(format!("shard{i}.safetensors"));
        let o = run({
            let mut c = embed(&w);
            c.args(["--chunk-size", "2", "--shard", &format!("{i}/2"), "--out"])
                .arg(&out)
                .arg(&root);
            c
        });
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        out
    };
    let (s0, s1) = (shard(0), shard(1));
    let merged = dir.join("merged.safetensors");
    let merge = |files: [&Path; 2]| {
        run({
            let mut c = zoo("embed-merge");
            c.args(files).arg("--out").arg(&merged);
            c
        })
    };
    let good = EmbeddingIndex::read(&s1).unwrap();

    // Narrower rows, same metadata.
    let mut narrow = good.clone();
    narrow.embeddings = good
        .embeddings
        .chunks(64)
        .flat_map(|r| r[..16].to_vec())
        .collect();
    narrow.dim = 16;
    narrow.write(&s1).unwrap();
    let o = merge([&s0, &s1]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("shard1.safetensors (shard 1/2) has rows 16 wide, but")
            && stderr(&o).contains("shard0.safetensors has rows 64 wide"),
        "{}",
        stderr(&o)
    );
    assert!(!merged.exists());

    // A row short.
    let mut short = good.clone();
    short.embeddings.truncate(64 * (good.len() - 1));
    short.paths.pop();
    short.write(&s1).unwrap();
    let o = merge([&s0, &s1]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("holds 3 inputs (3 rows, 0 failures), but its run gives shard 1/2 4"),
        "{}",
        stderr(&o)
    );
    assert!(!merged.exists());

    good.write(&s1).unwrap();
    let o = merge([&s1, &s0]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(EmbeddingIndex::read(&merged).unwrap().len(), 6);
}
