//! `resnet-zoo embed-merge`: the shards of one run joined into the file one machine would write.

use std::process::ExitCode;

use resnet_zoo::index::EmbeddingIndex;

use super::report::finish;
use super::{parse_shard, MergeArgs, Shard};
use crate::cli::Usage;

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
