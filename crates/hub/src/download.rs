//! Downloads from the Hugging Face Hub into the verified cache.
//!
//! `hf-hub` speaks the protocol (endpoint, `resolve` URLs, redirects, token, retries); integrity is
//! ours. hf-hub 1.0.0's own cache stores error bodies as weights, checks no size or hash, builds paths
//! from server headers and has no timeout, so this module uses only its metadata (HEAD) and streaming
//! (GET, status checked) calls and does the rest:
//!
//! 1. HEAD: the commit the revision points to and the file's sha256 (`X-Linked-Etag`) and size. Both
//!    must be well-formed hashes before they are used in a path.
//! 2. Under an exclusive file lock per blob (threads and processes), check the cache again: concurrent
//!    callers download once.
//! 3. GET the pinned commit, streaming into a fresh temporary file in the cache while hashing; every
//!    chunk must arrive within the timeout, every timeout-long window must bring at least
//!    [`HubOptions::min_rate`] bytes a second, and the whole body must arrive before a deadline
//!    proportional to the size ([`HubOptions::deadline`]): a server trickling one byte a second is
//!    given up on, and its partial file removed.
//! 4. Size and sha256 must equal the announced ones; then fsync and an atomic rename into `blobs/`.
//!    A killed download leaves only a `*.incomplete` file no reader ever opens (removed by the next
//!    download of that blob).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures::StreamExt;
use sha2::{Digest, Sha256};

use crate::cache::{check_file, check_repo, check_revision, is_commit, is_sha256, HubCache};
use crate::error::HubError;

/// Progress of one download, for a progress bar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// A download of `total` bytes starts.
    Start { total: u64 },
    /// `done` bytes of the file have arrived.
    Advance { done: u64 },
    /// The file is verified and in the cache.
    Finish,
}

/// Where and how to download. [`HubOptions::from_env`] reads the variables Hugging Face tools use.
#[derive(Debug, Clone)]
pub struct HubOptions {
    /// Hub URL (`HF_ENDPOINT`, default `https://huggingface.co`).
    pub endpoint: String,
    /// Cache root (see [`crate::cache::default_cache_dir`]).
    pub cache_dir: PathBuf,
    /// Access token (`HF_TOKEN`); `None` lets hf-hub look in its usual places.
    pub token: Option<String>,
    /// Never touch the network (`HF_HUB_OFFLINE=1` in [`HubOptions::from_env`]).
    pub offline: bool,
    /// Give up when no byte arrives for this long (`RESNET_ZOO_HUB_TIMEOUT`, seconds; default 30).
    pub timeout: Duration,
    /// Retries of a failed request on 5xx, 429 and connection errors (with backoff).
    pub retries: usize,
    /// Slowest accepted transfer, in bytes per second, measured over each [`HubOptions::timeout`]
    /// of the body (`RESNET_ZOO_HUB_MIN_RATE`; default 16384, 16 KiB/s; 0 disables the check).
    pub min_rate: u64,
    /// Longest a body may take to arrive (`RESNET_ZOO_HUB_DEADLINE`, seconds). `None` (the
    /// default): [`HubOptions::timeout`] plus the announced size at [`HubOptions::min_rate`], and no
    /// deadline when `min_rate` is 0.
    pub deadline: Option<Duration>,
}

/// Default of [`HubOptions::min_rate`].
pub const DEFAULT_MIN_RATE: u64 = 16 << 10;

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|s| s.trim().parse().ok())
}

