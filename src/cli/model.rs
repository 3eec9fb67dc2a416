//! `--model` / `--arch` / `--weights` / `--offline`: which weights to load and how to preprocess.

#[cfg(feature = "download")]
use std::io::IsTerminal;
use std::path::PathBuf;

use candle_core::{DType, Device};
use resnet_zoo::hub::{self, WeightsInfo};
use resnet_zoo::transforms::Preprocess;
use resnet_zoo::{ResNet, ResNetConfig};

use super::recipe::{self, Recipe, RecipeArgs};
use super::Usage;

/// A download that failed (or was not allowed) gets the way to run without one: the file itself.
#[cfg(feature = "download")]
fn offline_hint(e: hub::HubError, name: &str, endpoint: &str) -> anyhow::Error {
    use hub::HubError as H;
    match &e {
        H::NotCached { .. }
        | H::Http { .. }
        | H::Timeout { .. }
        | H::TooSlow { .. }
        | H::DeadlineExceeded { .. } => {
            let message = super::error_chain(&e);
            let url = hub::registry::find(name)
                .map(|w| {
                    let base = endpoint.trim_end_matches('/');
                    format!("{base}/{}/resolve/{}/{}", w.repo, w.revision, w.file)
                })
                .unwrap_or_default();
            // The URL once: HTTP errors already name it.
            let what = if message.contains(&url) {
                "the file".to_string()
            } else {
                url
            };
            anyhow::anyhow!(
                "{message}\nhint: without network access, fetch {what} another way and run with \
                 --model {name} --weights FILE (the row's preprocessing is kept)"
            )
        }
        _ => e.into(),
    }
}

/// A weights row's own recipe.
fn row_recipe(info: &WeightsInfo) -> Recipe {
    Recipe {
        preprocess: info.preprocess(),
        source: format!("weights row {}", info.name),
    }
}

#[derive(clap::Args, Debug)]
pub struct ModelArgs {
    /// Pretrained weights by name, e.g. resnet50.tv2_in1k, or an arch for its default weights
    /// (`resnet-zoo list --pretrained`). Downloaded once into the Hugging Face cache.
    #[arg(long, conflicts_with = "arch")]
    pub model: Option<String>,
    /// Architecture of a local --weights file (`resnet-zoo list`).
    #[arg(long, requires = "weights")]
    pub arch: Option<String>,
    /// Local .safetensors file (torchvision names); with --model, replaces the download.
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// Never use the network; the weights must be in the cache (also HF_HUB_OFFLINE=1).
    #[arg(long)]
    pub offline: bool,
    /// auto (CUDA if built in and present, then Metal, then the CPU), cpu, cuda[:N] or metal[:N].
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Compute dtype. f16/bf16 halve the weights' memory and run fastest on GPUs; on the CPU,
    /// bf16 convolutions compute in f32 and f16 is slow (no native half arithmetic).
    #[arg(long, value_enum, default_value_t = RunDType::F32)]
    pub dtype: RunDType,
    /// Load weights even if some hold NaN or infinite values (refused by default, naming them).
    #[arg(long)]
    pub allow_non_finite: bool,
    /// Remove this prefix from the file's tensor names before matching, e.g. `module.` of a
    /// checkpoint saved from DistributedDataParallel.
    #[arg(long, value_name = "PREFIX")]
    pub strip_prefix: Option<String>,
    #[command(flatten)]
    pub recipe: RecipeArgs,
}

/// The dtypes a model can run in from the command line.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunDType {
    F32,
    F16,
    Bf16,
}

impl From<RunDType> for DType {
    fn from(d: RunDType) -> Self {
        match d {
            RunDType::F32 => DType::F32,
            RunDType::F16 => DType::F16,
            RunDType::Bf16 => DType::BF16,
        }
    }
}

/// A loaded model with the preprocessing that belongs to its weights.
pub struct Loaded {
    pub model: ResNet,
    pub preprocess: Preprocess,
    /// Where `preprocess` came from (`--verbose`, JSON): the weights row, `--preprocess`, overrides.
    pub recipe: Recipe,
    /// The weights' name for messages: `resnet50.tv2_in1k` or the file path.
    pub name: String,
    /// Preset name of the architecture.
    pub arch: String,
}

fn usage(e: impl std::fmt::Display) -> anyhow::Error {
    Usage(e.to_string()).into()
}

