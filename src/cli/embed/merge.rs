//! `resnet-zoo embed-merge`: the shards of one run joined into the file one machine would write.

use std::process::ExitCode;

use resnet_zoo::index::EmbeddingIndex;

use super::report::finish;
use super::{parse_shard, shard_chunks, MergeArgs, Shard};
use crate::cli::Usage;

/// How many inputs shard `shard` of a run holds, from the run's `inputs` and `chunk_size`.
fn shard_inputs(index: &EmbeddingIndex, shard: Shard) -> Option<usize> {
    let number = |key: &str| index.meta.get(key)?.parse::<usize>().ok();
    let (inputs, chunk_size) = (number("inputs")?, number("chunk_size")?.max(1));
    let (first, end) = shard_chunks(inputs.div_ceil(chunk_size), Some(shard));
    Some((end * chunk_size).min(inputs) - (first * chunk_size).min(inputs))
}

pub fn merge(args: &MergeArgs) -> anyhow::Result<ExitCode> {
    let mut shards: Vec<(Shard, &std::path::Path, EmbeddingIndex)> = Vec::new();
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
        shards.push((shard, path, index));
    }
    shards.sort_by_key(|(s, _, _)| s.index);
    let count = shards[0].0.count;
    let mut base = shards[0].2.meta.clone();
    base.remove("shard");
    let (width, first) = (shards[0].2.dim, shards[0].1);
    for (i, (shard, path, index)) in shards.iter().enumerate() {
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
        if index.dim != width {
            return Err(Usage(format!(
                "{} (shard {i}/{count}) has rows {} wide, but {} has rows {width} wide: shards of \
                 one run have one width; embed that shard again",
                path.display(),
                index.dim,
                first.display()
            ))
            .into());
        }
        let held = index.len() + index.failed.len();
        match shard_inputs(index, *shard) {
            Some(want) if want == held => {}
            want => {
                return Err(Usage(format!(
                    "{} (shard {i}/{count}) holds {held} inputs ({} rows, {} failures), but its run \
                     gives shard {i}/{count} {}; embed that shard again",
                    path.display(),
                    index.len(),
                    index.failed.len(),
                    want.map_or("an unknown number (no `inputs`/`chunk_size`)".into(), |w| w
                        .to_string())
                ))
                .into());
            }
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
        dim: width,
        meta: base,
        ..Default::default()
    };
    for (_, _, index) in shards {
        merged.append(index);
    }
    merged.write(&args.out)?;
    let inputs = merged.len() + merged.failed.len();
    finish(&merged, inputs, &args.out, args.report.as_deref())
}
