#!/usr/bin/env python3
"""resnet-zoo against PyTorch on one GPU: same weights, same input, interleaved runs.

Run by scripts/gpu-check.sh on a lent GPU machine (it builds nothing: the resnet-zoo binary comes
from `scripts/cuda-build.sh --bundle DIR`). Also runs on the CPU (`--device cpu --no-compile`) so
the script itself can be tried on any machine.

  python3 benches/gpu_compare.py --bin DIR/resnet-zoo --work target/gpu-check/bench \\
      --models resnet50,resnext50_32x4d --batches 1,32,128 --dtypes f32,f16,bf16 \\
      --markdown target/gpu-check/gpu-table.md

For each model: a torchvision module with seeded random weights and randomised BatchNorm
statistics, saved as safetensors; a seeded input per batch size. Engines:

- resnet-zoo: `resnet-zoo bench --arch M --weights W --input X --device D --dtype T --json` in a
  fresh process per measurement (its `times_ms`: one forward each, after warm-ups, synchronised);
- torch-eager: the module in the dtype, NCHW;
- torch-eager-cl: the same in channels-last memory format;
- torch-compile-cl: channels-last + torch.compile (default mode), at the largest batch only (each
  shape and dtype compiles anew, ~a minute each); compile time is left out of the timing.

f32 runs with TF32 off in PyTorch (cuDNN and matmul), as resnet-zoo computes f32 in f32. Rounds
interleave every (model, batch, dtype) cell and rotate the engine order. Each engine's output is
checked against PyTorch's f32 eager output: relative error max|ours - ref| / max|ref| within 1e-4
(f32), 2e-2 (f16), 1.5e-1 (bf16); a miss fails the run (exit 1) after the table is printed.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torchvision
from safetensors.torch import load_file, save_file

DTYPES = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}
TOLERANCE = {"f32": 1e-4, "f16": 2e-2, "bf16": 1.5e-1}
ENGINES = ["resnet-zoo", "torch-eager", "torch-eager-cl", "torch-compile-cl"]
SEED = 20261202


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def make_model(name: str) -> torch.nn.Module:
    """torchvision's `name` with seeded random weights and randomised BatchNorm statistics."""
    torch.manual_seed(SEED)
    model = getattr(torchvision.models, name)(weights=None)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return model.eval()


def prepare(name: str, batches: list[int], work: Path) -> tuple[Path, dict[int, Path]]:
    work.mkdir(parents=True, exist_ok=True)
    weights = work / f"{name}.safetensors"
    sd = {k: v.contiguous() for k, v in make_model(name).state_dict().items() if "num_batches_tracked" not in k}
    save_file(sd, str(weights))
    inputs = {}
    for b in batches:
        g = torch.Generator().manual_seed(SEED + b)
        path = work / f"{name}_input_b{b}.safetensors"
        save_file({"input": torch.randn(b, 3, 224, 224, generator=g)}, str(path))
        inputs[b] = path
    return weights, inputs


def rel_err(ours: torch.Tensor, ref: torch.Tensor) -> float:
    ours, ref = ours.double().cpu(), ref.double().cpu()
    return float((ours - ref).abs().max() / ref.abs().max())


def time_torch(fn, x, repeats: int, warmup: int, device: str) -> tuple[list[float], torch.Tensor]:
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    with torch.inference_mode():
        for _ in range(warmup):
            out = fn(x)
        sync()
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            out = fn(x)
            sync()
            times.append((time.perf_counter() - t) * 1e3)
    return times, out.float().cpu()


class TorchEngines:
    """The PyTorch modules of one model, built once per (dtype, memory format)."""

    def __init__(self, name: str, device: str):
        self.name, self.device = name, device
        self.cache: dict[tuple, object] = {}

    def fn(self, engine: str, dtype: str, batch: int):
        key = (engine, dtype, batch if engine == "torch-compile-cl" else None)
        if key not in self.cache:
            m = make_model(self.name).to(self.device, DTYPES[dtype])
            if engine != "torch-eager":
                m = m.to(memory_format=torch.channels_last)
            if engine == "torch-compile-cl":
                m = torch.compile(m)
            self.cache[key] = m
        return self.cache[key]

    def run(self, engine, dtype, batch, x_path, repeats, warmup):
        x = load_file(str(x_path))["input"].to(self.device, DTYPES[dtype])
        if engine != "torch-eager":
            x = x.contiguous(memory_format=torch.channels_last)
        fn = self.fn(engine, dtype, batch)
        return time_torch(fn, x, repeats, warmup, self.device)


