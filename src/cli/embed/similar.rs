//! `resnet-zoo similar`: the nearest rows of an index to query images.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use resnet_zoo::index::{file_kind, EmbeddingIndex};

use super::compute::{decode_chunk, embed_chunk};
use super::report::escape_path;
use super::SimilarArgs;
use crate::cli::model::ModelArgs;

pub fn similar(args: &SimilarArgs) -> anyhow::Result<ExitCode> {
    let index = EmbeddingIndex::read(&args.index)?;
    let field = |k: &str| index.meta.get(k).filter(|v| !v.is_empty()).cloned();
    // The index names the weights to load (or --weights, where they are now): only a regular
    // file is opened (a FIFO or a device named there would block or never end), and the loader
    // bounds its size.
    let weights = match &args.weights {
        Some(path) => {
            if field("weights").is_none() {
                bail!(
                    "--weights: {} was embedded with the pretrained {}, not a weights file; \
                     leave --weights out",
                    args.index.display(),
                    field("model").unwrap_or_else(|| "model".into())
                );
            }
            Some(path.display().to_string())
        }
        None => field("weights"),
    };
    if let Some(weights) = &weights {
        if let Ok(meta) = std::fs::metadata(weights) {
            if !meta.is_file() {
                bail!(
                    "{} names the weights {weights}, which is {}, not a weights file; \
                     re-create the index with `resnet-zoo embed --weights FILE`",
                    args.index.display(),
                    file_kind(&meta)
                );
            }
        }
    }
    let model = ModelArgs {
        model: field("model"),
        arch: weights.as_ref().and(field("arch")),
        weights: args.weights.clone().or_else(|| weights.map(PathBuf::from)),
        offline: args.offline,
        device: args.device.clone(),
        dtype: crate::cli::model::RunDType::F32,
        allow_non_finite: false,
        strip_prefix: None,
        recipe: Default::default(),
    };
    let loaded = model.load_as(true).with_context(|| {
        format!(
            "loading the model {} was embedded with",
            args.index.display()
        )
    })?;
    let width = loaded.model.config().num_features();
    if index.dim != width {
        bail!(
            "{} holds rows {} wide, but its model {} gives {width}: the index was not written by \
             `resnet-zoo embed` with this model; embed the images again",
            args.index.display(),
            index.dim,
            loaded.name
        );
    }
    let mut failed = 0;
    let mut results = Vec::new();
    for query in &args.queries {
        let decoded = decode_chunk(std::slice::from_ref(query), &loaded);
        let rows = embed_chunk(decoded, &loaded, 1, false)?;
        if let Some(f) = rows.failed.first() {
            eprintln!("error: {}", f.error);
            failed += 1;
            results.push(serde_json::json!({"query": escape_path(query), "error": f.error}));
            continue;
        }
        let nearest = index.nearest(rows.row(0), args.top_k as usize);
        if args.json {
            let matches: Vec<_> = nearest
                .iter()
                .map(|&(row, score)| {
                    serde_json::json!({"path": escape_path(&index.paths[row]), "score": score})
                })
                .collect();
            results.push(serde_json::json!({"query": escape_path(query), "matches": matches}));
            continue;
        }
        println!("{}", escape_path(query));
        for (row, score) in nearest {
            println!("  {score:.4}  {}", escape_path(&index.paths[row]));
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&results)?);
    }
    Ok(if failed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
