//! Class-activation maps (CAM, Zhou et al. 2016, <https://arxiv.org/abs/1512.04150>): where in
//! the image a class's evidence lies.
//!
//! A ResNet's head is a global average pool and a linear map, so a class's logit is the spatial
//! mean of `w[k] . F[:, i, j] + b[k]` over the last feature map `F` ([`ResNet::forward_features`],
//! `[C, h, w]`, after the final norm in pre-activation networks). That per-position score is the
//! CAM; for this head Grad-CAM gives the same map (the gradient of the logit with respect to `F` is
//! `w[k] / (h w)` at every position). [`class_scores`] computes it with the model's own head,
//! applied to each position's feature vector as a 1x1 map, so no weight is read out of the model;
//! the bias adds a constant that [`normalise`] removes.
//!
//! ```no_run
//! use resnet_zoo::candle_core::{DType, Device, Tensor};
//! use resnet_zoo::{cam, hub, ResNetConfig};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let device = Device::Cpu;
//! let cfg = ResNetConfig::resnet18();
//! let model = hub::load_safetensors("resnet18.safetensors", &cfg, DType::F32, &device)?;
//! let input = resnet_zoo::transforms::Preprocess::imagenet_v1().load("cat.jpg", &device)?;
//! let features = model.forward_features(&input.unsqueeze(0)?)?; // [1, 512, 7, 7]
//! let maps = cam::class_activation_maps(&model, &features, &[281])?; // tabby, in [0, 1]
//! let heat = cam::upsample_bilinear(&maps[0], 224, 224); // over the 224x224 crop
//! # Ok(()) }
//! ```

use candle_core::{bail, DType, Device, Result, Tensor};

use crate::transforms::{Preprocess, Rgb8};
use crate::ResNet;

/// A `height` x `width` map of values, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Map {
    pub width: usize,
    pub height: usize,
    pub data: Vec<f32>,
}

/// The score of class `classes[n]` at every position of image `n` of `features` (`[N, C, h, w]`,
/// from [`ResNet::forward_features`]): `w[k] . F[n, :, i, j] + b[k]`, in f32, unnormalised.
pub fn class_scores(model: &ResNet, features: &Tensor, classes: &[usize]) -> Result<Vec<Map>> {
    let (n, c, h, w) = features.dims4()?;
    if classes.len() != n {
        bail!(
            "class_scores: {} classes for a batch of {n} feature maps; give one class per image",
            classes.len()
        );
    }
    let Some(num_classes) = model.config().num_classes else {
        bail!("class-activation maps need a classifier, and this model is headless (num_classes: None)");
    };
    if let Some(&bad) = classes.iter().find(|&&k| k >= num_classes) {
        bail!("class_scores: class {bad} does not exist; the model has {num_classes} classes");
    }
    // Every position as its own 1x1 map: the head's average pool of one value is that value, so
    // forward_head gives the classifier applied to each feature vector, [N*h*w, classes].
    let columns = features
        .permute((0, 2, 3, 1))?
        .contiguous()?
        .reshape((n * h * w, c, 1, 1))?;
    let scores = model
        .forward_head(&columns, false)?
        .to_dtype(DType::F32)?
        .to_device(&Device::Cpu)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let plane = h * w;
    Ok(classes
        .iter()
        .enumerate()
        .map(|(image, &k)| Map {
            width: w,
            height: h,
            data: (0..plane)
                .map(|p| scores[(image * plane + p) * num_classes + k])
                .collect(),
        })
        .collect())
}

/// `(x - min) / (max - min)`, so the map spans [0, 1] (no ReLU first: negative evidence is the
/// cold end); a constant map becomes all zeros.
pub fn normalise(map: &Map) -> Map {
    let min = map.data.iter().copied().fold(f32::INFINITY, f32::min);
    let max = map.data.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let range = max - min;
    let data = if range > 0.0 && range.is_finite() {
        map.data.iter().map(|&x| (x - min) / range).collect()
    } else {
        vec![0.0; map.data.len()]
    };
    Map { data, ..*map }
}

/// [`class_scores`], each map [`normalise`]d: the CAM of each image's class, `[h, w]` in [0, 1].
pub fn class_activation_maps(
    model: &ResNet,
    features: &Tensor,
    classes: &[usize],
) -> Result<Vec<Map>> {
    Ok(class_scores(model, features, classes)?
        .iter()
        .map(normalise)
        .collect())
}

/// The map resized to `width` x `height` as PyTorch's `F.interpolate(mode="bilinear",
/// align_corners=False)` does (no antialiasing): output pixel centres mapped back onto the input
/// grid, clamped at the border.
pub fn upsample_bilinear(map: &Map, width: usize, height: usize) -> Map {
    // For one axis: each output index's two source indices and the second one's weight.
    let taps = |input: usize, output: usize| -> Vec<(usize, usize, f32)> {
        let scale = input as f32 / output as f32;
        (0..output)
            .map(|d| {
                let src = (scale * (d as f32 + 0.5) - 0.5).max(0.0);
                let i0 = (src as usize).min(input.saturating_sub(1));
                let i1 = if i0 + 1 < input { i0 + 1 } else { i0 };
                (i0, i1, src - i0 as f32)
            })
            .collect()
    };
    let (rows, cols) = (taps(map.height, height), taps(map.width, width));
    let at = |y: usize, x: usize| map.data[y * map.width + x];
    let mut data = Vec::with_capacity(width * height);
    for &(y0, y1, ly) in &rows {
        for &(x0, x1, lx) in &cols {
            let top = (1.0 - lx) * at(y0, x0) + lx * at(y0, x1);
            let bottom = (1.0 - lx) * at(y1, x0) + lx * at(y1, x1);
            data.push((1.0 - ly) * top + ly * bottom);
        }
    }
    Map {
        width,
        height,
        data,
    }
}

