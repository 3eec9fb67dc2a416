//! Multi-scale feature maps for a detection or segmentation neck (an FPN reads strides 8, 16, 32).
//!
//! ```text
//! cargo run --release --example features -- resnet50.tv2_in1k cat.jpg          # from the Hub
//! cargo run --release --example features -- resnet50 weights.safetensors cat.jpg  # local file
//! ```

use candle_core::{DType, Device};
use resnet_zoo::hub::{self, LoadOptions};
use resnet_zoo::transforms::Preprocess;
use resnet_zoo::ResNetConfig;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let device = Device::Cpu;
    let (model, preprocess, image) = match args.as_slice() {
        [arch, weights, image] => {
            // A backbone: the file's classifier (if any) is skipped by name.
            let cfg = ResNetConfig::preset(arch)?.with_num_classes(None);
            let skip = LoadOptions {
                skip_classifier: true,
                ..LoadOptions::default()
            };
            let model = hub::load_safetensors_with(weights, &cfg, DType::F32, &device, skip)?;
            (model, Preprocess::imagenet_v1(), image)
        }
        #[cfg(feature = "download")]
        [name, image] => {
            let options = hub::HubOptions::from_env();
            let (model, info) =
                hub::load_pretrained_backbone(name, DType::F32, &device, &options, &mut |_| {})?;
            (model, info.preprocess(), image)
        }
        _ => anyhow::bail!("usage: features (NAME | ARCH WEIGHTS.safetensors) IMAGE"),
    };
    let x = preprocess.load(image, &device)?.unsqueeze(0)?;
    // Strides 8, 16 and 32 (layer2..layer4); index 0 is the stem at stride 2, 1 is layer1.
    let wanted = [2, 3, 4];
    let maps = model.forward_intermediates(&x, &wanted)?;
    for (i, map) in wanted.iter().zip(&maps) {
        let info = &model.feature_info()[*i];
        println!(
            "{:<7} stride {:>2}: {:?} ({} channels)",
            info.name,
            info.reduction,
            map.dims(),
            info.channels
        );
    }
    Ok(())
}
