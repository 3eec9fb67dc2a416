//! `resnet-zoo classify` inputs and outputs: folders walked as `embed` walks them, `-` (an image
//! or a streamed list of paths), `--format text|json|jsonl|csv` written batch by batch, and
//! `--cam` heat maps. Generated here on a tiny random model (no fixtures needed).
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;
mod embed_support;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use embed_support::{image, stderr, temp_dir, weights};
use resnet_zoo::index::EmbeddingIndex;
use serde_json::Value;

/// `resnet-zoo classify --arch resnet20 --weights W ARGS...`, stdin from `stdin` (empty if None).
fn classify(w: &Path, args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_resnet-zoo"));
    cmd.args(["classify", "--arch", "resnet20", "--weights"])
        .arg(w)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut pipe = child.stdin.take().unwrap();
    pipe.write_all(stdin.unwrap_or_default()).unwrap();
    drop(pipe);
    common::within(120, "classify", move || child.wait_with_output().unwrap())
}

fn jsonl(o: &Output) -> Vec<Value> {
    String::from_utf8(o.stdout.clone())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A folder gives the images `embed` finds there, in the same order (sorted, recursive, other
/// files skipped, a link loop walked once); a missing file is one failed image, exit 1.
#[cfg(unix)]
#[test]
fn folders_are_walked_as_embed_walks_them() {
    let dir = temp_dir("classify-walk");
    let w = weights(&dir);
    let root = dir.join("photos");
    for (i, name) in ["b.png", "a/z.png", "a/deep/y.jpg", "c/x.PNG"]
        .iter()
        .enumerate()
    {
        image(&root.join(name), i as u8);
    }
    std::fs::write(root.join("notes.txt"), b"not an image").unwrap();
    std::os::unix::fs::symlink(&root, root.join("a/loop")).unwrap();
    let missing = dir.join("missing.jpg");
    let o = classify(&w, &["--format", "jsonl", s(&root), s(&missing)], None);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let items = jsonl(&o);
    let names: Vec<&str> = items.iter().map(|i| i["image"].as_str().unwrap()).collect();

    let index = dir.join("emb.safetensors");
    let mut embed = embed_support::embed(&w);
    embed.arg("--out").arg(&index).arg(&root);
    let e = embed_support::run(embed);
    assert!(e.status.success(), "{}", stderr(&e));
    let embedded: Vec<PathBuf> = EmbeddingIndex::read(&index).unwrap().paths;
    let embedded: Vec<String> = embedded.iter().map(|p| p.display().to_string()).collect();
    assert_eq!(embedded.len(), 4, "{embedded:?}");
    assert_eq!(names[..4], embedded, "classify and embed walk alike");
    assert_eq!(names[4], s(&missing));
    assert!(items[..4]
        .iter()
        .all(|i| i["top"].as_array().unwrap().len() == 5));
    assert!(items[4]["error"].as_str().unwrap().contains("missing.jpg"));
    assert!(
        stderr(&o).contains("1 of 5 images failed"),
        "{}",
        stderr(&o)
    );
}

/// `-` with an image's bytes classifies that image (the same numbers as from its file); with
/// text, each line is a path or a folder.
#[test]
fn stdin_holds_an_image_or_a_list_of_paths() {
    let dir = temp_dir("classify-stdin");
    let w = weights(&dir);
    let png = dir.join("one.png");
    image(&png, 7);
    image(&dir.join("more/two.png"), 8);
    let by_file = jsonl(&classify(&w, &["--format", "jsonl", s(&png)], None));
    let o = classify(
        &w,
        &["--format", "jsonl", "-"],
        Some(&std::fs::read(&png).unwrap()),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let by_stdin = jsonl(&o);
    assert_eq!(by_stdin.len(), 1);
    assert_eq!(by_stdin[0]["image"], "<stdin>");
    assert_eq!(by_stdin[0]["top"], by_file[0]["top"]);

    let list = format!("{}\r\n\n{}\n", png.display(), dir.join("more").display());
    let o = classify(&w, &["--format", "jsonl", "-"], Some(list.as_bytes()));
    assert!(o.status.success(), "{}", stderr(&o));
    let names: Vec<Value> = jsonl(&o).iter().map(|i| i["image"].clone()).collect();
    let two = dir.join("more/two.png");
    assert_eq!(names, [s(&png), s(&two)]);
}

#[test]
fn bad_stdin_is_reported_clearly() {
    let dir = temp_dir("classify-badstdin");
    let w = weights(&dir);
    // Bytes no path holds (a NUL): taken as an image, which does not decode.
    let o = classify(&w, &["-"], Some(b"junk\x00 and not an image"));
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("cannot decode image <stdin>"),
        "{}",
        stderr(&o)
    );
    let o = classify(&w, &["-", "-"], None);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("given 2 times"), "{}", stderr(&o));
    // Nothing at all: a usage error with the rules, before the model is even read.
    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    for (stdin, folder) in [(&b""[..], "-"), (b"\n\n", "-"), (b"", s(&empty))] {
        let o = classify(
            Path::new("/nonexistent.safetensors"),
            &["--json", folder],
            Some(stdin),
        );
        assert_eq!(o.status.code(), Some(2));
        assert!(stderr(&o).contains("no images found"), "{}", stderr(&o));
        assert!(o.stdout.is_empty());
    }
    let o = classify(&w, &["--json", "--format", "csv", "-"], Some(b""));
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--format"), "{}", stderr(&o));
}

/// A list on stdin is read as it arrives, and each batch's results are out before the next line
/// is even written.
#[test]
fn results_stream_batch_by_batch() {
    let dir = temp_dir("classify-stream");
    let w = weights(&dir);
    let (a, b) = (dir.join("a.png"), dir.join("b.png"));
    image(&a, 1);
    image(&b, 2);
    let mut child = Command::new(env!("CARGO_BIN_EXE_resnet-zoo"))
        .args(["classify", "--arch", "resnet20", "--weights", s(&w)])
        .args(["--batch-size", "1", "--format", "jsonl", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    for path in [&a, &b] {
        writeln!(input, "{}", path.display()).unwrap();
        input.flush().unwrap();
        // stdin stays open: this line can only come if the batch was written at once.
        let (line, rest) = common::within(60, "a streamed result", move || {
            let line = lines.next().unwrap().unwrap();
            (line, lines)
        });
        lines = rest;
        let item: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(item["image"], s(path));
    }
    drop(input);
    let status = common::within(60, "exit", move || child.wait().unwrap());
    assert!(status.success());
}

/// csv: a header, then one row per image and rank, fields quoted when they need it; json stays
/// one array when the last image fails.
#[test]
fn csv_and_json_formats() {
    let dir = temp_dir("classify-formats");
    let w = weights(&dir);
    let odd = dir.join("a,\"quoted\" name.png");
    image(&odd, 3);
    let bad = dir.join("bad.jpg");
    std::fs::write(&bad, b"\xff\xd8\xff not a jpeg").unwrap();
    let o = classify(
        &w,
        &["--format", "csv", "--top-k", "3", s(&odd), s(&bad)],
        None,
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let text = String::from_utf8(o.stdout.clone()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "image,rank,class,label,probability");
    assert_eq!(lines.len(), 4, "{text}");
    let quoted = format!("\"{}\"", s(&odd).replace('"', "\"\""));
    let mut probs = Vec::new();
    for (rank, line) in lines[1..].iter().enumerate() {
        let rest = line
            .strip_prefix(&quoted)
            .unwrap()
            .strip_prefix(',')
            .unwrap();
        let fields: Vec<&str> = rest.split(',').collect();
        assert_eq!(fields.len(), 4, "{line}");
        assert_eq!(fields[0], (rank + 1).to_string());
        let class: usize = fields[1].parse().unwrap();
        assert_eq!(fields[2], format!("class {class}"));
        probs.push(fields[3].parse::<f32>().unwrap());
    }
    assert!(probs.windows(2).all(|p| p[0] >= p[1]), "{text}");
    assert!(probs.iter().all(|p| (0.0..=1.0).contains(p)), "{text}");
    assert!(probs.iter().sum::<f32>() <= 1.0 + 1e-5, "{text}");
    assert!(stderr(&o).contains("bad.jpg"), "{}", stderr(&o));

    let o = classify(&w, &["--json", s(&odd), s(&bad)], None);
    assert_eq!(o.status.code(), Some(1));
    let items: Value = serde_json::from_slice(&o.stdout).unwrap();
    let items = items.as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert!(items[0]["top"].is_array() && items[0]["preprocess"].is_object());
    assert!(items[1]["error"].as_str().unwrap().contains("bad.jpg"));
}

/// `--cam DIR`: one PNG per image, of the crop's size, named `<stem>.<top class>.png` (`stem-2`
/// for a second image of the same stem), which is the crop blended half and half with a heat map
/// whose colours run from blue (lowest) to red (highest).
#[test]
fn cam_writes_a_heat_map_over_each_crop() {
    let dir = temp_dir("classify-cam");
    let w = weights(&dir);
    let (first, second) = (dir.join("one/cat.png"), dir.join("two/cat.png"));
    image(&first, 4);
    image(&second, 5);
    let out = dir.join("maps");
    let flags = [
        "--resize",
        "40",
        "--crop",
        "36",
        "--interpolation",
        "bilinear",
    ];
    let mut args = vec!["--format", "jsonl", "--cam", s(&out)];
    args.extend(flags);
    args.extend([s(&first), s(&second)]);
    let o = classify(&w, &args, None);
    assert!(o.status.success(), "{}", stderr(&o));
    let items = jsonl(&o);
    let recipe = resnet_zoo::transforms::Preprocess {
        resize_size: 40,
        crop_size: 36,
        ..resnet_zoo::transforms::Preprocess::imagenet_v1()
    };
    for (item, (path, stem)) in items.iter().zip([(&first, "cat"), (&second, "cat-2")]) {
        let class = item["top"][0]["index"].as_u64().unwrap();
        let png = out.join(format!("{stem}.{class}.png"));
        assert_eq!(item["cam"], s(&png));
        let heat = image::open(&png).unwrap();
        assert_eq!(heat.color(), image::ColorType::Rgb8);
        let heat = heat.to_rgb8();
        assert_eq!(heat.dimensions(), (36, 36));
        let rgb = resnet_zoo::transforms::load_rgb(path, &recipe.limits).unwrap();
        let crop = recipe.resize_crop(&rgb);
        // What was blended in: 2 * pixel - crop, a colour in [0, 255] (1 off for rounding).
        let (mut warm, mut cool) = (false, false);
        for (px, base) in heat.as_raw().chunks(3).zip(crop.data.chunks(3)) {
            let c: Vec<i32> = px
                .iter()
                .zip(base)
                .map(|(&p, &b)| 2 * i32::from(p) - i32::from(b))
                .collect();
            assert!(c.iter().all(|&v| (-2..=257).contains(&v)), "{c:?}");
            warm |= c[0] > 100 && c[2] < 30;
            cool |= c[2] > 100 && c[0] < 30;
        }
        assert!(warm && cool, "{stem}: the map should span red to blue");
    }
    // A file where the folder should be: refused before the model loads, naming the flag.
    let o = classify(&w, &["--cam", s(&first), s(&first)], None);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--cam"), "{}", stderr(&o));
}

/// `text` lists each image with its classes, and with `--cam` the map it wrote.
#[test]
fn text_output_names_the_map() {
    let dir = temp_dir("classify-text");
    let w = weights(&dir);
    let img = dir.join("pic.png");
    image(&img, 9);
    let out = dir.join("maps");
    let o = classify(&w, &["--top-k", "2", "--cam", s(&out), s(&img)], None);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8(o.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    assert_eq!(lines[0], s(&img));
    let map = lines[3].strip_prefix("  class-activation map: ").unwrap();
    assert!(Path::new(map).is_file() && map.ends_with(".png"), "{text}");
}