/// A jet-like colour map: 0 is dark blue, 0.25 blue-cyan, 0.5 green, 0.75 yellow-red, 1 dark
/// red (the piecewise-linear approximation of matplotlib's `jet`), as RGB in [0, 1].
pub fn jet(t: f32) -> [f32; 3] {
    let t = t.clamp(0.0, 1.0);
    let ramp = |centre: f32| (1.5 - (4.0 * t - centre).abs()).clamp(0.0, 1.0);
    [ramp(3.0), ramp(2.0), ramp(1.0)]
}

/// The map's [`jet`] colours blended over `rgb` (of the map's size): `(1 - alpha) * pixel + alpha
/// * colour`, rounded.
pub fn overlay(rgb: &Rgb8, map: &Map, alpha: f32) -> Result<Rgb8> {
    if (rgb.width, rgb.height) != (map.width, map.height) || rgb.data.len() != map.data.len() * 3 {
        bail!(
            "overlay: a {}x{} map over a {}x{} image; upsample the map to the image first",
            map.width,
            map.height,
            rgb.width,
            rgb.height
        );
    }
    let mut data = Vec::with_capacity(rgb.data.len());
    for (px, &t) in rgb.data.chunks_exact(3).zip(&map.data) {
        for (&v, c) in px.iter().zip(jet(t)) {
            let blended = (1.0 - alpha) * f32::from(v) + alpha * 255.0 * c;
            data.push(blended.round().clamp(0.0, 255.0) as u8);
        }
    }
    Ok(Rgb8 { data, ..*rgb })
}

/// A model input (`[3, H, W]`, as [`Preprocess::apply`] made it) back to its 8-bit pixels:
/// `round((x * std + mean) * 255)`, which gives the crop's bytes back exactly.
pub fn unnormalise(input: &Tensor, preprocess: &Preprocess) -> Result<Rgb8> {
    let (channels, height, width) = input.dims3()?;
    if channels != 3 {
        bail!("unnormalise: the input has {channels} channels, not 3 (RGB)");
    }
    let planes = input
        .to_dtype(DType::F32)?
        .to_device(&Device::Cpu)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let plane = height * width;
    let mut data = Vec::with_capacity(3 * plane);
    for i in 0..plane {
        for c in 0..3 {
            let x = planes[c * plane + i] * preprocess.std[c] + preprocess.mean[c];
            data.push((x * 255.0).round().clamp(0.0, 255.0) as u8);
        }
    }
    Ok(Rgb8 {
        width,
        height,
        data,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn normalise_spans_zero_to_one() {
        let map = Map {
            width: 2,
            height: 2,
            data: vec![-3.0, 1.0, 5.0, -1.0],
        };
        assert_eq!(normalise(&map).data, vec![0.0, 0.5, 1.0, 0.25]);
        let flat = Map {
            data: vec![2.0; 4],
            ..map
        };
        assert_eq!(normalise(&flat).data, vec![0.0; 4]);
    }

    /// Equivalent PyTorch code: `F.interpolate(torch.tensor([[[[0., 1.], [2., 3.]]]]),
    /// size=(4, 4), mode="bilinear", align_corners=False)`.
    #[test]
    fn upsampling_is_pytorchs_bilinear() {
        let map = Map {
            width: 2,
            height: 2,
            data: vec![0.0, 1.0, 2.0, 3.0],
        };
        let up = upsample_bilinear(&map, 4, 4);
        #[rustfmt::skip]
        let torch = [
            0.0, 0.25, 0.75, 1.0,
            0.5, 0.75, 1.25, 1.5,
            1.5, 1.75, 2.25, 2.5,
            2.0, 2.25, 2.75, 3.0,
        ];
        assert_eq!(up.data, torch);
        // The same size is the identity; one row stretches along the other axis only.
        assert_eq!(upsample_bilinear(&map, 2, 2), map);
        let row = Map {
            width: 2,
            height: 1,
            data: vec![0.0, 1.0],
        };
        assert_eq!(
            upsample_bilinear(&row, 4, 2).data,
            [0.0, 0.25, 0.75, 1.0].repeat(2)
        );
    }

    #[test]
    fn overlay_blends_the_colour_map() {
        assert_eq!(jet(0.0), [0.0, 0.0, 0.5]);
        assert_eq!(jet(0.5), [0.5, 1.0, 0.5]);
        assert_eq!(jet(1.0), [0.5, 0.0, 0.0]);
        let rgb = Rgb8 {
            width: 2,
            height: 1,
            data: vec![100, 100, 100, 0, 0, 0],
        };
        let map = Map {
            width: 2,
            height: 1,
            data: vec![0.0, 1.0],
        };
        let out = overlay(&rgb, &map, 0.5).unwrap();
        // 0.5 * 100 + 0.5 * 255 * 0.5 = 113.75 for blue; 0.5 * 255 * 0.5 = 63.75 for red.
        assert_eq!(out.data, vec![50, 50, 114, 64, 0, 0]);
        let small = Map {
            width: 1,
            height: 1,
            data: vec![0.0],
        };
        assert!(overlay(&rgb, &small, 0.5).is_err());
    }

    #[test]
    fn unnormalise_gives_the_crop_back() {
        let p = Preprocess {
            resize_size: 4,
            crop_size: 4,
            ..Preprocess::imagenet_v1()
        };
        let rgb = Rgb8 {
            width: 4,
            height: 4,
            data: (0..48).map(|i| (i * 5 + 3) as u8).collect(),
        };
        let input = p.apply(&rgb, &Device::Cpu).unwrap();
        assert_eq!(unnormalise(&input, &p).unwrap(), rgb);
    }
}
