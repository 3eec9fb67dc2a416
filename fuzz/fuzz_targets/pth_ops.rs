//! Structure-aware fuzzing of the `.pth` reader: an `arbitrary` sequence of pickle operations
//! (containers, calls, memo traffic, huge declared lengths, whole `_rebuild_tensor_v2` tensors with
//! fuzzed shapes, strides and offsets) is serialised into opcodes and wrapped, with fuzzed
//! storages, in a valid `torch.save` zip, so inputs get past the zip reader and deep into the
//! pickle parser, the limits and the tensor gatherer. A successful read must hold exactly the
//! bytes its shapes promise.
#![no_main]

#[path = "../../tests/support/torch_pth.rs"]
mod torch_pth;

use std::path::Path;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use resnet_zoo::hub::read_pth_bytes;
use torch_pth::{pth, Pickle};

const MODULES: &[&str] = &["torch._utils", "torch", "collections", "builtins", "posix"];
const NAMES: &[&str] = &[
    "_rebuild_tensor_v2",
    "_rebuild_parameter",
    "FloatStorage",
    "HalfStorage",
    "LongStorage",
    "BoolStorage",
    "OrderedDict",
    "system",
];
const STRINGS: &[&str] = &[
    "storage",
    "0",
    "1",
    "cpu",
    "state_dict",
    "_metadata",
    "fc.weight",
    "fc.bias",
];

/// A number that is often small, sometimes extreme.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum Num {
    Small(u8),
    Pow2(u8),
    Any(i64),
}

impl Num {
    fn get(self) -> i64 {
        match self {
            Num::Small(v) => i64::from(v % 16),
            Num::Pow2(p) => 1i64.wrapping_shl(u32::from(p % 64)),
            Num::Any(v) => v,
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Op {
    Global(u8, u8),
    StackGlobal(u8, u8),
    Str(u8),
    FreeStr(String),
    Int(Num),
    Float(f64),
    Bytes(Vec<u8>),
    /// A length opcode (`X`, `B`, `T`, 0x8c-0x8e, `U`, `C`, `LONG4`, `FRAME`) declaring `len`.
    Declared(u8, u64),
    Tensor {
        class: u8,
        key: u8,
        numel: Num,
        offset: Num,
        shape: Vec<Num>,
        stride: Vec<Num>,
    },
    Get(u8),
    LongGet(u32),
    Put(u8),
    Memoize,
    /// Structural opcodes without arguments, chosen from a list.
    Simple(u8),
    /// Any byte at all.
    Raw(u8),
    /// `n` copies of a structural opcode (deep nesting, long sequences).
    Repeat(u8, u16),
}

const SIMPLE: &[u8] = b"()]}tlduaesRb\x81Q0122N\x88\x89\x85\x86\x87.";

#[derive(Arbitrary, Debug)]
struct Input {
    ops: Vec<Op>,
    storages: Vec<(u8, Vec<u8>)>,
    with_key: bool,
}

fn pick<'a>(list: &[&'a str], i: u8) -> &'a str {
    list[usize::from(i) % list.len()]
}

fn ints(nums: &[Num]) -> Vec<i64> {
    nums.iter().take(6).map(|n| n.get()).collect()
}

fn serialise(ops: &[Op]) -> Vec<u8> {
    let mut p = Pickle::new();
    for op in ops {
        match op {
            Op::Global(m, n) => {
                p.global(pick(MODULES, *m), pick(NAMES, *n));
            }
            Op::StackGlobal(m, n) => {
                p.string(pick(MODULES, *m))
                    .string(pick(NAMES, *n))
                    .raw(&[0x93]);
            }
            Op::Str(i) => {
                p.string(pick(STRINGS, *i));
            }
            Op::FreeStr(s) => {
                p.string(s);
            }
            Op::Int(n) => {
                p.int(n.get());
            }
            Op::Float(f) => {
                p.raw(b"G").raw(&f.to_be_bytes());
            }
            Op::Bytes(b) => {
                p.raw(b"B").raw(&(b.len() as u32).to_le_bytes()).raw(b);
            }
            Op::Declared(kind, len) => {
                let (code, width) = match kind % 10 {
                    0 => (b'X', 4),
                    1 => (b'B', 4),
                    2 => (b'T', 4),
                    3 => (0x8c, 1),
                    4 => (0x8d, 8),
                    5 => (0x8e, 8),
                    6 => (b'U', 1),
                    7 => (b'C', 1),
                    8 => (0x8b, 4),
                    _ => (0x95, 8),
                };
                p.raw(&[code]).raw(&len.to_le_bytes()[..width]);
            }
            Op::Tensor {
                class,
                key,
                numel,
                offset,
                shape,
                stride,
            } => {
                let class = pick(&NAMES[2..6], *class);
                let key = pick(&STRINGS[1..3], *key);
                p.tensor(
                    class,
                    key,
                    numel.get(),
                    offset.get(),
                    &ints(shape),
                    &ints(stride),
                );
            }
            Op::Get(i) => {
                p.raw(&[b'h', *i]);
            }
            Op::LongGet(i) => {
                p.raw(b"j").raw(&i.to_le_bytes());
            }
            Op::Put(i) => {
                p.raw(&[b'q', *i]);
            }
            Op::Memoize => {
                p.raw(&[0x94]);
            }
            Op::Simple(i) => {
                p.raw(&[SIMPLE[usize::from(*i) % SIMPLE.len()]]);
            }
            Op::Raw(b) => {
                p.raw(&[*b]);
            }
            Op::Repeat(i, n) => {
                let code = SIMPLE[usize::from(*i) % SIMPLE.len()];
                p.raw(&vec![code; usize::from(*n) % 4096]);
            }
        }
    }
    p.finish()
}

fuzz_target!(|input: Input| {
    let pickle = serialise(&input.ops);
    let names: Vec<&str> = input
        .storages
        .iter()
        .take(4)
        .map(|(k, _)| pick(&STRINGS[1..3], *k))
        .collect();
    let storages: Vec<(&str, &[u8])> = names
        .iter()
        .zip(&input.storages)
        .map(|(n, (_, data))| (*n, data.as_slice()))
        .collect();
    let bytes = pth(&pickle, &storages);
    let key = input.with_key.then_some("state_dict");
    if let Ok(tensors) = read_pth_bytes(&bytes, Path::new("fuzz.pth"), key) {
        for t in tensors {
            let numel: usize = t.shape.iter().product();
            assert_eq!(t.data.len(), numel * t.dtype.bitsize() / 8, "{}", t.name);
        }
    }
});
