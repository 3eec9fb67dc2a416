//! Per-convolution wall times of the blocked CPU forward (`resnet-zoo bench --layers`).
//!
//! Each convolution is timed where it runs in the model, its weights and input wherever the layers
//! before it left them in the caches. A layer benchmarked alone in a loop (the `nchwc` bench) runs
//! with both hot, which can hide what the model pays: on the Intel host of docs/performance.md a
//! kernel change 1.4x faster on cache-resident data was within 1% in the model.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use candle_core::Result;
use resnet_zoo_layers::nchwc::{Nchw8c, WinogradVariant};
use resnet_zoo_layers::ConvBn;

use crate::model::ResNet;

/// Where a convolution sits in the model, named as torchvision names its stages.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Site {
    /// The stem's convolution `i` (one, or three for a deep stem).
    Stem(usize),
    /// `conv` (`conv1`, `conv2`, `conv3` or `shortcut`) of block `block` of stage `stage` (from 0;
    /// named `layer{stage + 1}`).
    Block {
        stage: usize,
        block: usize,
        conv: &'static str,
    },
}

impl Site {
    fn name(self) -> String {
        match self {
            Self::Stem(i) => format!("stem.{i}"),
            Self::Block { stage, block, conv } => format!("layer{}.{block}.{conv}", stage + 1),
        }
    }
}

/// One convolution's wall times over the forwards since [`ResNet::time_layers`] switched timing
/// on, with its shape.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerTime {
    /// `stem.0`, `layer1.0.conv1`, ..., `layer4.2.conv3`; `layerN.0.shortcut` for a projection.
    pub name: String,
    pub in_channels: usize,
    pub out_channels: usize,
    pub kernel_size: usize,
    pub stride: usize,
    pub groups: usize,
    /// Input and output height and width.
    pub input: (usize, usize),
    pub output: (usize, usize),
    /// Images per call (1 for every call when a batch runs image by image on several threads).
    pub batch: usize,
    /// `direct`, `winograd F(2x2,3x3)` or `winograd F(4x4,3x3)`.
    pub algorithm: &'static str,
    /// Multiply-adds of one call, counted as a direct convolution.
    pub macs: u64,
    /// Each call's wall time, in the order they ran.
    pub times: Vec<Duration>,
}

impl LayerTime {
    /// The fastest call.
    pub fn min(&self) -> Duration {
        self.times.iter().copied().min().unwrap_or_default()
    }

    /// The median call (the lower of the middle two for an even count).
    pub fn median(&self) -> Duration {
        let mut t = self.times.clone();
        t.sort_unstable();
        t.get(t.len().saturating_sub(1) / 2)
            .copied()
            .unwrap_or_default()
    }
}

/// The recorder a packed model carries: off until switched on, then one entry per convolution.
#[derive(Debug, Default)]
pub(crate) struct Timing {
    on: AtomicBool,
    layers: Mutex<Vec<LayerTime>>,
}

impl Clone for Timing {
    /// A clone starts switched off, with nothing recorded.
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl Timing {
    /// Runs `f`, the convolution `conv` at `site` on `batch` maps of `input`, and records its time
    /// when timing is on.
    pub(crate) fn time(
        &self,
        site: Site,
        conv: &ConvBn,
        batch: usize,
        input: (usize, usize),
        f: impl FnOnce() -> Result<Nchw8c>,
    ) -> Result<Nchw8c> {
        if !self.on.load(Ordering::Relaxed) {
            return f();
        }
        let start = Instant::now();
        let y = f()?;
        let took = start.elapsed();
        let name = site.name();
        let mut layers = self.layers.lock().unwrap_or_else(|e| e.into_inner());
        match layers
            .iter_mut()
            .find(|l| l.name == name && l.batch == batch)
        {
            Some(l) => l.times.push(took),
            None => {
                let cfg = conv.config();
                let packed = conv.packed();
                let algorithm = match packed.and_then(|p| p.winograd_variant()) {
                    Some(WinogradVariant::F2) => "winograd F(2x2,3x3)",
                    Some(WinogradVariant::F4) => "winograd F(4x4,3x3)",
                    None => "direct",
                };
                let macs = packed.map_or(0, |p| p.macs_per_image(input.0, input.1)) * batch;
                layers.push(LayerTime {
                    name,
                    in_channels: cfg.in_channels,
                    out_channels: cfg.out_channels,
                    kernel_size: cfg.kernel_size,
                    stride: cfg.stride,
                    groups: cfg.groups,
                    input,
                    output: (y.h, y.w),
                    batch,
                    algorithm,
                    macs: macs as u64,
                    times: vec![took],
                });
            }
        }
        Ok(y)
    }
}

impl ResNet {
    /// Switches the timing of every convolution of the blocked CPU forward on or off ([`LayerTime`];
    /// two clock reads and a lock per convolution while on). Only that path is timed: a model on
    /// the NCHW path ([`ResNet::cpu_kernels`] is `None`) records nothing.
    pub fn time_layers(&self, on: bool) {
        if let Some(b) = &self.blocked {
            b.timing.on.store(on, Ordering::Relaxed);
        }
    }

    /// The convolutions timed since timing was switched on, in the order they first ran, and
    /// forgets them.
    pub fn take_layer_times(&self) -> Vec<LayerTime> {
        match &self.blocked {
            Some(b) => {
                std::mem::take(&mut *b.timing.layers.lock().unwrap_or_else(|e| e.into_inner()))
            }
            None => Vec::new(),
        }
    }
}
