//! Pooled embeddings of images and their cosine similarities, e.g. for near-duplicate search.
//!
//! ```text
//! cargo run --release --example embed_similarity -- resnet50.tv2_in1k a.jpg b.jpg c.jpg
//! cargo run --release --example embed_similarity -- resnet18 weights.safetensors a.jpg b.jpg
//! ```
//! For whole collections use `resnet-zoo embed` (parallel decoding, resumable, shardable).

use candle_core::{DType, Device, Tensor};
use resnet_zoo::hub::{self, LoadOptions};
use resnet_zoo::transforms::Preprocess;
use resnet_zoo::ResNetConfig;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let device = Device::Cpu;
    let local = args.get(1).is_some_and(|a| a.ends_with(".safetensors"));
    let (model, preprocess, images) = if local {
        let cfg = ResNetConfig::preset(&args[0])?.with_num_classes(None);
        let skip = LoadOptions {
            skip_classifier: true,
            ..LoadOptions::default()
        };
        let model = hub::load_safetensors_with(&args[1], &cfg, DType::F32, &device, skip)?;
        (model, Preprocess::imagenet_v1(), &args[2..])
    } else {
        #[cfg(feature = "download")]
        {
            let name = args
                .first()
                .ok_or_else(|| anyhow::anyhow!("usage: embed_similarity NAME IMAGE..."))?;
            let options = hub::HubOptions::from_env();
            let (model, info) =
                hub::load_pretrained_backbone(name, DType::F32, &device, &options, &mut |_| {})?;
            (model, info.preprocess(), &args[1..])
        }
        #[cfg(not(feature = "download"))]
        anyhow::bail!(
            "built without `download`: usage: embed_similarity ARCH WEIGHTS.safetensors IMAGE..."
        )
    };
    anyhow::ensure!(images.len() >= 2, "give at least two images");
    let inputs = images
        .iter()
        .map(|p| preprocess.load(p, &device))
        .collect::<Result<Vec<_>, _>>()?;
    // [N, 2048] for ResNet-50, L2-normalised: cosine similarity is then a matrix product.
    let e = model.forward_embedding(&Tensor::stack(&inputs, 0)?)?;
    let e = e.broadcast_div(&e.sqr()?.sum_keepdim(1)?.sqrt()?)?;
    let sim = e.matmul(&e.t()?)?.to_vec2::<f32>()?;
    for (i, row) in sim.iter().enumerate() {
        for (j, s) in row.iter().enumerate().skip(i + 1) {
            println!("{:.4}  {}  {}", s, images[i], images[j]);
        }
    }
    Ok(())
}