def run_resnet_zoo(args, name, dtype, weights, x_path, out_path) -> list[float]:
    cmd = [str(args.bin), "bench", "--arch", name, "--weights", str(weights), "--input", str(x_path),
           "--device", args.device, "--dtype", dtype, "--repeats", str(args.repeats),
           "--warmup", str(args.warmup), "--out", str(out_path), "--json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: exit {proc.returncode}: {proc.stderr.strip()[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])["times_ms"]


def machine_line(args) -> str:
    if args.device.startswith("cuda"):
        props = torch.cuda.get_device_properties(0)
        try:
            smi = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=30, check=False).stdout.strip()
        except OSError:
            smi = "?"
        gpu = f"{props.name}, {props.total_memory / 2**30:.0f} GiB, driver {smi}, CUDA {torch.version.cuda}"
    else:
        gpu = f"CPU ({torch.get_num_threads()} torch threads)"
    return (f"{gpu}; torch {torch.__version__}, torchvision {torchvision.__version__}; "
            f"{args.rounds} rounds x {args.repeats} repeats after {args.warmup} warm-ups; TF32 off; "
            f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--bin", type=Path, required=True, help="the resnet-zoo binary (a cuda build for --device cuda)")
    p.add_argument("--work", type=Path, default=Path("target/gpu-check/bench"))
    p.add_argument("--models", default="resnet50,resnext50_32x4d")
    p.add_argument("--batches", default="1,32,128")
    p.add_argument("--dtypes", default="f32,f16,bf16")
    p.add_argument("--device", default="cuda")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--timeout", type=int, default=600, help="seconds per resnet-zoo process")
    p.add_argument("--no-compile", action="store_true", help="leave out torch-compile-cl")
    p.add_argument("--markdown", type=Path)
    args = p.parse_args()
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    models = args.models.split(",")
    batches = [int(b) for b in args.batches.split(",")]
    dtypes = args.dtypes.split(",")
    engines = [e for e in ENGINES if not (args.no_compile and e == "torch-compile-cl")]
    times: dict[tuple, list[float]] = {}
    errors: dict[tuple, float] = {}
    failures = []
    prepared = {m: prepare(m, batches, args.work) for m in models}
    torch_engines = {m: TorchEngines(m, args.device) for m in models}
    refs = {}
    for m in models:
        for b in batches:
            _, out = time_torch(torch_engines[m].fn("torch-eager", "f32", b),
                                load_file(str(prepared[m][1][b]))["input"].to(args.device), 1, 0, args.device)
            refs[(m, b)] = out
    for r in range(args.rounds):
        for m in models:
            weights, inputs = prepared[m]
            for b in batches:
                for dt in dtypes:
                    order = engines[r % len(engines):] + engines[:r % len(engines)]
                    for e in order:
                        if e == "torch-compile-cl" and b != max(batches):
                            continue
                        cell = (m, b, dt, e)
                        if e == "resnet-zoo":
                            out_path = args.work / f"out_{m}_b{b}_{dt}.safetensors"
                            t = run_resnet_zoo(args, m, dt, weights, inputs[b], out_path)
                            out = load_file(str(out_path))["output"]
                        else:
                            t, out = torch_engines[m].run(e, dt, b, inputs[b], args.repeats, args.warmup)
                        times.setdefault(cell, []).extend(t)
                        err = rel_err(out, refs[(m, b)])
                        errors[cell] = max(errors.get(cell, 0.0), err)
                        if err > TOLERANCE[dt]:
                            failures.append(f"{cell}: relative error {err:.2e} > {TOLERANCE[dt]:.0e}")
                        log(f"round {r + 1} {m} b{b} {dt} {e}: median {statistics.median(t):.2f} ms, err {err:.1e}")
    lines = [f"> {machine_line(args)}", "",
             "| model | batch | dtype | engine | img/s (median) | ms/batch | vs torch-eager-cl | vs torch-eager | rel err vs torch f32 |",
             "|---|---|---|---|---|---|---|---|---|"]
    for m in models:
        for b in batches:
            for dt in dtypes:
                rate = {e: b / (statistics.median(times[(m, b, dt, e)]) / 1e3)
                        for e in engines if (m, b, dt, e) in times}
                for e, v in rate.items():
                    ratio = lambda base: f"{v / rate[base]:.2f}x" if base in rate else "-"
                    lines.append(f"| {m} | {b} | {dt} | {e} | {v:.1f} | {b / v * 1e3:.2f} | "
                                 f"{ratio('torch-eager-cl')} | {ratio('torch-eager')} | {errors[(m, b, dt, e)]:.1e} |")
    table = "\n".join(lines) + "\n"
    print(table)
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(table)
    for f in failures:
        log(f"OUTPUT MISMATCH {f}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
