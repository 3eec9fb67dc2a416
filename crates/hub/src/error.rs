use std::fmt;
use std::path::PathBuf;

/// Why a weights file could not be loaded. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read (missing, a directory, no permission, ...).
    #[error("cannot read weights file {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Not a regular file (a FIFO, a device such as `/dev/zero`, a socket, a directory): refused
    /// before reading, which would block or never end.
    #[error(
        "weights file {path} is {kind}, not a regular file; give the path of a .safetensors file"
    )]
    NotRegularFile { path: PathBuf, kind: &'static str },
    /// The file is larger than [`crate::MAX_WEIGHTS_BYTES`]; refused from its size, before reading.
    #[error("weights file {path} is {size} bytes, over the limit of {limit} bytes for a weights file (the largest ResNet checkpoint is under 1 GB); is this the right file?")]
    TooLarge {
        path: PathBuf,
        size: u64,
        limit: u64,
    },
    /// Another process wrote the file while it was read: the bytes may mix old and new contents.
    #[error("weights file {path} changed while it was being read ({what}); nothing was loaded\nhint: wait for the writer to finish and retry; write weights to a temporary file and rename it into place, so readers see the old file or the new one")]
    ChangedWhileReading { path: PathBuf, what: &'static str },
    /// A PyTorch checkpoint (`torch.save`: a zip archive holding a pickle) given as safetensors.
    #[error("weights file {path} is {what}, not safetensors\nhint: convert it to safetensors first with convert_pth (its pickle is parsed, never run)")]
    PyTorchCheckpoint { path: PathBuf, what: &'static str },
    /// The file is empty.
    #[error("weights file {path} is empty (0 bytes); was the download interrupted?")]
    Empty { path: PathBuf },
    /// The file is a Git LFS pointer, not the weights it points to.
    #[error("weights file {path} is a Git LFS pointer, not weights; fetch the real file (`git lfs pull`) or download it from the Hub")]
    LfsPointer { path: PathBuf },
    /// The file is an HTML page (an error page or a login page saved under the weights' name).
    #[error("weights file {path} is an HTML page, not weights; the download probably saved an error or login page")]
    Html { path: PathBuf },
    /// The file is not a valid safetensors file.
    #[error("weights file {path} is not a valid safetensors file (PyTorch .pth checkpoints must be converted to safetensors first)")]
    Format {
        path: PathBuf,
        #[source]
        source: safetensors::SafeTensorError,
    },
    /// The file's tensors do not match the architecture.
    #[error("{0}")]
    Mismatch(Box<MismatchReport>),
    /// The header names a tensor more than once (JSON allows it; a parser would keep one silently).
    #[error("weights file {path} names a tensor more than once: {}\nhint: the file is corrupt or was written by a faulty tool", names.join(", "))]
    DuplicateNames { path: PathBuf, names: Vec<String> },
    /// Tensors hold NaN or infinite values (refused unless `LoadOptions::allow_non_finite`).
    #[error(
        "weights file {path} has NaN or infinite values in {}: {}\nhint: the file is corrupt or comes from a diverged training run; set LoadOptions::allow_non_finite to load it anyway",
        plural(tensors.len(), "tensor"),
        tensors.iter().take(10).map(|(n, c)| format!("{n} ({c} values)")).collect::<Vec<_>>().join(", ")
    )]
    NonFinite {
        path: PathBuf,
        /// `(tensor name in the file, number of non-finite values)`, in file order.
        tensors: Vec<(String, usize)>,
    },
    /// A PyTorch checkpoint that is not a plain dict of tensors, or is corrupt.
    #[error("cannot convert {path}: {reason}")]
    Pth { path: PathBuf, reason: String },
    /// The `.pth`'s pickle is corrupt or over a limit: a declared length past the end of the input,
    /// too many objects (memo blow-up), nesting too deep. Nothing was executed.
    #[error("cannot convert {path}: {error}\nhint: the pickle was crafted or damaged; nothing in it was executed")]
    PthPickle {
        path: PathBuf,
        error: crate::pth::pickle::PickleError,
    },
    /// The `.pth`'s dict names a tensor more than once (a `torch.save` of a dict cannot).
    #[error("cannot convert {path}: the checkpoint names a tensor more than once: {names}\nhint: the pickle was edited or written by a faulty tool; which copy is meant cannot be known")]
    PthDuplicateKey { path: PathBuf, names: String },
    /// A `.pth` tensor larger than the data the archive holds (a stride-0 view with a huge shape),
    /// or whose size overflows; refused before anything is allocated.
    #[error("cannot convert {path}: tensor '{tensor}' of shape {shape:?} would take {}, more than the {limit} bytes the archive's tensors can fill (its size plus 16 MiB for broadcast views)\nhint: the shape or strides were crafted or damaged", bytes.map_or("more than 2^64 bytes".to_string(), |b| format!("{b} bytes")))]
    PthTensorTooLarge {
        path: PathBuf,
        tensor: String,
        shape: Vec<usize>,
        /// `None` when the size overflows 64 bits.
        bytes: Option<u64>,
        limit: u64,
    },
    /// The configuration is invalid, or building the model failed.
    #[error("cannot build the model from {path}")]
    Candle {
        path: PathBuf,
        #[source]
        source: candle_core::Error,
    },
}

