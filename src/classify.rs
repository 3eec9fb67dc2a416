//! Top-k classification of a batch of model inputs.

use candle_core::{DType, Module, Result, Tensor};

use crate::{imagenet, ResNet};

/// One class of a top-k answer.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Prediction {
    pub index: usize,
    pub label: String,
    pub probability: f32,
}

/// The `k` most probable classes of each row of `logits` (`[N, classes]`), best first, with softmax
/// probabilities computed in f32. Ties keep the lower class index first.
pub fn top_k(logits: &Tensor, k: usize) -> Result<Vec<Vec<Prediction>>> {
    let probs = candle_nn::ops::softmax_last_dim(&logits.to_dtype(DType::F32)?)?;
    let rows = probs.to_vec2::<f32>()?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let mut order: Vec<usize> = (0..row.len()).collect();
            order.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
            order
                .into_iter()
                .take(k)
                .map(|index| Prediction {
                    index,
                    label: imagenet::label(index)
                        .map_or_else(|| format!("class {index}"), str::to_string),
                    probability: row[index],
                })
                .collect()
        })
        .collect())
}

/// Runs `model` on a batch of `[3, H, W]` inputs and returns the top `k` classes of each.
pub fn classify(model: &ResNet, inputs: &[Tensor], k: usize) -> Result<Vec<Vec<Prediction>>> {
    let batch = Tensor::stack(inputs, 0)?.to_dtype(model.dtype())?;
    top_k(&model.forward(&batch)?, k)
}
