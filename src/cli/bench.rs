//! `resnet-zoo bench`: load time, forward latency and peak memory of one model on one input, in a
//! form `benches/compare.py` reads next to PyTorch and ONNX Runtime (`--json`).

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use candle_core::{DType, Module, Tensor};

use resnet_zoo::LayerTime;

use super::model::ModelArgs;

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Input batch: a .safetensors file with one f32 tensor `input` of shape [N, 3, H, W]
    /// [default: a seeded random batch of --batch images at the model's default size].
    #[arg(long)]
    pub input: Option<PathBuf>,
    /// Images per batch of the random input (ignored with --input).
    #[arg(long = "batch-size", alias = "batch", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub batch: u16,
    /// Timed forward passes, after the warm-up ones.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u16).range(1..=10000))]
    pub repeats: u16,
    /// Untimed forward passes first (page faults, scratch buffers, lazy initialisation).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(0..=100))]
    pub warmup: u16,
    /// Write the last pass's output to this .safetensors file (tensor `output`), atomically.
    #[arg(long = "out", alias = "output")]
    pub output: Option<PathBuf>,
    /// One JSON line instead of text.
    #[arg(long)]
    pub json: bool,
    /// Also time every convolution where it runs in the model (the blocked CPU path only): min and
    /// median over the timed passes, with its shape, algorithm and GFLOP/s.
    #[arg(long)]
    pub layers: bool,
}

/// This process's peak resident memory in MiB (`VmHWM`), where the OS reports it.
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib / 1024.0)
}

fn read_input(path: &PathBuf, device: &candle_core::Device) -> anyhow::Result<Tensor> {
    let bytes = std::fs::read(path).with_context(|| format!("--input {}", path.display()))?;
    let file = safetensors::SafeTensors::deserialize(&bytes)
        .with_context(|| format!("--input {}: not a .safetensors file", path.display()))?;
    let view = file.tensor("input").with_context(|| {
        format!(
            "--input {}: no tensor named `input` (hint: save the batch as {{\"input\": tensor}})",
            path.display()
        )
    })?;
    let shape = view.shape().to_vec();
    if view.dtype() != safetensors::Dtype::F32 || shape.len() != 4 || shape[1] != 3 {
        anyhow::bail!(
            "--input {}: `input` is {:?} {:?}; expected f32 [N, 3, H, W]",
            path.display(),
            view.dtype(),
            shape
        );
    }
    let values: Vec<f32> = view
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    Ok(Tensor::from_vec(values, shape, device)?)
}

fn median(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    }
}

