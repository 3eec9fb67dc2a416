//! Every subcommand's `--help` ends with examples and its exit codes (`src/cli/help.rs`; the
//! unit test in `src/main.rs` parses every example), and the binary returns the codes it lists.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod embed_support;

use std::process::Output;

use embed_support::{run, stderr, temp_dir, weights, zoo};

const SUBCOMMANDS: [&str; 8] = [
    "classify",
    "list",
    "info",
    "convert",
    "embed",
    "embed-merge",
    "similar",
    "bench",
];

fn zoo_run(args: &[&str]) -> Output {
    let mut cmd = zoo(args[0]);
    cmd.args(&args[1..]).env("HF_HUB_OFFLINE", "1");
    run(cmd)
}

#[test]
fn every_help_lists_examples_and_exit_codes() {
    for sub in SUBCOMMANDS {
        for flag in ["--help", "-h"] {
            let o = zoo_run(&[sub, flag]);
            assert_eq!(o.status.code(), Some(0), "{sub} {flag}");
            let help = String::from_utf8(o.stdout).unwrap();
            let examples = help.find("Examples:\n").expect("Examples");
            let codes = help.find("Exit codes:\n").expect("Exit codes");
            assert!(examples < codes, "{sub}: {help}");
            assert!(
                help[examples..codes].contains(&format!("  resnet-zoo {sub} ")),
                "{sub}: {help}"
            );
            assert!(help[codes..].contains("  2  usage error"), "{sub}: {help}");
        }
        // What the help calls a usage error is exit 2: clap's own errors too.
        let o = zoo_run(&[sub, "--no-such-flag"]);
        assert_eq!(o.status.code(), Some(2), "{sub}: {}", stderr(&o));
    }
    let top = zoo_run(&["--help"]);
    assert!(String::from_utf8(top.stdout)
        .unwrap()
        .contains("Exit codes:"));
}

/// The 1s and 2s the help texts name, one case each.
#[test]
fn listed_exit_codes_are_the_real_ones() {
    let dir = temp_dir("help-codes");
    let w = weights(&dir);
    let w = w.to_str().unwrap();
    let missing = dir.join("missing.jpg");
    let missing = missing.to_str().unwrap();
    let out = dir.join("out.safetensors");
    let out = out.to_str().unwrap();
    let local = ["--arch", "resnet20", "--weights", w];
    for (args, code) in [
        (vec!["info", "--arch", "resnet5O"], 2),
        (vec!["convert", missing, out], 1),
        (vec!["similar", "--index", missing, missing], 1),
        (vec!["bench", "--arch", "resnet20", "--weights", missing], 1),
        (vec!["embed", "--out", out, missing], 2),
        (vec!["embed-merge", "--out", out, missing], 1),
    ] {
        let mut args = args;
        if args[0] == "embed" {
            args.splice(1..1, local);
        }
        let o = zoo_run(&args);
        assert_eq!(o.status.code(), Some(code), "{args:?}: {}", stderr(&o));
        assert!(
            stderr(&o).starts_with("error: "),
            "{args:?}: {}",
            stderr(&o)
        );
    }
}
