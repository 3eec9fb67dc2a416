//! Per-layer GFLOP/s of ResNet-50's distinct convolutions (+ bias + ReLU): today's fused NCHW conv
//! (`conv2d_fused`, im2col + `gemm`) against the NCHW8c direct kernels, with and without the
//! layout conversions, next to this machine's measured FMA peak.
//!
//! `cargo bench -p resnet-zoo-layers --bench nchwc` (env: `NCHWC_BATCHES=1,8`, `NCHWC_FILTER=3x3`
//! to run some layers only, `NCHWC_MAX_LOAD=0.5` and `NCHWC_WAIT_S=600`: how quiet the machine must
//! be before measuring, and how long to wait at most, `NCHWC_COLD=1` to evict the caches before
//! each timed run of the new kernels, as in a model whose weights do not stay cached). On aarch64
//! it times the NEON kernels against the NCHW path (no FMA peak): the figures that would decide
//! whether `RESNET_ZOO_ISA=auto` picks them there.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use candle_core::{Device, Tensor};
use resnet_zoo_layers::nchwc::{Algorithm, Arena, Input, InputLayout, Isa, Nchw8c, PackedConv};
use resnet_zoo_layers::{conv2d_fused, ConvGeometry, Epilogue};

/// (in, out, kernel, stride, input side, count in the model): as in benches/forward.rs.
const SHAPES: [(usize, usize, usize, usize, usize, usize); 23] = [
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

fn load() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Waits until the 1-minute load average is under `max` (or `wait` has passed).
fn wait_for_quiet(max: f64, wait: Duration) {
    let start = Instant::now();
    while load() > max && start.elapsed() < wait {
        println!("load {:.2} > {max}: waiting", load());
        std::thread::sleep(Duration::from_secs(15));
    }
}

/// Fastest run of `f` in seconds, repeated for about a quarter of a second (3 to 50 runs): on a
/// shared virtual machine the median moves by tens of percent between runs, the minimum much less.
fn time(f: impl FnMut()) -> f64 {
    time_after(|| {}, f)
}

/// [`time`], running `prepare` (not timed) before each run.
fn time_after(mut prepare: impl FnMut(), mut f: impl FnMut()) -> f64 {
    prepare();
    let t = Instant::now();
    f();
    let first = t.elapsed().as_secs_f64();
    let runs = ((0.25 / first).ceil() as usize).clamp(3, 50);
    let mut v: Vec<f64> = (0..runs)
        .map(|_| {
            prepare();
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .collect();
    v.sort_by(f64::total_cmp);
    v[0]
}

/// GFLOP/s of independent FMAs on every rayon thread (best of 3): 256-bit (AVX2) when `wide` is
/// false, else 512-bit (AVX-512F).
#[cfg(target_arch = "x86_64")]
fn fma_peak(wide: bool) -> Option<f64> {
    use rayon::prelude::*;
    use std::arch::x86_64::*;
    #[target_feature(enable = "avx2,fma")]
    fn run256(iters: usize) -> f32 {
        let mut acc = [_mm256_set1_ps(1.0); 12];
        let (a, b) = (_mm256_set1_ps(0.999_999), _mm256_set1_ps(1e-7));
        for _ in 0..iters {
            for v in &mut acc {
                *v = _mm256_fmadd_ps(*v, a, b);
            }
        }
        let mut s = _mm256_setzero_ps();
        for v in acc {
            s = _mm256_add_ps(s, v);
        }
        _mm256_cvtss_f32(s)
    }
    #[target_feature(enable = "avx512f")]
    fn run512(iters: usize) -> f32 {
        let mut acc = [_mm512_set1_ps(1.0); 12];
        let (a, b) = (_mm512_set1_ps(0.999_999), _mm512_set1_ps(1e-7));
        for _ in 0..iters {
            for v in &mut acc {
                *v = _mm512_fmadd_ps(*v, a, b);
            }
        }
        let mut s = _mm512_setzero_ps();
        for v in acc {
            s = _mm512_add_ps(s, v);
        }
        _mm512_reduce_add_ps(s)
    }
    if wide && !is_x86_feature_detected!("avx512f") || !Isa::Avx2Fma.available() {
        return None;
    }
    let threads = rayon::current_num_threads();
    let iters = if wide { 25_000_000 } else { 50_000_000 };
    let best = (0..3)
        .map(|_| {
            let t = Instant::now();
            let s: f32 = (0..threads)
                .into_par_iter()
                .map(|_| {
                    if wide {
                        // SAFETY: AVX-512F was detected above.
                        unsafe { run512(iters) }
                    } else {
                        // SAFETY: AVX2 and FMA were detected above.
                        unsafe { run256(iters) }
                    }
                })
                .sum();
            std::hint::black_box(s);
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min);
    let lanes = if wide { 16 } else { 8 };
    Some((threads * iters * 12 * lanes * 2) as f64 / best / 1e9)
}

#[cfg(not(target_arch = "x86_64"))]
fn fma_peak(_wide: bool) -> Option<f64> {
    None
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` (CI) runs this binary without it,
    // and must neither wait for a quiet machine nor spend minutes on figures: the kernels' tests
    // are the unit tests in src/nchwc.
    if !std::env::args().any(|a| a == "--bench") {
        println!("nchwc benchmark: not run under `cargo test` (use `cargo bench -p resnet-zoo-layers --bench nchwc`)");
        return;
    }
    let max_load = env_or("NCHWC_MAX_LOAD", 0.5);
    wait_for_quiet(max_load, Duration::from_secs(env_or("NCHWC_WAIT_S", 600)));
    let batches: Vec<usize> = std::env::var("NCHWC_BATCHES")
        .unwrap_or_else(|_| "1,8".into())
        .split(',')
        .filter_map(|b| b.trim().parse().ok())
        .collect();
    // Only the convolutions whose name ("512->512 3x3/2 @14") contains this.
    let filter = std::env::var("NCHWC_FILTER").unwrap_or_default();
    let threads = rayon::current_num_threads();
    let isa = Isa::detect();
    let load_start = load();
    let peak = fma_peak(false);
    match peak {
        Some(p) => println!(
            "FMA peak (AVX2, {threads} threads): {p:.1} GFLOP/s; load average {load_start:.2}"
        ),
        None => println!("no AVX2/FMA; load average {load_start:.2}"),
    }
    let peak256 = peak.unwrap_or(f64::NAN);
    let peak512 = fma_peak(true);
    if let Some(p) = peak512 {
        println!("FMA peak (AVX-512F, {threads} threads): {p:.1} GFLOP/s");
    }
    let peak512 = peak512.unwrap_or(f64::NAN);
    // gemm runs its AVX-512 kernels where the CPU has them.
    let peak_old = if peak512.is_nan() { peak256 } else { peak512 };
    // NCHWC_COLD=1: the new kernels' columns time convolutions whose weights come from memory.
    let mut evict = std::env::var_os("NCHWC_COLD").map(|_| Evict(vec![0; 64 << 20]));
    if evict.is_some() {
        println!("NCHWC_COLD: 64 MiB written and the input read back before each timed run");
    }
    let dev = Device::Cpu;
    // The blocked kernel sets of this architecture, each with its FMA peak (NaN: not measured).
    let sets = if cfg!(target_arch = "x86_64") {
        vec![(Isa::Avx2Fma, peak256), (Isa::Avx512, peak512)]
    } else {
        vec![(Isa::Neon, f64::NAN)]
    };
    let new_cols: String = sets
        .iter()
        .map(|&(i, _)| format!(" new {}, NCHW8c |", label(i)))
        .collect();
    for &n in &batches {
        println!(
            "\nResNet-50 convolutions + bias + ReLU, batch {n}, {threads} threads; GFLOP/s (% of the \
             FMA peak of the ISA where measured; old = the gemm crate, whose AVX-512 kernels run \
             where the CPU has them):"
        );
        println!(
            "| conv | count | old: im2col + gemm, NCHW |{new_cols} new {} incl. conversions \
             | new {} / old | rel err |",
            label(isa),
            label(isa)
        );
        println!(
            "|---|---:|---:|{}---:|---:|---:|",
            "---:|".repeat(sets.len())
        );
        let mut t_old = 0.0;
        let mut t_new = vec![0.0; sets.len()];
        let (mut t_conv, mut flops) = (0.0, 0.0);
        for &(c, o, k, s, side, count) in &SHAPES {
            let name = format!("{c}->{o} {k}x{k}/{s} @{side}");
            if !name.contains(&filter) {
                continue;
            }
            let pad = k / 2;
            let x = Tensor::randn(0f32, 1., (n, c, side, side), &dev).unwrap();
            let w = (Tensor::randn(0f32, 1., (o, c, k, k), &dev).unwrap() * 0.05).unwrap();
            let b = Tensor::randn(0f32, 1., o, &dev).unwrap();
            let xv = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let g = ConvGeometry {
                stride: s,
                padding: pad,
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
            // As a ResNet packs it: Winograd where it is the default, except in the last stage
            // (the 7x7 maps), which runs direct.
            let algorithm = if side == 7 {
                Algorithm::Direct
            } else {
                Algorithm::Auto
            };
            let packed =
                PackedConv::from_tensors_scaled(&w, None, Some(&b), g, layout, algorithm).unwrap();
            let xb = Nchw8c::from_nchw(&xv, n, c, side, side).unwrap();
            let run = |xb: &Nchw8c, isa: Isa| -> Nchw8c {
                let inp = match layout {
                    InputLayout::Blocked => Input::Blocked(xb),
                    InputLayout::Nchw => Input::Nchw {
                        data: &xv,
                        n,
                        h: side,
                        w: side,
                    },
                };
                packed.forward(inp, None, true, isa).unwrap()
            };
            let old = conv2d_fused(&x, &w, g, e).unwrap();
            let old_v = old.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let scale = old_v.iter().fold(0f32, |m, v| m.max(v.abs()));
            let mut err = 0f32;
            for &(i, _) in &sets {
                if i.available() {
                    let new = run(&xb, i).to_nchw();
                    err = old_v
                        .iter()
                        .zip(&new)
                        .fold(err, |m, (a, b)| m.max((a - b).abs() / scale));
                }
            }
            let f = 2.0 * (n * packed.macs_per_image(side, side)) as f64;
            let gf = |t: f64| f / t / 1e9;
            let a = time(|| {
                std::hint::black_box(conv2d_fused(&x, &w, g, e).unwrap());
            });
            let mut cells = Vec::new();
            let mut best = f64::NAN;
            for (slot, &(want, pk)) in sets.iter().enumerate() {
                if !want.available() {
                    cells.push("-".to_string());
                    continue;
                }
                let t = time_after(
                    || {
                        if let Some(e) = &mut evict {
                            e.evict(xb.as_slice());
                        }
                    },
                    || {
                        std::hint::black_box(run(&xb, want));
                    },
                );
                t_new[slot] += count as f64 * t;
                if want == isa {
                    best = t;
                }
                cells.push(format!("{:.1}{}", gf(t), pct(gf(t), pk)));
            }
            let ct = time(|| {
                let y = match layout {
                    InputLayout::Blocked => {
                        run(&Nchw8c::from_nchw(&xv, n, c, side, side).unwrap(), isa)
                    }
                    InputLayout::Nchw => run(&xb, isa),
                };
                std::hint::black_box(y.to_nchw());
            });
            println!(
                "| {name} | {count} | {:.1}{} | {} | {:.1} | {:.2}x | {err:.1e} |",
                gf(a),
                pct(gf(a), peak_old),
                cells.join(" | "),
                gf(ct),
                a / best,
            );
            let cf = count as f64;
            (t_old, t_conv, flops) = (t_old + cf * a, t_conv + cf * ct, flops + cf * f);
        }
        let g = |t: f64| flops / t / 1e9;
        let t_best = sets
            .iter()
            .position(|&(i, _)| i == isa)
            .map_or(f64::NAN, |slot| t_new[slot]);
        let totals: Vec<String> = sets
            .iter()
            .zip(&t_new)
            .map(|(&(i, pk), &t)| match i.available() {
                true => format!("{:.1}{}", g(t), pct(g(t), pk)),
                false => "-".into(),
            })
            .collect();
        println!(
            "| all ResNet-50 convs (by count) | | {:.1}{} | {} | {:.1} | {:.2}x | |",
            g(t_old),
            pct(g(t_old), peak_old),
            totals.join(" | "),
            g(t_conv),
            t_old / t_best,
        );
        let per_image: String = sets
            .iter()
            .zip(&t_new)
            .filter(|((i, _), _)| i.available())
            .map(|(&(i, _), &t)| format!(", new {} {:.1} ms", label(i), 1e3 * t / n as f64))
            .collect();
        println!(
            "  per image: old {:.1} ms{per_image} (with conversions around every conv: {:.1} ms)",
            1e3 * t_old / n as f64,
            1e3 * t_conv / n as f64
        );
    }
    for &n in &batches {
        winograd_vs_direct(n, isa, &filter);
    }
    println!(
        "\nload average: {load_start:.2} at the start, {:.2} at the end",
        load()
    );
}

/// A kernel set's name in the tables.
fn label(isa: Isa) -> &'static str {
    match isa {
        Isa::Avx512 => "AVX-512",
        Isa::Avx2Fma => "AVX2",
        Isa::Neon => "NEON",
        Isa::Portable => "portable",
    }
}

/// ` (x%)` of `peak`, or nothing where the peak was not measured.
fn pct(gflops: f64, peak: f64) -> String {
    match peak.is_finite() {
        true => format!(" ({:.0}%)", 100.0 * gflops / peak),
        false => String::new(),
    }
}

/// A buffer larger than the caches. In a model, each convolution's weights come from memory on
/// every forward (ResNet-50 has 100 MB of them), while its input was just written by the layer
/// before.
struct Evict(Vec<u8>);

impl Evict {
    /// Writes one byte per cache line of the buffer, then reads `input` back into the caches.
    fn evict(&mut self, input: &[f32]) {
        for b in self.0.iter_mut().step_by(64) {
            *b = b.wrapping_add(1);
        }
        std::hint::black_box(&self.0);
        std::hint::black_box(input.iter().sum::<f32>());
    }
}

/// Fastest of `runs` runs, in seconds (robust to a noisy host, where the median is not).
fn best_of(runs: usize, mut f: impl FnMut()) -> f64 {
    (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

/// The stride-1 3x3 convolutions of ResNet-50, ResNet-18 and Wide-ResNet-50-2, direct against
/// Winograd F(2x2, 3x3) and F(4x4, 3x3), with the residual and the ReLU, in NCHW8c through an arena
/// (as the models run them). Speed-ups are against direct; errors against direct, relative to its
/// largest output.
fn winograd_vs_direct(n: usize, isa: Isa, filter: &str) {
    println!("\nStride-1 3x3 convolutions, batch {n}, {}: direct vs Winograd F(2x2, 3x3) and F(4x4, 3x3) (best of 15)", label(isa));
    println!("| conv | direct ms | F(2x2) ms | F(4x4) ms | direct GFLOP/s | F(2x2) speed-up | F(4x4) speed-up | F(2x2) rel err | F(4x4) rel err |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    let arena = Arena::new();
    for &(c, side) in &[
        (64, 56),
        (128, 28),
        (256, 14),
        (512, 7),
        (128, 56),
        (256, 28),
        (512, 14),
        (1024, 7),
    ] {
        let name = format!("{c}->{c} 3x3/1 @{side}");
        if !name.contains(filter) {
            continue;
        }
        let x: Vec<f32> = (0..n * c * side * side)
            .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
            .collect();
        let xb = Nchw8c::from_nchw(&x, n, c, side, side).unwrap();
        let w: Vec<f32> = (0..c * c * 9)
            .map(|i| ((i * 104729) % 1000) as f32 / 10000.0 - 0.05)
            .collect();
        let b: Vec<f32> = (0..c).map(|i| i as f32 / c as f32).collect();
        let g = ConvGeometry {
            stride: 1,
            padding: 1,
            groups: 1,
        };
        let pack = |a| {
            PackedConv::new_scaled(&w, [c, c, 3, 3], None, Some(&b), g, InputLayout::Blocked, a)
                .unwrap()
        };
        let algorithms = [
            Algorithm::Direct,
            Algorithm::Winograd,
            Algorithm::Winograd4x4,
        ];
        let packed = algorithms.map(pack);
        let run = |p: &PackedConv| {
            p.forward_in(Input::Blocked(&xb), Some(&xb), true, isa, &arena)
                .unwrap()
        };
        let outs = packed.each_ref().map(run);
        let scale = outs[0].as_slice().iter().fold(0f32, |m, v| m.max(v.abs()));
        let err = |y: &Nchw8c| {
            outs[0]
                .as_slice()
                .iter()
                .zip(y.as_slice())
                .fold(0f32, |m, (a, b)| m.max((a - b).abs()))
                / scale
        };
        let t = packed
            .each_ref()
            .map(|p| best_of(15, || arena.recycle(run(p))));
        let f = 2.0 * (n * packed[0].macs_per_image(side, side)) as f64;
        println!(
            "| {name} | {:.3} | {:.3} | {:.3} | {:.1} | {:.2}x | {:.2}x | {:.1e} | {:.1e} |",
            t[0] * 1e3,
            t[1] * 1e3,
            t[2] * 1e3,
            f / t[0] / 1e9,
            t[0] / t[1],
            t[0] / t[2],
            err(&outs[1]),
            err(&outs[2]),
        );
    }
}
