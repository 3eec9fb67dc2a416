//! The `resnet-zoo` command line.
//!
//! Exit codes: 0 success, 1 some inputs (or the model) failed, 2 usage errors.

mod cli;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Large buffers (weights, activations) on transparent huge pages: see `resnet_zoo::alloc`.
#[global_allocator]
static ALLOC: resnet_zoo::alloc::HugePageAlloc = resnet_zoo::alloc::HugePageAlloc;

#[derive(Parser)]
#[command(
    name = "resnet-zoo",
    version,
    about = "ResNet family on Candle: classify images with PyTorch-exact models"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the top-k ImageNet classes of each image.
    Classify(cli::classify::ClassifyArgs),
    /// List the architectures, or with --pretrained the pretrained weights.
    List(cli::list::ListArgs),
    /// Parameters, multiply-accumulates, output stride and feature channels of an architecture.
    Info(cli::info::InfoArgs),
    /// Convert a PyTorch .pth checkpoint to .safetensors without Python and without running its code.
    Convert(cli::convert::ConvertArgs),
    /// Pooled embeddings of images and folders into one .safetensors file (resumable, shardable).
    Embed(cli::embed::EmbedArgs),
    /// Join the files of `embed --shard I/N` into the file one machine would have written.
    EmbedMerge(cli::embed::MergeArgs),
    /// The images of an embeddings file nearest to query images (cosine similarity).
    Similar(cli::embed::SimilarArgs),
    /// Time loading and forward passes of a model on one input (see benches/compare.py).
    Bench(cli::bench::BenchArgs),
}

fn main() -> ExitCode {
    // Candle attaches a backtrace to its errors whenever RUST_BACKTRACE is set, and prints it as
    // part of the message: a usage error would end in a page of stack frames. Errors are reported
    // by their messages; panics still honour RUST_BACKTRACE, and RUST_LIB_BACKTRACE=1 brings the
    // errors' backtraces back. Set before any thread exists and before std reads the variable.
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        std::env::set_var("RUST_LIB_BACKTRACE", "0");
    }
    // `resnet-zoo list | head`: a closed stdout ends the process quietly, as it does any Unix
    // tool, instead of `println!` panicking on EPIPE (Rust ignores SIGPIPE by default).
    #[cfg(unix)]
    // SAFETY: setting a signal's disposition to the default has no preconditions; it runs before
    // any other thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Classify(args) => cli::classify::run(args),
        Command::List(args) => cli::list::run(args),
        Command::Convert(args) => cli::convert::run(args),
        Command::Info(args) => cli::info::run(args),
        Command::Embed(args) => cli::embed::run(args),
        Command::EmbedMerge(args) => cli::embed::merge(args),
        Command::Similar(args) => cli::embed::similar(args),
        Command::Bench(args) => cli::bench::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", cli::error_chain(e.as_ref()));
            if e.is::<cli::Usage>() {
                ExitCode::from(2)
            } else {
                ExitCode::from(1)
            }
        }
    }
}
