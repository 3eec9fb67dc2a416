//! The `resnet-zoo` command line.
//!
//! Exit codes: 0 success, 1 some inputs (or the model) failed, 2 usage errors (`cli::help`).

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
    about = "ResNet family on Candle: classify images with PyTorch-exact models",
    after_help = cli::help::TOP
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the top-k classes of each image (files, folders, or stdin), batch by batch.
    #[command(after_help = cli::help::CLASSIFY)]
    Classify(cli::classify::ClassifyArgs),
    /// List the architectures, or with --pretrained the pretrained weights.
    #[command(after_help = cli::help::LIST)]
    List(cli::list::ListArgs),
    /// Parameters, multiply-accumulates, output stride and feature channels of an architecture.
    #[command(after_help = cli::help::INFO)]
    Info(cli::info::InfoArgs),
    /// Convert a PyTorch .pth checkpoint to .safetensors without Python and without running its code.
    #[command(after_help = cli::help::CONVERT)]
    Convert(cli::convert::ConvertArgs),
    /// Pooled embeddings of images and folders into one .safetensors file (resumable, shardable).
    #[command(after_help = cli::help::EMBED)]
    Embed(cli::embed::EmbedArgs),
    /// Join the files of `embed --shard I/N` into the file one machine would have written.
    #[command(after_help = cli::help::EMBED_MERGE)]
    EmbedMerge(cli::embed::MergeArgs),
    /// The images of an embeddings file nearest to query images (cosine similarity).
    #[command(after_help = cli::help::SIMILAR)]
    Similar(cli::embed::SimilarArgs),
    /// Time loading and forward passes of a model on one input (see benches/compare.py).
    #[command(after_help = cli::help::BENCH)]
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

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::Cli;

    /// The arguments of a `resnet-zoo ...` command on a line (up to a comment, pipe or
    /// redirection), or None when the line runs no such command.
    fn example_args(line: &str) -> Option<Vec<&str>> {
        let (_, command) = line.split_once("resnet-zoo ")?;
        Some(
            std::iter::once("resnet-zoo")
                .chain(command.split_whitespace())
                .take_while(|a| !matches!(*a, "#" | "|" | "<" | ">"))
                .collect(),
        )
    }

    fn assert_parses(args: &[&str], line: &str) {
        if let Err(e) = Cli::try_parse_from(args) {
            panic!("example does not parse: {line}\n{e}");
        }
    }

    /// Every subcommand's help ends with examples and exit codes, and every example parses.
    #[test]
    fn every_help_has_examples_that_parse_and_the_exit_codes() {
        let mut cli = Cli::command();
        cli.build();
        let names: Vec<String> = cli
            .get_subcommands()
            .map(|c| c.get_name().to_string())
            .filter(|n| n != "help")
            .collect();
        assert_eq!(names.len(), 8, "{names:?}");
        for name in names {
            let sub = cli.find_subcommand_mut(&name).expect("listed above");
            let help = sub.render_long_help().to_string();
            let (_, tail) = help
                .split_once("Examples:\n")
                .expect("an Examples: section");
            let (examples, codes) = tail.split_once("Exit codes:\n").expect("exit codes");
            for code in ["  0  ", "  2  usage error"] {
                assert!(codes.contains(code), "{name}: {code:?} missing:\n{codes}");
            }
            let mut parsed = 0;
            for line in examples.lines() {
                if let Some(args) = example_args(line) {
                    assert_eq!(args[1], name, "{line}");
                    assert_parses(&args, line);
                    parsed += 1;
                }
            }
            assert!(parsed > 0, "{name}: no examples");
        }
    }

    /// The commands in README.md's shell blocks parse too.
    #[test]
    fn readme_commands_parse() {
        let mut in_sh = false;
        let mut parsed = 0;
        for line in include_str!("../README.md").lines() {
            if line.starts_with("```") {
                in_sh = line == "```sh";
                continue;
            }
            if let Some(args) = example_args(line).filter(|_| in_sh) {
                assert_parses(&args, line);
                parsed += 1;
            }
        }
        assert!(parsed >= 14, "{parsed} README commands found");
    }
}
