//! `resnet-zoo embed`, `embed-merge` and `similar`: pooled embeddings of image collections.
//!
//! A run is cut into chunks of `--chunk-size` inputs, fixed by position in the input list. Each
//! finished chunk is written atomically to `OUT.partial/`, so a killed run resumes at the first
//! missing chunk, and batches never straddle chunks, so every row is computed the same way whether
//! the collection runs on one machine, is resumed, or is split with `--shard I/N` (whole chunks per
//! shard) and joined by `embed-merge`: all three give the same file, byte for byte.
//!
//! Decoding runs on a thread pool one chunk ahead of the model, so the forward pass does not wait
//! for JPEG decoding unless decoding is the slower of the two (the summary line says how long the
//! model waited).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::mpsc::sync_channel;
use std::time::{Duration, Instant};

use anyhow::Context;
use candle_core::{DType, Module, Tensor};
use rayon::prelude::*;
use resnet_zoo::index::{EmbeddingIndex, Failure};
use resnet_zoo::transforms::load_rgb;
use sha2::{Digest, Sha256};

use super::model::{Loaded, ModelArgs};
use super::Usage;

/// File extensions `embed` picks up inside folders (files named on the command line are always taken).
const IMAGE_EXTENSIONS: &[&str] = &["jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff"];

/// `I/N`: this machine's slice of the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

fn parse_shard(s: &str) -> Result<Shard, String> {
    let (i, n) = s
        .split_once('/')
        .ok_or_else(|| format!("'{s}' is not I/N (e.g. 0/4: the first of 4 shards)"))?;
    let index: usize = i
        .parse()
        .map_err(|_| format!("'{i}' is not a shard index"))?;
    let count: usize = n
        .parse()
        .map_err(|_| format!("'{n}' is not a shard count"))?;
    if count == 0 || index >= count {
        return Err(format!("shard {index}/{count}: need 0 <= I < N"));
    }
    Ok(Shard { index, count })
}

#[derive(clap::Args, Debug)]
pub struct EmbedArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Image files, or folders searched recursively for .jpg .jpeg .png .webp .gif .bmp .tif .tiff.
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    /// Output file (.safetensors): the `embeddings` matrix [N, D] and the image paths in row order.
    #[arg(long)]
    pub out: PathBuf,
    /// L2-normalise every row.
    #[arg(long)]
    pub normalize: bool,
    /// Images per forward pass.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub batch_size: u16,
    /// Embed only slice I of N (0-based) of the input list, for N machines; join with embed-merge.
    #[arg(long, value_parser = parse_shard)]
    pub shard: Option<Shard>,
    /// Where to list inputs that failed (path, tab, error) [default: OUT.failures.tsv].
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Inputs per checkpoint: a killed run redoes at most this many.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub chunk_size: u32,
}