fn plural(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// One tensor whose shape differs between the file and the architecture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShapeMismatch {
    pub name: String,
    pub expected: Vec<usize>,
    pub found: Vec<usize>,
}

/// Everything that keeps a file from matching an architecture, found in one pass over the header.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MismatchReport {
    pub path: PathBuf,
    /// The architecture the file was checked against, e.g. `resnet50`.
    pub arch: String,
    /// Tensors the architecture needs that the file lacks, with the expected shape.
    pub missing: Vec<(String, Vec<usize>)>,
    /// Tensors in the file that the architecture does not use.
    pub unexpected: Vec<String>,
    pub shape_mismatches: Vec<ShapeMismatch>,
    /// Tensors whose dtype is not a float type, with the dtype found.
    pub bad_dtypes: Vec<(String, String)>,
    /// File tensors that the detected naming scheme does not map to any of ours.
    pub unmapped: Vec<String>,
    /// The detected naming scheme (`torchvision`, `transformers`).
    pub scheme: &'static str,
    /// Presets whose tensors the file matches exactly, if any.
    pub matching_presets: Vec<String>,
    /// A prefix every tensor name of the file starts with, without which the file matches
    /// (`module.` of a DistributedDataParallel checkpoint): [`crate::LoadOptions::strip_prefix`].
    pub strip_prefix: Option<String>,
}

impl MismatchReport {
    /// True when nothing is wrong.
    pub fn is_empty(&self) -> bool {
        self.missing.is_empty()
            && self.unexpected.is_empty()
            && self.shape_mismatches.is_empty()
            && self.bad_dtypes.is_empty()
            && self.unmapped.is_empty()
    }
}

const SHOWN: usize = 8;

fn list<T>(
    f: &mut fmt::Formatter<'_>,
    title: &str,
    items: &[T],
    show: impl Fn(&T) -> String,
) -> fmt::Result {
    if items.is_empty() {
        return Ok(());
    }
    write!(f, "\n  {} {title}:", items.len())?;
    for item in items.iter().take(SHOWN) {
        write!(f, "\n    {}", show(item))?;
    }
    if items.len() > SHOWN {
        write!(f, "\n    ... and {} more", items.len() - SHOWN)?;
    }
    Ok(())
}

