//! `resnet-zoo similar`: the nearest rows of an index to query images.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use resnet_zoo::index::EmbeddingIndex;

use super::compute::{decode_chunk, embed_chunk};
use super::SimilarArgs;
use crate::cli::model::ModelArgs;

pub fn similar(args: &SimilarArgs) -> anyhow::Result<ExitCode> {
    let index = EmbeddingIndex::read(&args.index)?;
    let field = |k: &str| index.meta.get(k).filter(|v| !v.is_empty()).cloned();
    let model = ModelArgs {
        model: field("model"),
        arch: field("weights").and(field("arch")),
        weights: field("weights").map(PathBuf::from),
        offline: args.offline,
        device: args.device.clone(),
        dtype: crate::cli::model::RunDType::F32,
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
