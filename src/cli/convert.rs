//! `resnet-zoo convert IN.pth OUT.safetensors`.

use std::path::PathBuf;
use std::process::ExitCode;

use resnet_zoo::hub;

#[derive(clap::Args, Debug)]
pub struct ConvertArgs {
    /// PyTorch checkpoint written by torch.save (zip format). Its pickle is parsed, never executed;
    /// anything but plain tensors is refused.
    pub input: PathBuf,
    /// Output .safetensors file, written atomically.
    pub output: PathBuf,
    /// Convert the dict of tensors under this key (e.g. state_dict of a training checkpoint).
    #[arg(long)]
    pub key: Option<String>,
    /// Remove this prefix from the tensor names that have it, e.g. `module.` of a checkpoint
    /// saved from DistributedDataParallel.
    #[arg(long, value_name = "PREFIX")]
    pub strip_prefix: Option<String>,
}

pub fn run(args: &ConvertArgs) -> anyhow::Result<ExitCode> {
    let n = hub::convert_pth_with(
        &args.input,
        &args.output,
        args.key.as_deref(),
        args.strip_prefix.as_deref(),
    )?;
    eprintln!("wrote {n} tensors to {}", args.output.display());
    Ok(ExitCode::SUCCESS)
}