#[derive(clap::Args, Debug)]
pub struct MergeArgs {
    /// The shard files of one run, in any order (`embed --shard I/N --out ...`).
    #[arg(required = true)]
    pub shards: Vec<PathBuf>,
    /// The joined file, the same one a single machine would have written.
    #[arg(long)]
    pub out: PathBuf,
    /// Where to list inputs that failed [default: OUT.failures.tsv].
    #[arg(long)]
    pub report: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
pub struct SimilarArgs {
    /// Embeddings file written by `embed`; its model embeds the queries.
    #[arg(long)]
    pub index: PathBuf,
    /// Query images.
    #[arg(required = true)]
    pub queries: Vec<PathBuf>,
    /// Matches per query.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub top_k: u32,
    /// Never use the network (also HF_HUB_OFFLINE=1).
    #[arg(long)]
    pub offline: bool,
    /// cpu, cuda[:N] or metal.
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .with_context(|| format!("cannot list {}", dir.display()))?;
    entries.sort();
    for path in entries {
        if path.is_dir() {
            walk(&path, out)?;
        } else if is_image(&path) {
            out.push(path);
        }
    }
    Ok(())
}

/// The inputs in order: files as given, folders expanded recursively in sorted path order.
pub fn collect_inputs(inputs: &[PathBuf]) -> anyhow::Result<Vec<String>> {
    let mut files = Vec::new();
    for input in inputs {
        if input.is_dir() {
            walk(input, &mut files)?;
        } else if input.exists() {
            files.push(input.clone());
        } else {
            return Err(Usage(format!(
                "input {} does not exist (give image files or folders)",
                input.display()
            ))
            .into());
        }
    }
    Ok(files.iter().map(|p| p.display().to_string()).collect())
}

fn sha256_lines<'a>(lines: impl IntoIterator<Item = &'a str>) -> String {
    let mut h = Sha256::new();
    for l in lines {
        h.update(l.as_bytes());
        h.update(b"\n");
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Chunks `[first, end)` of shard `shard` among `chunks` chunks: contiguous, sizes differ by <= 1.
fn shard_chunks(chunks: usize, shard: Option<Shard>) -> (usize, usize) {
    match shard {
        None => (0, chunks),
        Some(Shard { index, count }) => (index * chunks / count, (index + 1) * chunks / count),
    }
}

/// A progress bar on stderr when it is a terminal (images/s and ETA); hidden otherwise.
fn progress(total: u64) -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "embedding [{bar:30}] {pos}/{len} images, {per_sec}, eta {eta}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// One decoded input: its model input, or why it has none.
type Decoded = (String, Result<Tensor, String>);

fn decode_chunk(paths: &[String], loaded: &Loaded) -> Vec<Decoded> {
    let cpu = candle_core::Device::Cpu;
    paths
        .par_iter()
        .map(|p| {
            let input = load_rgb(Path::new(p), &loaded.preprocess.limits)
                .map_err(anyhow::Error::from)
                .and_then(|rgb| Ok(loaded.preprocess.apply(&rgb, &cpu)?))
                .map_err(|e| super::error_chain(e.as_ref()));
            (p.clone(), input)
        })
        .collect()
}

/// Embeds one decoded chunk in batches of `batch`; failures keep their place in `failed`.
fn embed_chunk(
    decoded: Vec<Decoded>,
    loaded: &Loaded,
    batch: usize,
    normalize: bool,
) -> anyhow::Result<EmbeddingIndex> {
    let mut out = EmbeddingIndex {
        dim: loaded.model.config().num_features(),
        ..Default::default()
    };
    let mut ok = Vec::new();
    for (path, input) in decoded {
        match input {
            Ok(t) => ok.push((path, t)),
            Err(error) => out.failed.push(Failure { path, error }),
        }
    }
    let device = loaded.model.device();
    for group in ok.chunks(batch) {
        let inputs: Vec<&Tensor> = group.iter().map(|(_, t)| t).collect();
        let x = Tensor::stack(&inputs, 0)?
            .to_device(device)?
            .to_dtype(loaded.model.dtype())?;
        let mut e = loaded
            .model
            .forward(&x)
            .with_context(|| format!("running {}", loaded.name))?
            .to_dtype(DType::F32)?;
        if normalize {
            let norm = e.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(1e-12, f64::MAX)?;
            e = e.broadcast_div(&norm)?;
        }
        out.embeddings.extend(
            e.flatten_all()?
                .to_device(&candle_core::Device::Cpu)?
                .to_vec1::<f32>()?,
        );
        out.paths.extend(group.iter().map(|(p, _)| p.clone()));
    }
    Ok(out)
}

fn write_report(path: &Path, failed: &[Failure]) -> anyhow::Result<()> {
    let text: String = failed
        .iter()
        .map(|f| format!("{}\t{}\n", f.path, f.error.replace(['\n', '\t'], " ")))
        .collect();
    resnet_zoo::hub::atomic::write(path, text.as_bytes())
        .with_context(|| format!("cannot write report {}", path.display()))
}

/// Reports the failures (to `report`, default `OUT.failures.tsv`) and picks the exit code.
fn finish(
    index: &EmbeddingIndex,
    inputs: usize,
    out: &Path,
    report: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let report = report.map_or_else(|| with_suffix(out, ".failures.tsv"), Path::to_path_buf);
    let report = report.as_path();
    write_report(report, &index.failed)?;
    if index.failed.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!(
        "{} of {inputs} images could not be embedded (listed in {}); the other {} rows are written",
        index.failed.len(),
        report.display(),
        index.len()
    );
    Ok(ExitCode::from(1))
}

pub fn run(args: &EmbedArgs) -> anyhow::Result<ExitCode> {
    let items = collect_inputs(&args.inputs)?;
    if items.is_empty() {
        return Err(Usage("no images found in the inputs".into()).into());
    }
    let loaded = args.model.load_as(true)?;
    let chunk_size = args.chunk_size as usize;
    let chunks = items.len().div_ceil(chunk_size);
    let (first, end) = shard_chunks(chunks, args.shard);
    let p = &loaded.preprocess;
    let mut meta = std::collections::BTreeMap::new();
    meta.insert(
        "model".to_string(),
        args.model.model.clone().unwrap_or_default(),
    );
    meta.insert("arch".to_string(), loaded.arch.clone());
    meta.insert(
        "weights".to_string(),
        args.model
            .weights
            .as_ref()
            .map(|w| {
                std::path::absolute(w)
                    .unwrap_or_else(|_| w.clone())
                    .display()
                    .to_string()
            })
            .unwrap_or_default(),
    );
    meta.insert(
        "preprocess".to_string(),
        format!(
            "resize {} crop {} {:?} mean {:?} std {:?}",
            p.resize_size, p.crop_size, p.interpolation, p.mean, p.std
        ),
    );
    meta.insert("normalized".to_string(), args.normalize.to_string());
    meta.insert("inputs".to_string(), items.len().to_string());
    meta.insert(
        "inputs_sha256".to_string(),
        sha256_lines(items.iter().map(String::as_str)),
    );
    meta.insert("chunk_size".to_string(), chunk_size.to_string());
    if let Some(s) = args.shard {
        meta.insert("shard".to_string(), format!("{}/{}", s.index, s.count));
    }

    // Resumable state: OUT.partial/run.json names the run; chunk-K.safetensors hold finished chunks.
    let partial = with_suffix(&args.out, ".partial");
    let run_id = serde_json::to_string_pretty(&meta)?;
    std::fs::create_dir_all(&partial)
        .with_context(|| format!("cannot create {}", partial.display()))?;
    let run_file = partial.join("run.json");
    match std::fs::read_to_string(&run_file) {
        Ok(previous) if previous != run_id => {
            return Err(Usage(format!(
                "{} holds an unfinished run with other inputs or options; delete it, or choose another --out",
                partial.display()
            ))
            .into())
        }
        Ok(_) => {}
        Err(_) => resnet_zoo::hub::atomic::write(&run_file, run_id.as_bytes())
            .with_context(|| format!("cannot write {}", run_file.display()))?,
    }
    let chunk_file = |k: usize| partial.join(format!("chunk-{k:08}.safetensors"));
    let todo: Vec<usize> = (first..end)
        .filter(|&k| EmbeddingIndex::read(&chunk_file(k)).is_err())
        .collect();
    let range = |k: usize| &items[k * chunk_size..((k + 1) * chunk_size).min(items.len())];
    let shard_inputs: usize = (first..end).map(|k| range(k).len()).sum();
    let done_inputs = shard_inputs - todo.iter().map(|&k| range(k).len()).sum::<usize>();
    if done_inputs > 0 {
        eprintln!(
            "resuming: {done_inputs} of {shard_inputs} inputs already embedded in {}",
            partial.display()
        );
    }

    let bar = progress(shard_inputs as u64);
    bar.set_position(done_inputs as u64);
    let started = Instant::now();
    let (mut decode_time, mut model_time, mut waited) =
        (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    let batch = usize::from(args.batch_size);
    std::thread::scope(|scope| -> anyhow::Result<()> {
        // One decoded chunk in flight: decoding of chunk k+1 overlaps the forward pass of chunk k.
        let (tx, rx) = sync_channel::<(usize, Vec<Decoded>, Duration)>(1);
        let (loaded, todo) = (&loaded, &todo);
        scope.spawn(move || {
            for &k in todo {
                let t = Instant::now();
                let decoded = decode_chunk(range(k), loaded);
                if tx.send((k, decoded, t.elapsed())).is_err() {
                    return; // the model side stopped on an error
                }
            }
        });
        loop {
            let wait = Instant::now();
            let Ok((k, decoded, spent)) = rx.recv() else {
                break;
            };
            waited += wait.elapsed();
            decode_time += spent;
            let t = Instant::now();
            let n = decoded.len();
            let rows = embed_chunk(decoded, loaded, batch, args.normalize)?;
            model_time += t.elapsed();
            rows.write(&chunk_file(k))?;
            bar.inc(n as u64);
        }
        Ok(())
    })?;
    bar.finish_and_clear();

    let mut index = EmbeddingIndex {
        dim: loaded.model.config().num_features(),
        meta,
        ..Default::default()
    };
    for k in first..end {
        index.append(EmbeddingIndex::read(&chunk_file(k))?);
    }
    index.write(&args.out)?;
    std::fs::remove_dir_all(&partial)
        .with_context(|| format!("cannot remove {}", partial.display()))?;
    let wall = started.elapsed().as_secs_f64();
    let embedded = shard_inputs - done_inputs;
    eprintln!(
        "embedded {embedded} inputs in {wall:.1} s ({:.2} images/s) at batch {batch}: decoding {:.1} s \
         (one chunk ahead, {:.0}% of the wall time), model {:.1} s, model waited for decoding {:.1} s",
        embedded as f64 / wall.max(1e-9),
        decode_time.as_secs_f64(),
        100.0 * decode_time.as_secs_f64() / wall.max(1e-9),
        model_time.as_secs_f64(),
        waited.as_secs_f64()
    );
    finish(&index, shard_inputs, &args.out, args.report.as_deref())
}

pub fn merge(args: &MergeArgs) -> anyhow::Result<ExitCode> {
    let mut shards: Vec<(Shard, EmbeddingIndex)> = Vec::new();
    for path in &args.shards {
        let index = EmbeddingIndex::read(path)?;
        let shard = index
            .meta
            .get("shard")
            .ok_or_else(|| {
                Usage(format!(
                    "{} is not a shard (no `shard` metadata)",
                    path.display()
                ))
            })
            .and_then(|s| parse_shard(s).map_err(|e| Usage(format!("{}: {e}", path.display()))))?;
        shards.push((shard, index));
    }
    shards.sort_by_key(|(s, _)| s.index);
    let count = shards[0].0.count;
    let mut base = shards[0].1.meta.clone();
    base.remove("shard");
    for (i, (shard, index)) in shards.iter().enumerate() {
        let mut meta = index.meta.clone();
        meta.remove("shard");
        if meta != base || shard.count != count {
            return Err(Usage(format!(
                "shard {}/{} is from another run (inputs, model or options differ)",
                shard.index, shard.count
            ))
            .into());
        }
        if shard.index != i {
            let issue = if shard.index < i {
                "given twice"
            } else {
                "missing"
            };
            return Err(Usage(format!("shard {i}/{count} is {issue}")).into());
        }
    }
    if shards.len() != count {
        return Err(Usage(format!(
            "{} of {count} shards given; missing {}/{count}",
            shards.len(),
            shards.len()
        ))
        .into());
    }
    let mut merged = EmbeddingIndex {
        dim: shards[0].1.dim,
        meta: base,
        ..Default::default()
    };
    for (_, index) in shards {
        merged.append(index);
    }
    merged.write(&args.out)?;
    let inputs = merged.len() + merged.failed.len();
    finish(&merged, inputs, &args.out, args.report.as_deref())
}

pub fn similar(args: &SimilarArgs) -> anyhow::Result<ExitCode> {
    let index = EmbeddingIndex::read(&args.index)?;
    let field = |k: &str| index.meta.get(k).filter(|v| !v.is_empty()).cloned();
    let model = ModelArgs {
        model: field("model"),
        arch: field("weights").and(field("arch")),
        weights: field("weights").map(PathBuf::from),
        offline: args.offline,
        device: args.device.clone(),
        allow_non_finite: false,
    };
    let loaded = model.load_as(true).with_context(|| {
        format!(
            "loading the model {} was embedded with",
            args.index.display()
        )
    })?;
    let mut failed = 0;
    for query in &args.queries {
        let name = query.display().to_string();
        let decoded = decode_chunk(std::slice::from_ref(&name), &loaded);
        let rows = embed_chunk(decoded, &loaded, 1, false)?;
        if let Some(f) = rows.failed.first() {
            eprintln!("error: {}", f.error);
            failed += 1;
            continue;
        }
        println!("{name}");
        for (row, score) in index.nearest(rows.row(0), args.top_k as usize) {
            println!("  {score:.4}  {}", index.paths[row]);
        }
    }
    Ok(if failed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn shards_cover_every_chunk_once() {
        for chunks in [0, 1, 5, 17] {
            for count in 1..=6 {
                let mut next = 0;
                for index in 0..count {
                    let (a, b) = shard_chunks(chunks, Some(Shard { index, count }));
                    assert_eq!(a, next);
                    next = b;
                }
                assert_eq!(next, chunks);
            }
        }
        assert!(parse_shard("3/3").is_err() && parse_shard("1/0").is_err());
        assert_eq!(parse_shard("2/8"), Ok(Shard { index: 2, count: 8 }));
    }
}