fn env_flag(name: &str) -> bool {
    std::env::var(name)
        .map(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on"))
        .unwrap_or(false)
}

impl HubOptions {
    /// Options from `HF_ENDPOINT`, `HF_HUB_CACHE`/`HF_HOME`, `HF_TOKEN`, `HF_HUB_OFFLINE`,
    /// `RESNET_ZOO_HUB_TIMEOUT`, `RESNET_ZOO_HUB_MIN_RATE` and `RESNET_ZOO_HUB_DEADLINE`.
    pub fn from_env() -> Self {
        let endpoint = std::env::var("HF_ENDPOINT")
            .ok()
            .filter(|e| !e.is_empty())
            .unwrap_or_else(|| "https://huggingface.co".into());
        let timeout = env_u64("RESNET_ZOO_HUB_TIMEOUT")
            .filter(|&s| s > 0)
            .unwrap_or(30);
        Self {
            endpoint: endpoint.trim_end_matches('/').to_string(),
            cache_dir: crate::cache::default_cache_dir(),
            token: std::env::var("HF_TOKEN").ok().filter(|t| !t.is_empty()),
            offline: env_flag("HF_HUB_OFFLINE"),
            timeout: Duration::from_secs(timeout),
            retries: 2,
            min_rate: env_u64("RESNET_ZOO_HUB_MIN_RATE").unwrap_or(DEFAULT_MIN_RATE),
            deadline: env_u64("RESNET_ZOO_HUB_DEADLINE")
                .filter(|&s| s > 0)
                .map(Duration::from_secs),
        }
    }
}

/// What the Hub said about a file, validated.
struct Remote {
    commit: String,
    sha256: String,
    size: u64,
}

/// The local path of `repo@revision/file`, downloading and verifying it first if it is not cached.
/// `progress` is called as bytes arrive (only when a download happens).
pub fn fetch(
    opts: &HubOptions,
    repo: &str,
    revision: &str,
    file: &str,
    progress: &mut dyn FnMut(Progress),
) -> Result<PathBuf, HubError> {
    check_repo(repo)?;
    check_revision(revision)?;
    check_file(file)?;
    let cache = HubCache::new(&opts.cache_dir);
    let cached = cache.get(repo, revision, file);
    if opts.offline || (is_commit(revision) && cached.is_some()) {
        return cached.ok_or_else(|| HubError::NotCached {
            target: format!("{repo}/{file}@{revision}"),
            cache: opts.cache_dir.clone(),
        });
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| HubError::Cache {
            path: opts.cache_dir.clone(),
            source,
        })?;
    let client = Client::new(opts, repo, file)?;
    let remote = match rt.block_on(client.metadata(revision)) {
        Ok(remote) => remote,
        // Like huggingface_hub: when the Hub cannot be reached, a cached copy is good enough.
        Err(
            e @ (HubError::Http {
                transient: true, ..
            }
            | HubError::Timeout { .. }),
        ) => {
            return cached.ok_or(e);
        }
        Err(e) => return Err(e),
    };
    let path = download_locked(&rt, &client, &cache, &remote, progress)?;
    // A read-only cache that already holds the file still works: a ref we cannot update is fine.
    let _ = cache.set_ref(repo, revision, &remote.commit);
    Ok(path)
}

/// Steps 2-4 of the module doc, under the blob's lock.
fn download_locked(
    rt: &tokio::runtime::Runtime,
    client: &Client,
    cache: &HubCache,
    remote: &Remote,
    progress: &mut dyn FnMut(Progress),
) -> Result<PathBuf, HubError> {
    let (repo, file) = (client.repo.as_str(), client.file.as_str());
    let blob = cache.blob_path(repo, &remote.sha256);
    if blob.is_file() {
        return cache.link_snapshot(repo, &remote.commit, file, &remote.sha256);
    }
    let lock_path = cache.lock_path(repo, &remote.sha256);
    let lock = open_lock(&lock_path)?;
    lock.lock().map_err(|source| HubError::Cache {
        path: lock_path.clone(),
        source,
    })?;
    // Another thread or process may have finished the download while we waited for the lock.
    if blob.is_file() {
        return cache.link_snapshot(repo, &remote.commit, file, &remote.sha256);
    }
    cache.remove_stale_temps(repo, &remote.sha256);
    let tmp = cache.temp_path(repo, &remote.sha256)?;
    let result = rt
        .block_on(client.stream_to(&tmp, remote, progress))
        .and_then(|()| cache.commit_blob(repo, &remote.commit, file, &remote.sha256, &tmp));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    } else {
        progress(Progress::Finish);
    }
    result
}