impl fmt::Display for MismatchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "weights file {} ({} names) does not match architecture {}:",
            self.path.display(),
            self.scheme,
            self.arch
        )?;
        list(f, "missing tensors", &self.missing, |(n, s)| {
            format!("{n} {s:?}")
        })?;
        list(f, "unexpected tensors", &self.unexpected, |n| n.clone())?;
        let unmapped = format!("tensors no {} rule maps", self.scheme);
        list(f, &unmapped, &self.unmapped, |n| n.clone())?;
        list(f, "shape mismatches", &self.shape_mismatches, |m| {
            format!(
                "{}: expected {:?}, file has {:?}",
                m.name, m.expected, m.found
            )
        })?;
        list(
            f,
            "tensors with a non-float dtype",
            &self.bad_dtypes,
            |(n, d)| format!("{n}: {d}"),
        )?;
        if let Some(prefix) = &self.strip_prefix {
            let ddp = if prefix == "module." {
                " (a DistributedDataParallel checkpoint)"
            } else {
                ""
            };
            return write!(
                f,
                "\nhint: every tensor name starts with '{prefix}'{ddp}, and without it the file matches; load it with LoadOptions::strip_prefix = Some(\"{prefix}\")"
            );
        }
        match self.matching_presets.as_slice() {
            [] => write!(f, "\nhint: is this a checkpoint for another architecture or another naming scheme (torchvision names are expected)?"),
            names => write!(f, "\nhint: the file matches {}; load it with that preset's ResNetConfig (ResNetConfig::preset)", names.join(", ")),
        }
    }
}

/// Why pretrained weights could not be resolved, downloaded or loaded.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// The name is no row of the weights table.
    #[error("unknown model '{name}'{suggestion}; registry::all() lists every name")]
    UnknownModel { name: String, suggestion: String },
    /// A row of the weights table is invalid (a bug in the crate's `registry.toml`).
    #[error("weights table row {row}: {reason}")]
    Registry { row: String, reason: String },
    /// A repository id, revision or file name that is not safe to use as a path.
    #[error("invalid {what} '{value}': {reason}")]
    InvalidName {
        what: &'static str,
        value: String,
        reason: &'static str,
    },
    /// Offline mode and the file is not in the cache.
    #[error("{target} is not in the cache {cache} and offline mode is on (HubOptions::offline, which HubOptions::from_env sets from HF_HUB_OFFLINE); run once with network access")]
    NotCached {
        /// `owner/name/file@revision`
        target: String,
        cache: PathBuf,
    },
    /// The Hub answered with an error or could not be reached.
    #[error("downloading {target}{hint}")]
    Http {
        /// `owner/name/file from https://endpoint`
        target: String,
        hint: &'static str,
        /// A connection failure or a 5xx answer: a cached copy may be used instead.
        transient: bool,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The server sent something we refuse to trust (a header that is not a hash, a body whose size
    /// or sha256 differs from the announced one).
    #[error("downloading {target}: {reason}; nothing was written to the cache")]
    Integrity { target: String, reason: String },
    /// No data arrived for the configured timeout.
    #[error("downloading {target}: no data for {seconds} s, giving up (set RESNET_ZOO_HUB_TIMEOUT to wait longer)")]
    Timeout { target: String, seconds: u64 },
    /// The body arrived slower than [`crate::HubOptions::min_rate`] over a whole window.
    #[error("downloading {target}: {rate} bytes/s over the last {seconds:.1} s, below the minimum of {min_rate} bytes/s ({done} of {total} bytes received), giving up; nothing was written to the cache\nhint: set RESNET_ZOO_HUB_MIN_RATE to a lower rate in bytes/s (0 disables the check)")]
    TooSlow {
        target: String,
        rate: u64,
        min_rate: u64,
        seconds: f64,
        done: u64,
        total: u64,
    },
    /// The body did not arrive before [`crate::HubOptions::deadline`].
    #[error("downloading {target}: not finished after {seconds} s ({done} of {total} bytes received), giving up; nothing was written to the cache\nhint: the limit is RESNET_ZOO_HUB_TIMEOUT plus the size at RESNET_ZOO_HUB_MIN_RATE bytes/s; set RESNET_ZOO_HUB_DEADLINE (seconds) to allow longer")]
    DeadlineExceeded {
        target: String,
        seconds: u64,
        done: u64,
        total: u64,
    },
    /// A cache file or folder could not be read or written.
    #[error("cache {path}")]
    Cache {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The downloaded file could not be loaded.
    #[error(transparent)]
    Load(Box<LoadError>),
}

impl From<LoadError> for HubError {
    fn from(e: LoadError) -> Self {
        HubError::Load(Box::new(e))
    }
}
