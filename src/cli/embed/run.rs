//! `resnet-zoo embed`: chunks, checkpoints in `OUT.partial/`, and the final file.

use std::process::ExitCode;
use std::sync::mpsc::sync_channel;
use std::time::{Duration, Instant};

use anyhow::Context;
use resnet_zoo::index::EmbeddingIndex;
use sha2::{Digest, Sha256};

use super::compute::{decode_chunk, embed_chunk, progress, Decoded};
use super::report::finish;
use super::state::Partial;
use super::{shard_chunks, with_suffix, EmbedArgs};
use crate::cli::inputs::{collect_inputs, hex, inputs_sha256};
use crate::cli::Usage;

pub fn run(args: &EmbedArgs) -> anyhow::Result<ExitCode> {
    let items = collect_inputs(&args.inputs)?;
    if items.is_empty() {
        return Err(Usage("no images found in the inputs".into()).into());
    }
    if let Some(w) = args.model.weights.as_ref().filter(|w| w.to_str().is_none()) {
        return Err(Usage(format!(
            "--weights {}: the index records the weights path as text, and this name is not UTF-8; rename the file",
            w.display()
        ))
        .into());
    }
    let loaded = args.model.load_as(true)?;
    let dim = loaded.model.config().num_features();
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
    meta.insert("inputs_sha256".to_string(), inputs_sha256(&items));
    meta.insert("chunk_size".to_string(), chunk_size.to_string());
    if let Some(s) = args.shard {
        meta.insert("shard".to_string(), format!("{}/{}", s.index, s.count));
    }

    // Resumable state (see `state`): OUT.partial/run.json names the run; chunk-K.safetensors
    // hold finished chunks, each checked before it is used.
    let run_id = hex(&Sha256::digest(serde_json::to_string(&meta)?));
    let partial = Partial::open(with_suffix(&args.out, ".partial"), run_id, &meta)?;
    let range = |k: usize| &items[k * chunk_size..((k + 1) * chunk_size).min(items.len())];
    let mut todo = Vec::new();
    for k in first..end {
        if partial.read_chunk(k, range(k), dim)?.is_none() {
            todo.push(k);
        }
    }
    let shard_inputs: usize = (first..end).map(|k| range(k).len()).sum();
    let done_inputs = shard_inputs - todo.iter().map(|&k| range(k).len()).sum::<usize>();
    if done_inputs > 0 {
        eprintln!(
            "resuming: {done_inputs} of {shard_inputs} inputs already embedded in {}",
            partial.dir().display()
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
            partial.write_chunk(k, rows)?;
            bar.inc(n as u64);
        }
        Ok(())
    })?;
    bar.finish_and_clear();

    let mut index = EmbeddingIndex {
        dim,
        meta,
        ..Default::default()
    };
    for k in first..end {
        let chunk = partial.read_chunk(k, range(k), dim)?.with_context(|| {
            format!(
                "chunk {k} vanished from {} before it was read",
                partial.dir().display()
            )
        })?;
        index.append(chunk);
    }
    index.write(&args.out)?;
    partial.remove(first..end)?;
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
