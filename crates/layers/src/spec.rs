/// The name and shape of one tensor a model expects in its checkpoint.
///
/// Names are the checkpoint's own (torchvision `state_dict` keys such as `layer1.0.conv1.weight`).
/// Integer bookkeeping tensors (`num_batches_tracked`) are not parameters and are never listed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TensorSpec {
    /// Full dotted name, e.g. `layer1.0.bn1.running_var`.
    pub name: String,
    /// Expected shape, e.g. `[64]`.
    pub shape: Vec<usize>,
}

impl TensorSpec {
    /// A spec for `prefix.name` (or `name` alone when `prefix` is empty).
    pub fn new(prefix: &str, name: &str, shape: &[usize]) -> Self {
        let name = if prefix.is_empty() {
            name.to_string()
        } else {
            format!("{prefix}.{name}")
        };
        Self {
            name,
            shape: shape.to_vec(),
        }
    }

    /// Number of elements of the tensor.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}