pub fn run(args: &BenchArgs) -> anyhow::Result<ExitCode> {
    let start = Instant::now();
    let loaded = args.model.load()?;
    let load_ms = start.elapsed().as_secs_f64() * 1e3;
    let device = loaded.model.device().clone();
    let cfg = loaded.model.config().clone();
    let x = match &args.input {
        Some(path) => read_input(path, &device)?,
        None => {
            let side = cfg.default_input_size();
            let shape = (usize::from(args.batch), 3, side, side);
            // A fixed pseudo-random batch in [-2, 2) (xorshift; Candle cannot seed its CPU rng),
            // so that runs are repeatable.
            let mut state = 0x9E37_79B9_7F4A_7C15u64;
            let values: Vec<f32> = (0..shape.0 * 3 * side * side)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    (state >> 40) as f32 / (1u64 << 24) as f32 * 4.0 - 2.0
                })
                .collect();
            Tensor::from_vec(values, shape, &device)?
        }
    };
    let x = x.to_dtype(loaded.model.dtype())?;
    let batch = x.dim(0)?;
    let mut y = None;
    for _ in 0..args.warmup {
        y = Some(loaded.model.forward(&x)?);
    }
    device.synchronize()?;
    let mut times_ms = Vec::with_capacity(usize::from(args.repeats));
    loaded.model.time_layers(args.layers);
    for _ in 0..args.repeats {
        let t = Instant::now();
        let out = loaded.model.forward(&x)?;
        device.synchronize()?;
        times_ms.push(t.elapsed().as_secs_f64() * 1e3);
        y = Some(out);
    }
    loaded.model.time_layers(false);
    let layers = loaded.model.take_layer_times();
    if args.layers && layers.is_empty() {
        eprintln!(
            "note: --layers times the blocked CPU path only; this model runs on {} without it",
            super::device::device_name(&device)
        );
    }
    if let (Some(path), Some(y)) = (&args.output, &y) {
        let y = y
            .to_dtype(DType::F32)?
            .to_device(&candle_core::Device::Cpu)?;
        let bytes = safetensors::serialize(
            HashMap::from([("output".to_string(), &y)])
                .iter()
                .map(|(k, v)| (k.as_str(), *v)),
            None,
        )
        .with_context(|| format!("--out {}", path.display()))?;
        resnet_zoo::fswrite::write_atomic(path, &bytes)
            .with_context(|| format!("--out {}: writing failed", path.display()))?;
    }
    let mut sorted = times_ms.clone();
    sorted.sort_by(f64::total_cmp);
    let med = median(&sorted);
    let threads = rayon::current_num_threads();
    let peak = peak_rss_mib();
    if args.json {
        let mut line = serde_json::json!({
            "engine": "resnet-zoo",
            "model": loaded.arch,
            "batch": batch,
            "input": x.dims(),
            "threads": threads,
            "device": super::device::device_name(&device),
            "dtype": loaded.model.dtype().as_str(),
            "load_ms": load_ms,
            "times_ms": times_ms,
            "peak_rss_mb": peak,
        });
        if args.layers {
            line["layers"] = layers.iter().map(layer_json).collect();
        }
        println!("{line}");
    } else {
        println!(
            "{} ({}), input {:?}, {} {}, {threads} CPU threads",
            loaded.arch,
            loaded.name,
            x.dims(),
            super::device::device_name(&device),
            loaded.model.dtype().as_str(),
        );
        println!("load (file to model ready): {load_ms:.1} ms");
        println!(
            "forward: median {med:.1} ms, min {:.1} ms, max {:.1} ms over {} runs: {:.2} img/s",
            sorted[0],
            sorted[sorted.len() - 1],
            sorted.len(),
            batch as f64 / (med / 1e3)
        );
        if let Some(peak) = peak {
            println!("peak resident memory: {peak:.0} MiB");
        }
        if !layers.is_empty() {
            print_layers(&layers, med);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn shape(l: &LayerTime) -> String {
    let g = match l.groups {
        1 => String::new(),
        g => format!(" g{g}"),
    };
    format!(
        "{}->{} {k}x{k}/{}{g} {}x{}->{}x{}",
        l.in_channels,
        l.out_channels,
        l.stride,
        l.input.0,
        l.input.1,
        l.output.0,
        l.output.1,
        k = l.kernel_size
    )
}

/// GFLOP/s of one call of `l` taking `d` (2 FLOPs per direct multiply-add).
fn gflops(l: &LayerTime, d: Duration) -> f64 {
    2.0 * l.macs as f64 / d.as_secs_f64().max(1e-12) / 1e9
}

fn layer_json(l: &LayerTime) -> serde_json::Value {
    serde_json::json!({
        "name": l.name,
        "shape": shape(l),
        "batch": l.batch,
        "algorithm": l.algorithm,
        "macs": l.macs,
        "calls": l.times.len(),
        "min_ms": ms(l.min()),
        "median_ms": ms(l.median()),
    })
}

fn print_layers(layers: &[LayerTime], forward_median_ms: f64) {
    let calls = layers.iter().map(|l| l.times.len()).max().unwrap_or(0);
    println!(
        "convolutions where they run in the model ({calls} calls each at most; GFLOP/s at the median, \
         counting direct-convolution FLOPs):"
    );
    println!(
        "  {:<20} {:<34} {:<20} {:>5} {:>8} {:>9} {:>8}",
        "layer", "shape", "algorithm", "batch", "min ms", "median ms", "GFLOP/s"
    );
    for l in layers {
        println!(
            "  {:<20} {:<34} {:<20} {:>5} {:>8.3} {:>9.3} {:>8.1}",
            l.name,
            shape(l),
            l.algorithm,
            l.batch,
            ms(l.min()),
            ms(l.median()),
            gflops(l, l.median())
        );
    }
    let med_sum: f64 = layers.iter().map(|l| ms(l.median())).sum();
    let min_sum: f64 = layers.iter().map(|l| ms(l.min())).sum();
    println!(
        "  sum over the convolutions: {min_sum:.1} ms of minima, {med_sum:.1} ms of medians, per \
         call (a call per image where a batch runs image by image); the forward's median: \
         {forward_median_ms:.1} ms"
    );
}