/// A progress bar on stderr when it is a terminal; silent otherwise.
#[cfg(feature = "download")]
fn progress_bar(label: &str) -> impl FnMut(hub::Progress) {
    let tty = std::io::stderr().is_terminal();
    let label = label.to_string();
    let mut bar: Option<indicatif::ProgressBar> = None;
    move |p| {
        if !tty {
            return;
        }
        match p {
            hub::Progress::Start { total } => {
                let b = indicatif::ProgressBar::new(total);
                if let Ok(style) = indicatif::ProgressStyle::with_template(
                    "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                ) {
                    b.set_style(style.progress_chars("=> "));
                }
                b.set_message(format!("downloading {label}"));
                bar = Some(b);
            }
            hub::Progress::Advance { done } => {
                if let Some(b) = &bar {
                    b.set_position(done);
                }
            }
            hub::Progress::Finish => {
                if let Some(b) = bar.take() {
                    b.finish_and_clear();
                }
            }
        }
    }
}

impl ModelArgs {
    /// Resolves the flags to a model, downloading if needed. Naming errors are usage errors.
    pub fn load(&self) -> anyhow::Result<Loaded> {
        self.load_as(false)
    }

    /// [`ModelArgs::load`], as a headless backbone when `headless` (the file's classifier, if any,
    /// is skipped by name; `forward` returns the pooled embedding).
    pub fn load_as(&self, headless: bool) -> anyhow::Result<Loaded> {
        let device: Device = super::device::parse_device(&self.device)
            .map_err(|e| usage(format!("--device: {e}")))?;
        let dtype = DType::from(self.dtype);
        let options = hub::LoadOptions {
            skip_classifier: headless,
            allow_non_finite: self.allow_non_finite,
            strip_prefix: self.strip_prefix.clone(),
        };
        let shape = |cfg: ResNetConfig| {
            if headless {
                cfg.with_num_classes(None)
            } else {
                cfg
            }
        };
        match (&self.model, &self.arch, &self.weights) {
            (Some(name), _, Some(path)) => {
                let info: &WeightsInfo =
                    hub::registry::find(name).map_err(|e| usage(format!("--model: {e}")))?;
                let cfg = shape(info.config()?);
                let model = hub::load_safetensors_with(path, &cfg, dtype, &device, options)?;
                let recipe = self.recipe.resolve(&info.arch, row_recipe(info))?;
                Ok(Loaded { model, preprocess: recipe.preprocess.clone(), recipe, name: info.name.clone(), arch: info.arch.clone() })
            }
            #[cfg(not(feature = "download"))]
            (Some(name), _, None) => {
                hub::registry::find(name).map_err(|e| usage(format!("--model: {e}")))?;
                Err(usage(
                    "this resnet-zoo was built without the `download` feature: pass --weights FILE, or rebuild with `--features download`",
                ))
            }
            #[cfg(feature = "download")]
            (Some(name), _, None) => {
                // Name errors are usage errors; everything after the lookup is a runtime failure.
                hub::registry::find(name).map_err(|e| usage(format!("--model: {e}")))?;
                let mut hub_options = hub::HubOptions::from_env();
                hub_options.offline |= self.offline;
                let (model, info) = hub::load_pretrained_with(
                    name,
                    dtype,
                    &device,
                    &hub_options,
                    options,
                    &mut progress_bar(name),
                )
                .map_err(|e| offline_hint(e, name, &hub_options.endpoint))?;
                let recipe = self.recipe.resolve(&info.arch, row_recipe(info))?;
                Ok(Loaded { model, preprocess: recipe.preprocess.clone(), recipe, name: info.name.clone(), arch: info.arch.clone() })
            }
            (None, Some(arch), Some(path)) => {
                let cfg = ResNetConfig::preset(arch).map_err(|e| usage(format!("--arch: {e}")))?;
                let input = cfg.default_input_size();
                let model = hub::load_safetensors_with(path, &shape(cfg), dtype, &device, options)?;
                let recipe = self.recipe.resolve(arch, recipe::for_local_file(arch, input))?;
                Ok(Loaded {
                    model,
                    preprocess: recipe.preprocess.clone(),
                    recipe,
                    name: path.display().to_string(),
                    arch: arch.clone(),
                })
            }
            _ => Err(usage(
                "give --model NAME (pretrained, e.g. resnet50.tv2_in1k) or --arch NAME --weights FILE",
            )),
        }
    }
}
