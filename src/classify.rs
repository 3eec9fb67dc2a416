//! A batch of model inputs to its top-k classes; [`crate::imagenet::top_k`] and its siblings
//! do the same from logits.

use candle_core::{Module, Result, Tensor};

use crate::imagenet::{top_k_labelled, Prediction};
use crate::ResNet;

/// Runs `model` on a batch of `[3, H, W]` inputs and returns the top `k` classes of each, labelled
/// by `labels` (one per class) or as [`crate::imagenet::top_k`] does when `None`.
pub fn classify(
    model: &ResNet,
    inputs: &[Tensor],
    k: usize,
    labels: Option<&[String]>,
) -> Result<Vec<Vec<Prediction>>> {
    let batch = Tensor::stack(inputs, 0)?.to_dtype(model.dtype())?;
    top_k_labelled(&model.forward(&batch)?, k, labels)
}
