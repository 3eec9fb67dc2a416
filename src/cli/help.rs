//! The `Examples:` and `Exit codes:` sections at the end of each subcommand's `--help`.
//!
//! The codes are what `main` returns: 0 on success, 1 when a subcommand reports that some inputs
//! failed or an error that is not a [`super::Usage`] ends it, 2 for a [`super::Usage`] error and
//! for clap's own (unknown flag, bad value). Every example line is parsed by the unit test in
//! `main.rs`, so none of them goes stale.

pub const TOP: &str = "\
Run `resnet-zoo <COMMAND> --help` for each command's examples.

Exit codes:
  0  success
  1  some inputs failed (each one reported, the others processed), or the model or a file failed
  2  usage error: a bad flag or value, an unknown name (no backtrace, whatever RUST_BACKTRACE says)";

pub const CLASSIFY: &str = "\
Examples:
  resnet-zoo classify --model resnet50.tv2_in1k cat.jpg dog.png
  resnet-zoo classify --model resnet50 photos/                 # a folder, recursively
  resnet-zoo classify --arch resnet50 --weights resnet50.safetensors --json cat.jpg
  resnet-zoo classify --model resnet50 --format csv --top-k 3 photos/ > top3.csv
  resnet-zoo classify --model resnet50 - < cat.jpg             # one image on stdin
  find photos -name '*.jpg' | resnet-zoo classify --model resnet50 --format jsonl -
  resnet-zoo classify --model resnet50 --cam maps/ cat.jpg     # maps/cat.<class>.png

Exit codes:
  0  every image was classified
  1  some images could not be read (each reported on stderr and in json/jsonl; the others are
     classified), or the model could not be loaded or run
  2  usage error: a bad flag or value, an unknown --model/--arch, - given twice, no images in the
     inputs, --cam naming a file";

pub const LIST: &str = "\
Examples:
  resnet-zoo list
  resnet-zoo list --pretrained
  resnet-zoo list --pretrained --json

Exit codes:
  0  success
  1  the built-in weights table could not be read
  2  usage error: a bad flag";

pub const INFO: &str = "\
Examples:
  resnet-zoo info --arch resnet50
  resnet-zoo info --arch resnext50_32x4d --size 160 --json

Exit codes:
  0  success
  2  usage error: a bad flag or value, an unknown --arch";

pub const CONVERT: &str = "\
Examples:
  resnet-zoo convert resnet50.pth resnet50.safetensors
  resnet-zoo convert checkpoint.pth model.safetensors --key state_dict --strip-prefix module.

Exit codes:
  0  the file was written
  1  the checkpoint could not be read or holds anything but tensors (nothing is written)
  2  usage error: a bad flag";

pub const EMBED: &str = "\
Examples:
  resnet-zoo embed --model resnet50 --out photos.safetensors photos/
  resnet-zoo embed --model resnet50 --normalize --out photos.safetensors a.jpg photos/
  resnet-zoo embed --model resnet50 --shard 0/4 --out part0.safetensors photos/

Exit codes:
  0  every image was embedded
  1  some images could not be embedded (listed in OUT.failures.tsv; the other rows are written),
     or the model, OUT.partial/ or the output could not be read or written
  2  usage error: a bad flag or value, an input that does not exist, no images in the inputs, an
     OUT.partial/ of another run or not made by resnet-zoo";

pub const EMBED_MERGE: &str = "\
Examples:
  resnet-zoo embed-merge --out photos.safetensors part0.safetensors part1.safetensors

Exit codes:
  0  the shards were joined and no image had failed
  1  the joined file lists images that could not be embedded (in OUT.failures.tsv), or a shard
     could not be read
  2  usage error: files that are not shards of one run (another width, missing rows or shards)";

pub const SIMILAR: &str = "\
Examples:
  resnet-zoo similar --index photos.safetensors query.jpg
  resnet-zoo similar --index photos.safetensors --top-k 10 --json a.jpg b.jpg
  resnet-zoo similar --index photos.safetensors --weights moved/resnet50.safetensors query.jpg

Exit codes:
  0  every query was answered
  1  some queries could not be read (the others are answered), or the index or its model could
     not be loaded
  2  usage error: a bad flag or value";

pub const BENCH: &str = "\
Examples:
  resnet-zoo bench --arch resnet50 --weights resnet50.safetensors --batch-size 8
  resnet-zoo bench --model resnet18 --repeats 20 --json --out output.safetensors

Exit codes:
  0  success
  1  the model or --input could not be loaded or run, or --out could not be written
  2  usage error: a bad flag or value, an unknown --model/--arch";