fn open_lock(path: &Path) -> Result<File, HubError> {
    let err = |source| HubError::Cache {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(err)
}

/// An hf-hub client for one file, with our timeouts.
struct Client {
    repo: String,
    file: String,
    endpoint: String,
    timeout: Duration,
    min_rate: u64,
    deadline: Option<Duration>,
    inner: hf_hub::HFRepository<hf_hub::RepoTypeModel>,
}

impl Client {
    fn new(opts: &HubOptions, repo: &str, file: &str) -> Result<Self, HubError> {
        let http = |source: Box<dyn std::error::Error + Send + Sync>| HubError::Http {
            target: format!("{repo}/{file} from {}", opts.endpoint),
            hint: "",
            transient: false,
            source,
        };
        // reqwest's read timeout covers waiting for headers and for each body read.
        let reqwest = reqwest::Client::builder()
            .user_agent(concat!(
                "resnet-zoo/",
                env!("CARGO_PKG_VERSION"),
                "; hf-hub/1.0.0"
            ))
            .connect_timeout(opts.timeout)
            .read_timeout(opts.timeout)
            .build()
            .map_err(|e| http(Box::new(e)))?;
        let mut builder = hf_hub::HFClient::builder()
            .endpoint(opts.endpoint.clone())
            .cache_dir(opts.cache_dir.clone())
            .cache_enabled(false)
            .client(reqwest)
            .retry_max_attempts(opts.retries)
            .retry_base_delay(Duration::from_millis(200));
        if let Some(token) = &opts.token {
            builder = builder.token(token.clone());
        }
        let client = builder.build().map_err(|e| http(Box::new(e)))?;
        let (owner, name) = repo.split_once('/').unwrap_or((repo, ""));
        Ok(Self {
            repo: repo.into(),
            file: file.into(),
            endpoint: opts.endpoint.clone(),
            timeout: opts.timeout,
            min_rate: opts.min_rate,
            deadline: opts.deadline,
            inner: client.model(owner, name),
        })
    }

    fn http_error(&self, e: hf_hub::HFError) -> HubError {
        // reqwest's own read or connect timeout is the same event as ours: no data in time.
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        while let Some(c) = cause {
            if c.downcast_ref::<reqwest::Error>()
                .is_some_and(reqwest::Error::is_timeout)
            {
                return self.timed_out();
            }
            cause = c.source();
        }
        let hint = match &e {
            hf_hub::HFError::AuthRequired { .. } | hf_hub::HFError::Forbidden { .. } => {
                " (gated or private repositories need HF_TOKEN)"
            }
            hf_hub::HFError::EntryNotFound { .. } | hf_hub::HFError::RepoNotFound { .. } => {
                " (check the model name: the weights table row's repository, revision and file)"
            }
            hf_hub::HFError::Request { .. } => {
                " (check the network, or set HubOptions::offline to use a filled cache)"
            }
            _ => "",
        };
        let transient = match &e {
            hf_hub::HFError::Request { .. } => true,
            hf_hub::HFError::Http { context } => context.status.is_server_error(),
            _ => false,
        };
        HubError::Http {
            target: format!("{}/{} from {}", self.repo, self.file, self.endpoint),
            hint,
            transient,
            source: Box::new(e),
        }
    }

    fn integrity(&self, reason: String) -> HubError {
        HubError::Integrity {
            target: format!("{}/{}", self.repo, self.file),
            reason,
        }
    }

    /// The answer to a request (its status and headers) must come within the timeout, retries of
    /// quick failures included, so "no data for 30 s" is what the user waited (it was 60 s: a
    /// stalled request was retried under a doubled limit).
    fn timed_out(&self) -> HubError {
        HubError::Timeout {
            target: format!("{}/{}", self.repo, self.file),
            seconds: self.timeout.as_secs(),
        }
    }

    /// How long the body of `size` bytes may take: the configured deadline, or the timeout plus
    /// the size at the minimum rate.
    fn body_deadline(&self, size: u64) -> Option<Duration> {
        self.deadline.or_else(|| {
            (self.min_rate > 0)
                .then(|| self.timeout + Duration::from_secs(size.div_ceil(self.min_rate)))
        })
    }

    async fn metadata(&self, revision: &str) -> Result<Remote, HubError> {
        let request = self
            .inner
            .get_file_metadata()
            .filepath(self.file.clone())
            .revision(revision)
            .send();
        let meta = tokio::time::timeout(self.timeout, request)
            .await
            .map_err(|_| self.timed_out())?
            .map_err(|e| self.http_error(e))?;
        if !is_commit(&meta.commit_hash) {
            return Err(self.integrity(format!(
                "the server's X-Repo-Commit {:?} is not a 40-hex commit id",
                meta.commit_hash
            )));
        }
        if !is_sha256(&meta.etag) {
            return Err(self.integrity(format!(
                "the server's ETag {:?} is not a sha256 (X-Linked-Etag of an LFS file), so the download could not be verified",
                meta.etag
            )));
        }
        Ok(Remote {
            commit: meta.commit_hash,
            sha256: meta.etag,
            size: meta.file_size,
        })
    }

    async fn stream_to(
        &self,
        tmp: &Path,
        remote: &Remote,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<(), HubError> {
        let io = |source| HubError::Cache {
            path: tmp.to_path_buf(),
            source,
        };
        let request = self
            .inner
            .download_file_stream()
            .filename(self.file.clone())
            .revision(remote.commit.clone())
            .send();
        let (_, stream) = tokio::time::timeout(self.timeout, request)
            .await
            .map_err(|_| self.timed_out())?
            .map_err(|e| self.http_error(e))?;
        let mut stream = std::pin::pin!(stream);
        let mut out = std::io::BufWriter::with_capacity(1 << 20, File::create(tmp).map_err(io)?);
        let mut hasher = Sha256::new();
        let mut done = 0u64;
        progress(Progress::Start { total: remote.size });
        let started = Instant::now();
        let limit = self.body_deadline(remote.size);
        let mut window = (started, 0u64); // start and bytes done at the start of the rate window
        let target = || format!("{}/{}", self.repo, self.file);
        loop {
            let left = limit.map(|l| l.saturating_sub(started.elapsed()));
            let wait = left.map_or(self.timeout, |left| left.min(self.timeout));
            let next = tokio::time::timeout(wait, stream.next()).await;
            let chunk = match next {
                Ok(chunk) => chunk,
                Err(_) if wait < self.timeout || left.is_some_and(|l| l.is_zero()) => {
                    return Err(HubError::DeadlineExceeded {
                        target: target(),
                        seconds: limit.unwrap_or_default().as_secs(),
                        done,
                        total: remote.size,
                    })
                }
                Err(_) => return Err(self.timed_out()),
            };
            let Some(chunk) = chunk else { break };
            let chunk = chunk.map_err(|e| self.http_error(e))?;
            done += chunk.len() as u64;
            let elapsed = window.0.elapsed();
            if self.min_rate > 0 && elapsed >= self.timeout {
                let rate = ((done - window.1) as f64 / elapsed.as_secs_f64()) as u64;
                if rate < self.min_rate && done < remote.size {
                    return Err(HubError::TooSlow {
                        target: target(),
                        rate,
                        min_rate: self.min_rate,
                        seconds: elapsed.as_secs_f64(),
                        done,
                        total: remote.size,
                    });
                }
                window = (Instant::now(), done);
            }
            if done > remote.size {
                return Err(self.integrity(format!(
                    "the server sent more than the announced {} bytes",
                    remote.size
                )));
            }
            hasher.update(&chunk);
            out.write_all(&chunk).map_err(io)?;
            progress(Progress::Advance { done });
        }
        if done != remote.size {
            return Err(self.integrity(format!(
                "received {done} bytes, the server announced {} (truncated transfer)",
                remote.size
            )));
        }
        let sha: String = hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        if sha != remote.sha256 {
            return Err(self.integrity(format!(
                "sha256 of the received bytes is {sha}, the server announced {}",
                remote.sha256
            )));
        }
        let file = out.into_inner().map_err(|e| io(e.into_error()))?;
        file.sync_all().map_err(io)
    }
}
