//! Decoding a chunk on the thread pool and embedding it in batches.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::Context;
use candle_core::{DType, Module, Tensor};
use rayon::prelude::*;
use resnet_zoo::index::{file_kind, EmbeddingIndex, Failure};
use resnet_zoo::transforms::load_rgb;

use crate::cli::model::Loaded;

/// A progress bar on stderr when it is a terminal (images/s and ETA); hidden otherwise.
pub(crate) fn progress(total: u64) -> indicatif::ProgressBar {
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
pub(crate) type Decoded = (PathBuf, Result<Tensor, String>);

/// Why `path` is not read at all: it is not a regular file (a FIFO would block the read forever,
/// a device would never end). Paths that cannot be stat'ed are left to the decoder's error.
fn not_a_regular_file(path: &Path) -> Option<String> {
    let meta = std::fs::metadata(path).ok()?;
    (!meta.is_file()).then(|| {
        format!(
            "{} is {}, not a regular file; skipped without opening it",
            path.display(),
            file_kind(&meta)
        )
    })
}

pub(crate) fn decode_chunk(paths: &[PathBuf], loaded: &Loaded) -> Vec<Decoded> {
    let cpu = candle_core::Device::Cpu;
    paths
        .par_iter()
        .map(|p| {
            let input = match not_a_regular_file(p) {
                Some(reason) => Err(reason),
                None => load_rgb(p, &loaded.preprocess.limits)
                    .map_err(anyhow::Error::from)
                    .and_then(|rgb| Ok(loaded.preprocess.apply(&rgb, &cpu)?))
                    .map_err(|e| crate::cli::error_chain(e.as_ref())),
            };
            (p.clone(), input)
        })
        .collect()
}

/// Embeds one decoded chunk in batches of `batch`; failures keep their place in `failed`.
pub(crate) fn embed_chunk(
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
