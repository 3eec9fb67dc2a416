//! Forward-pass throughput of presets on the CPU, and of the grouped convolution against Candle's
//! own per-group loop. Prints figures; asserts nothing about speed.
//!
//! ```text
//! cargo bench --bench forward                       # resnet50 and resnext50_32x4d, batch 1 and 8
//! cargo bench --bench forward -- resnet18 resnet50d # other presets
//! RESNET_ZOO_BENCH_BATCHES=1,16 RESNET_ZOO_BENCH_REPEATS=5 cargo bench --bench forward
//! ```
//!
//! Weights are random (values do not change the work done). Each figure is the median of
//! `RESNET_ZOO_BENCH_REPEATS` timed runs after one warm-up run.
#![allow(clippy::unwrap_used)] // a benchmark: a panic is the report

use std::collections::HashMap;
use std::time::{Duration, Instant};

use candle_core::{DType, Device, Module, Tensor};
use resnet_zoo::layers::nchwc::{Algorithm, Arena, Input, InputLayout, Isa, Nchw8c, PackedConv};
use resnet_zoo::layers::{conv2d_fused, grouped_conv2d, ConvGeometry, Epilogue};
use resnet_zoo::{ResNet, ResNetConfig};

fn env_list(name: &str, default: &str) -> Vec<usize> {
    std::env::var(name)
        .unwrap_or_else(|_| default.into())
        .split(',')
        .map(|v| v.trim().parse().unwrap())
        .collect()
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn time<T>(repeats: usize, mut f: impl FnMut() -> T) -> Duration {
    f(); // warm-up: first-touch page faults, lazy init
    median(
        (0..repeats)
            .map(|_| {
                let t = Instant::now();
                std::hint::black_box(f());
                t.elapsed()
            })
            .collect(),
    )
}

/// A model of `cfg` with random weights (positive running variances).
fn random_model(cfg: &ResNetConfig, dev: &Device) -> ResNet {
    let tensors: HashMap<String, Tensor> = ResNet::tensor_specs(cfg)
        .into_iter()
        .map(|s| {
            let t = Tensor::randn(0f32, 0.05, s.shape.as_slice(), dev).unwrap();
            let t = if s.name.ends_with("running_var") {
                (t.abs().unwrap() + 0.5).unwrap()
            } else {
                t
            };
            (s.name, t)
        })
        .collect();
    let vb = candle_nn::VarBuilder::from_tensors(tensors, DType::F32, dev);
    ResNet::new(cfg, vb).unwrap()
}

fn main() {
    let dev = Device::Cpu;
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this binary without it, and
    // then one tiny pass proves the benchmark still works without spending a minute on figures.
    if !std::env::args().any(|a| a == "--bench") {
        let model = random_model(&ResNetConfig::resnet20(), &dev);
        let x = Tensor::randn(0f32, 1., (1, 3, 32, 32), &dev).unwrap();
        assert_eq!(model.forward(&x).unwrap().dims(), &[1, 10]);
        println!("forward benchmark: smoke run only (use `cargo bench --bench forward`)");
        return;
    }
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let presets = if args.is_empty() {
        vec!["resnet50".to_string(), "resnext50_32x4d".to_string()]
    } else {
        args
    };
    let batches = env_list("RESNET_ZOO_BENCH_BATCHES", "1,8");
    let repeats = env_list("RESNET_ZOO_BENCH_REPEATS", "3")[0];
    println!(
        "CPU forward, f32, {} threads, median of {repeats}",
        rayon_threads()
    );
    for name in &presets {
        let cfg = ResNetConfig::preset(name).unwrap();
        let model = random_model(&cfg, &dev);
        let side = if matches!(cfg.stem, resnet_zoo::Stem::Cifar { .. }) {
            32
        } else {
            224
        };
        for &n in &batches {
            let x = Tensor::randn(0f32, 1., (n, 3, side, side), &dev).unwrap();
            let t = time(repeats, || model.forward(&x).unwrap());
            println!(
                "{name:18} batch {n:>3}: {:8.1} ms/batch {:7.2} img/s ({:.2} GMACs/img)",
                t.as_secs_f64() * 1e3,
                n as f64 / t.as_secs_f64(),
                ResNet::macs(&cfg, side, side) as f64 / 1e9
            );
        }
    }
    if std::env::var_os("RESNET_ZOO_BENCH_LAYERS").is_some() {
        for &n in &batches {
            layers(&dev, n, repeats);
        }
    }
    grouped_vs_candle(&dev, repeats);
}

/// Every distinct convolution of ResNet-50 at 224x224 as the model runs it on this CPU (bias and
/// ReLU fused): the NCHW8c kernels with the weights packed as at load (Winograd where it is the
/// default), or the NCHW GEMM op where the blocked kernels do not run (`RESNET_ZOO_ISA=off`, no
/// AVX2). GFLOP/s count the direct convolution's FLOPs.
fn layers(dev: &Device, n: usize, repeats: usize) {
    let isa = Isa::configured().unwrap();
    println!(
        "ResNet-50 convolutions, batch {n} (conv + bias + ReLU; {}):",
        match isa {
            Some(isa) => format!("NCHW8c, {isa:?} kernels"),
            None => "NCHW, im2col + gemm".into(),
        }
    );
    let arena = Arena::new();
    // (in, out, kernel, stride, input side, count in the model)
    let shapes = [
        (3, 64, 7, 2, 224, 1),
        (64, 64, 1, 1, 56, 1),
        (256, 64, 1, 1, 56, 2),
        (64, 64, 3, 1, 56, 3),
        (64, 256, 1, 1, 56, 4),
        (256, 128, 1, 1, 56, 1),
        (128, 128, 3, 2, 56, 1),
        (256, 512, 1, 2, 56, 1),
        (512, 128, 1, 1, 28, 3),
        (128, 128, 3, 1, 28, 3),
        (128, 512, 1, 1, 28, 4),
        (512, 256, 1, 1, 28, 1),
        (256, 256, 3, 2, 28, 1),
        (512, 1024, 1, 2, 28, 1),
        (1024, 256, 1, 1, 14, 5),
        (256, 256, 3, 1, 14, 5),
        (256, 1024, 1, 1, 14, 6),
        (1024, 512, 1, 1, 14, 1),
        (512, 512, 3, 2, 14, 1),
        (1024, 2048, 1, 2, 14, 1),
        (2048, 512, 1, 1, 7, 2),
        (512, 512, 3, 1, 7, 2),
        (512, 2048, 1, 1, 7, 3),
    ];
    let mut total = 0.0;
    for &(c, o, k, s, side, count) in &shapes {
        let x = Tensor::randn(0f32, 1., (n, c, side, side), dev).unwrap();
        let w = Tensor::randn(0f32, 0.1, (o, c, k, k), dev).unwrap();
        let b = Tensor::randn(0f32, 0.1, o, dev).unwrap();
        let g = ConvGeometry {
            stride: s,
            padding: k / 2,
            groups: 1,
        };
        let e = Epilogue {
            bias: Some(&b),
            residual: None,
            relu: true,
        };
        let layout = if c == 3 {
            InputLayout::Nchw
        } else {
            InputLayout::Blocked
        };
        let t = match isa {
            Some(isa) => {
                // As the model packs it: the last stage (7x7 maps) direct.
                let algorithm = if side == 7 {
                    Algorithm::Direct
                } else {
                    Algorithm::Auto
                };
                let packed =
                    PackedConv::from_tensors_scaled(&w, None, Some(&b), g, layout, algorithm)
                        .unwrap();
                let xv = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                let xb = Nchw8c::from_nchw(&xv, n, c, side, side).unwrap();
                let input = match layout {
                    InputLayout::Blocked => Input::Blocked(&xb),
                    InputLayout::Nchw => Input::Nchw {
                        data: &xv,
                        n,
                        h: side,
                        w: side,
                    },
                };
                time(repeats, || {
                    let y = packed.forward_in(input, None, true, isa, &arena).unwrap();
                    arena.recycle(y);
                })
            }
            None => time(repeats, || conv2d_fused(&x, &w, g, e).unwrap()),
        }
        .as_secs_f64();
        let out = (side + 2 * (k / 2) - k) / s + 1;
        let flops = 2.0 * (n * o * out * out * c * k * k) as f64;
        total += t * count as f64;
        println!(
            "  {c:4}->{o:<4} {k}x{k} s{s} {side:3}x{side:<3} x{count}: {:7.2} ms {:6.1} GFLOP/s",
            t * 1e3,
            flops / t / 1e9
        );
    }
    println!("  sum over the model's convolutions: {:.1} ms", total * 1e3);
}

/// The 3x3 grouped convolutions of ResNeXt-50 32x4d at 224x224, batch 8: ours (one batched matmul)
/// against Candle's `conv2d(groups)` (one convolution per group, then a concatenation).
fn grouped_vs_candle(dev: &Device, repeats: usize) {
    println!("ResNeXt-50 grouped 3x3 convolutions, batch 8 (ours vs candle conv2d groups=32):");
    for &(c, hw, stride) in &[
        (128, 56, 1),
        (256, 56, 2),
        (256, 28, 1),
        (512, 28, 2),
        (512, 14, 1),
        (1024, 14, 2),
        (1024, 7, 1),
    ] {
        let x = Tensor::randn(0f32, 1., (8, c, hw, hw), dev).unwrap();
        let w = Tensor::randn(0f32, 0.1, (c, c / 32, 3, 3), dev).unwrap();
        let ours = time(repeats, || grouped_conv2d(&x, &w, stride, 1, 32).unwrap());
        let candle = time(repeats, || x.conv2d(&w, 1, stride, 1, 32).unwrap());
        println!(
            "  {c:4} ch {hw:3}x{hw:<3} stride {stride}: ours {:7.2} ms, candle {:7.2} ms ({:.2}x)",
            ours.as_secs_f64() * 1e3,
            candle.as_secs_f64() * 1e3,
            candle.as_secs_f64() / ours.as_secs_f64()
        );
    }
}

fn rayon_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
