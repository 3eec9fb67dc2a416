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

use std::path::{Path, PathBuf};

use super::model::ModelArgs;

mod compute;
mod merge;
mod report;
mod run;
mod similar;
mod state;

pub use merge::merge;
pub use run::run;
pub use similar::similar;

/// `I/N`: this machine's slice of the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

pub(crate) fn parse_shard(s: &str) -> Result<Shard, String> {
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
    /// The weights file the index was embedded with, where it is now (if it moved since `embed`
    /// recorded its path); its architecture is still the index's.
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// auto (CUDA if built in and present, then Metal, then the CPU), cpu, cuda[:N] or metal[:N].
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// One JSON array instead of text: `{"query", "matches": [{"path", "score"}]}` per query,
    /// `{"query", "error"}` for a query that could not be read.
    #[arg(long)]
    pub json: bool,
}

pub(crate) fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Chunks `[first, end)` of shard `shard` among `chunks` chunks: contiguous, sizes differ by <= 1.
pub(crate) fn shard_chunks(chunks: usize, shard: Option<Shard>) -> (usize, usize) {
    match shard {
        None => (0, chunks),
        Some(Shard { index, count }) => (index * chunks / count, (index + 1) * chunks / count),
    }
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
