#!/usr/bin/env python3
"""Cross-engine CPU benchmark: resnet-zoo against PyTorch (eager, compiled) and ONNX Runtime.

Every engine runs the SAME weights on the SAME input, in one run, interleaved, and the
outputs are checked against PyTorch eager. The result is a markdown table.

Usage (from the repository root; the Python stack is tests/requirements.txt plus
benches/requirements.txt):

    cargo build --release                                  # target/release/resnet-zoo
    pip install -r tests/requirements.txt -r benches/requirements.txt
    python benches/compare.py                              # resnet50, batch 1 and 8, all engines
    python benches/compare.py --models resnet50,resnext50_32x4d --batches 1,8,32 --rounds 3
    python benches/compare.py --engines torch-eager,onnxruntime --markdown bench.md
    python benches/compare.py --smoke                      # CI: resnet18, batch 1, one quick round

Engines (--engines, comma-separated, default all four):

    resnet-zoo     the Rust binary: `<bin> bench --arch M --weights W --input I --repeats R
                   --out O --json`, with RAYON_NUM_THREADS=T
    torch-eager    torchvision model, NCHW, torch.inference_mode()
    torch-compile  the same model in channels_last, torch.compile(model) (default mode); its
                   load_ms includes the warm-up forward, which is where the compile happens
    onnxruntime    CPUExecutionProvider, ORT_ENABLE_ALL, intra_op_num_threads=T,
                   inter_op_num_threads=1, on an ONNX export (opset 17, static batch)

What happens:

 1. Preparation, per model (skipped when <work>/<model>.prep.json says it is up to date):
    torchvision.models.<model>(weights=None) built under a fixed seed, every BatchNorm made
    non-trivial (running_mean ~ N(0, 0.1), running_var ~ U(0.5, 1.5), weight ~ U(0.5, 1.5),
    bias ~ N(0, 0.1); the last BN of each block then scaled by 1/sqrt(blocks in its stage), so
    that activations stay O(1)) so BN folding is exercised, eval(). Written to <work>:
      <model>.safetensors             state_dict, torchvision key names, no num_batches_tracked
      <model>_b<B>_input.safetensors  tensor "input", float32 [B,3,224,224], seeded
      <model>_b<B>.onnx               ONNX export of the same module (TorchScript exporter)
 2. Measurement: for each round, model, batch and engine (the engine order rotates from one
    round to the next), one FRESH subprocess loads the model, runs 1 warm-up forward and
    --repeats timed forwards, writes its logits to <work>/out_<engine>_<model>_b<B>.safetensors
    (tensor "output", float32 [B,1000]) and prints one JSON line:
      {"engine", "model", "batch", "load_ms", "times_ms": [...], "peak_rss_mb"}
    (unknown extra keys are ignored). The Python engines are this file run as
    `compare.py --worker ENGINE --model M --batch B --repeats R --threads T --work DIR`.
    OMP_NUM_THREADS, MKL_NUM_THREADS and RAYON_NUM_THREADS are set to --threads for all.
 3. Check, after each round: every engine's logits against torch-eager's for the same model
    and batch, rel err = max|a - b| / max|b|, which must be <= 1e-4.
 4. Report: a header line (CPU, cores, threads, versions, date) and one table row per
    (model, batch, engine): img/s median over all rounds x repeats (img/s = B / time), the
    min-max spread, ratios to torch-eager and to onnxruntime, load ms (median), peak RSS MB
    (max) and the worst rel err. A failed engine gets a row "failed: <message>" (for the Rust
    binary the stderr line starting with "error", else its first stderr line); the others
    still run.

Exit status: 0 when every measurement ran and every output agreed; 1 when an output
disagreed (rel err > 1e-4, wrong shape, NaN/inf); 3 when a measurement failed and
--allow-failures was not given (the table is printed in these cases); 2 on bad arguments or
a failed preparation (no table).

--smoke runs resnet18, batch 1, 1 round, 1 repeat, and leaves torch-compile out: its first
compile on a cold inductor cache takes about a minute on 2 cores, too long for a CI smoke
check (run it with the normal options to include it). The outputs are still checked.

Relative defaults (--resnet-zoo-bin, --work) are resolved against the repository root, so the
script can be started from anywhere; paths given on the command line are taken as they are.
"""

from __future__ import annotations

import argparse
import array
import datetime
import importlib.metadata
import json
import math
import os
import platform
import resource
import statistics
import struct
import subprocess
import sys
import time
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
ALL_ENGINES = ("resnet-zoo", "torch-eager", "torch-compile", "onnxruntime")
PY_ENGINES = ("torch-eager", "torch-compile", "onnxruntime")
REFERENCE = "torch-eager"
TOLERANCE = 1e-4
NUM_CLASSES = 1000
IMAGE_SIZE = 224
ONNX_OPSET = 17
MODEL_SEED = 20240611
INPUT_SEED = 7
# Bump when preparation changes, so that stale files in --work are regenerated.
PREP_VERSION = 1


class BenchError(Exception):
    """A failure with a message meant for the user (no traceback needed)."""


# --------------------------------------------------------------------------------------------
# Paths


def weights_path(work: Path, model: str) -> Path:
    return work / f"{model}.safetensors"


def input_path(work: Path, model: str, batch: int) -> Path:
    return work / f"{model}_b{batch}_input.safetensors"


def onnx_path(work: Path, model: str, batch: int) -> Path:
    return work / f"{model}_b{batch}.onnx"


def output_path(work: Path, engine: str, model: str, batch: int) -> Path:
    return work / f"out_{engine}_{model}_b{batch}.safetensors"


def manifest_path(work: Path, model: str) -> Path:
    return work / f"{model}.prep.json"


def package_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


# --------------------------------------------------------------------------------------------
# Preparation (its own process: the orchestrator imports neither torch nor numpy)


def prep_manifest(model_name: str) -> dict:
    """What the prepared files of a model depend on; a change means they are made again."""
    return {
        "prep_version": PREP_VERSION,
        "model_seed": MODEL_SEED,
        "input_seed": INPUT_SEED,
        "torch": package_version("torch"),
        "torchvision": package_version("torchvision"),
        "model": model_name,
    }


def prep_status(model_name: str, batches: list[int], work: Path, force: bool) -> tuple[bool, set[int]]:
    """(all files for these batches are up to date, batches already prepared by the same recipe).

    Earlier batches stay valid when more are added: preparation is deterministic (same seeds,
    same torch), so the weights come out bit-identical.
    """
    manifest = manifest_path(work, model_name)
    try:
        have = json.loads(manifest.read_text()) if manifest.exists() else {}
    except (OSError, json.JSONDecodeError):
        have = {}
    wanted = prep_manifest(model_name)
    if force or {k: have.get(k) for k in wanted} != wanted:
        return False, set()
    kept = {
        b
        for b in have.get("batches", [])
        if input_path(work, model_name, b).exists() and onnx_path(work, model_name, b).exists()
    }
    current = set(batches) <= kept and weights_path(work, model_name).exists()
    return current, kept


def prepare_model(model_name: str, batches: list[int], work: Path, force: bool) -> None:
    """Write <model>.safetensors and, per batch, the input and the ONNX export (see top).

    Runs in its own process (`--prepare`), so the orchestrator never imports torch.
    """
    current, kept = prep_status(model_name, batches, work, force)
    if current:
        return
    import torch
    import torchvision
    from safetensors.torch import save_file

    t0 = time.perf_counter()
    manifest_path(work, model_name).unlink(missing_ok=True)  # until every file is written again
    if model_name not in torchvision.models.list_models(module=torchvision.models):
        raise BenchError(f"torchvision.models has no classification model named {model_name!r}")
    torch.manual_seed(MODEL_SEED)
    model = getattr(torchvision.models, model_name)(weights=None)
    if not isinstance(model, torchvision.models.ResNet):
        raise BenchError(f"{model_name} is not a torchvision ResNet (resnet18..152, resnext*, wide_resnet*)")
    gen = torch.Generator().manual_seed(MODEL_SEED + 1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                c = m.num_features
                m.running_mean.copy_(torch.randn(c, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(c, generator=gen) + 0.5)
                m.weight.copy_(torch.rand(c, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(c, generator=gen) * 0.1)
        # Damp each residual branch (its last BN) by 1/sqrt(blocks in the stage), as the parity
        # fixtures do: otherwise the residual stream of a deep net grows block after block
        # (resnet50's logits reached ~900, wide_resnet50_2's layer4 ~4800), instead of ~5.
        for stage in (model.layer1, model.layer2, model.layer3, model.layer4):
            k = 1 / math.sqrt(len(stage))
            for block in stage:
                last = block.bn3 if hasattr(block, "bn3") else block.bn2
                last.weight.mul_(k)
                last.bias.mul_(k)
    model.eval()

    state = {k: v.detach().contiguous() for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    save_file(state, str(weights_path(work, model_name)))

    for b in batches:
        x = torch.randn(b, 3, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(INPUT_SEED + b))
        save_file({"input": x.contiguous()}, str(input_path(work, model_name, b)))
        export_onnx(model, x, onnx_path(work, model_name, b))
    manifest = {**prep_manifest(model_name), "batches": sorted(kept | set(batches))}
    manifest_path(work, model_name).write_text(json.dumps(manifest, indent=1) + "\n")
    log(f"prepare {model_name}: weights, inputs and ONNX for batch {batches} in {time.perf_counter() - t0:.1f} s")


def export_onnx(model, x, path: Path) -> None:
    """ONNX export with the TorchScript exporter (dynamo=False needs no onnxscript)."""
    import onnx
    import torch

    with warnings.catch_warnings():
        # The TorchScript exporter announces its own deprecation on every call.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        with torch.no_grad():
            torch.onnx.export(
                model,
                (x,),
                str(path),
                opset_version=ONNX_OPSET,
                input_names=["input"],
                output_names=["output"],
                do_constant_folding=True,
                dynamo=False,
            )
    onnx.checker.check_model(str(path))


# --------------------------------------------------------------------------------------------
# Workers (one fresh process per measurement)


def peak_rss_mb() -> float:
    """Peak resident set of this process in MiB: VmHWM from /proc/self/status.

    Not getrusage(RUSAGE_SELF).ru_maxrss: on Linux that survives fork + exec, so a worker would
    report at least the RSS its parent had when it was started. ru_maxrss is the fallback where
    there is no /proc.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except (OSError, ValueError, IndexError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def run_worker(args: argparse.Namespace) -> int:
    engine, model_name, batch, repeats, threads = args.worker, args.model, args.batch, args.repeats, args.threads
    work = Path(args.work)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, str(threads))
    try:
        if engine in ("torch-eager", "torch-compile"):
            result, output = torch_worker(engine, model_name, batch, repeats, threads, work)
        elif engine == "onnxruntime":
            result, output = ort_worker(model_name, batch, repeats, threads, work)
        else:
            raise BenchError(f"--worker: unknown engine {engine!r} (one of {', '.join(PY_ENGINES)})")
        from safetensors.numpy import save_file

        save_file({"output": output}, str(output_path(work, engine, model_name, batch)))
    except BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except Exception as e:  # noqa: BLE001 - any engine failure becomes one clear line for the table
        traceback.print_exc()
        print(f"error: {type(e).__name__}: {one_line(str(e))}", file=sys.stderr)
        return 1
    result.update(engine=engine, model=model_name, batch=batch, peak_rss_mb=peak_rss_mb())
    print(json.dumps(result), flush=True)
    return 0


def torch_worker(engine, model_name, batch, repeats, threads, work):
    import numpy as np
    import torch
    import torchvision
    from safetensors.torch import load_file

    torch.set_num_threads(threads)
    x = load_file(str(input_path(work, model_name, batch)))["input"]

    t0 = time.perf_counter()
    state = load_file(str(weights_path(work, model_name)))
    # Build on the meta device (no random init to throw away), then take the loaded tensors.
    with torch.device("meta"):
        model = getattr(torchvision.models, model_name)(weights=None)
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise BenchError(f"state_dict mismatch: missing {missing[:5]}, unexpected {unexpected[:5]}")
    for m in model.modules():
        if getattr(m, "num_batches_tracked", None) is not None and m.num_batches_tracked.is_meta:
            m.num_batches_tracked = torch.zeros((), dtype=torch.long)
    model.eval()
    if engine == "torch-compile":
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
        model = torch.compile(model)

    result = {}
    with torch.inference_mode():
        if engine == "torch-compile":
            tc = time.perf_counter()
            try:
                model(x)  # warm-up: compiles
            except Exception as e:  # noqa: BLE001 - inductor raises many types (no compiler, ...)
                raise BenchError(f"torch.compile: {type(e).__name__}: {one_line(str(e))}") from e
            result["compile_ms"] = (time.perf_counter() - tc) * 1e3
            load_ms = (time.perf_counter() - t0) * 1e3
        else:
            load_ms = (time.perf_counter() - t0) * 1e3
            model(x)  # warm-up
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            out = model(x)
            times.append((time.perf_counter() - t) * 1e3)
    result.update(load_ms=load_ms, times_ms=times)
    return result, np.ascontiguousarray(out.float().numpy())


def ort_worker(model_name, batch, repeats, threads, work):
    import numpy as np
    import onnxruntime as ort
    from safetensors.numpy import load_file

    x = load_file(str(input_path(work, model_name, batch)))["input"]
    t0 = time.perf_counter()
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(
        str(onnx_path(work, model_name, batch)), sess_options=so, providers=["CPUExecutionProvider"]
    )
    load_ms = (time.perf_counter() - t0) * 1e3
    feed = {sess.get_inputs()[0].name: x}
    sess.run(None, feed)  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        out = sess.run(None, feed)[0]
        times.append((time.perf_counter() - t) * 1e3)
    return {"load_ms": load_ms, "times_ms": times}, np.ascontiguousarray(out, dtype=np.float32)


# --------------------------------------------------------------------------------------------
# Orchestration


@dataclass
class Cell:
    """Everything measured for one (model, batch, engine) over all rounds."""

    times_ms: list[float] = field(default_factory=list)
    load_ms: list[float] = field(default_factory=list)
    rss_mb: list[float] = field(default_factory=list)
    rel_err: float | None = None
    check_error: str | None = None  # wrong shape, NaN, unreadable output
    failures: list[str] = field(default_factory=list)
    runs: int = 0


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def one_line(text: str, limit: int = 240) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def stderr_message(stderr: str) -> str:
    """The line that says what went wrong: the last one starting with "error", else the first."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    if not lines:
        return "(no message on stderr)"
    errors = [line for line in lines if line.lower().startswith("error")]
    line = errors[-1] if errors else lines[0]
    return line[len("error:") :].strip() if line.lower().startswith("error:") else line


def engine_command(engine, model_name, batch, args, work: Path) -> list[str]:
    if engine == "resnet-zoo":
        return [
            str(args.resnet_zoo_bin), "bench",
            "--arch", model_name,
            "--weights", str(weights_path(work, model_name)),
            "--input", str(input_path(work, model_name, batch)),
            "--repeats", str(args.repeats),
            "--out", str(output_path(work, engine, model_name, batch)),
            "--json",
        ]  # fmt: skip
    return [
        sys.executable, str(Path(__file__).resolve()),
        "--worker", engine,
        "--model", model_name,
        "--batch", str(batch),
        "--repeats", str(args.repeats),
        "--threads", str(args.threads),
        "--work", str(work),
    ]  # fmt: skip


def measure(engine, model_name, batch, args, work: Path) -> dict:
    """Run one fresh subprocess; return its JSON record, or raise BenchError with a short reason."""
    if engine == "resnet-zoo" and not Path(args.resnet_zoo_bin).is_file():
        raise BenchError(f"no binary at {args.resnet_zoo_bin} (cargo build --release, or --resnet-zoo-bin)")
    out = output_path(work, engine, model_name, batch)
    out.unlink(missing_ok=True)  # never check a previous run's logits
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "RAYON_NUM_THREADS"):
        env[var] = str(args.threads)
    cmd = engine_command(engine, model_name, batch, args, work)
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=args.timeout, check=False)
    except subprocess.TimeoutExpired as e:
        raise BenchError(f"timed out after {args.timeout} s") from e
    except OSError as e:
        raise BenchError(f"could not start {cmd[0]}: {e}") from e
    if proc.returncode != 0:
        raise BenchError(f"{stderr_message(proc.stderr)} (exit {proc.returncode})")
    record = None
    for line in reversed(proc.stdout.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            break
    if not isinstance(record, dict):
        raise BenchError(f"no JSON line on stdout (stdout began {one_line(proc.stdout, 80)!r})")
    try:
        times = [float(t) for t in record["times_ms"]]
        parsed = {
            "load_ms": float(record["load_ms"]),
            "times_ms": times,
            "peak_rss_mb": float(record["peak_rss_mb"]),
        }
        reported_batch = int(record.get("batch", batch))
    except (KeyError, TypeError, ValueError) as e:
        raise BenchError(f"bad JSON record ({type(e).__name__}: {e}): {one_line(json.dumps(record), 160)}") from e
    if reported_batch != batch:
        raise BenchError(f"reported batch {reported_batch}, expected {batch}")
    if not times or any(not math.isfinite(t) or t <= 0 for t in times):
        raise BenchError(f"bad times_ms {times}")
    if len(times) != args.repeats:
        log(f"  note: {engine} reported {len(times)} timings, asked for {args.repeats}")
    if not out.is_file():
        raise BenchError(f"wrote no output file {out.name}")
    return parsed


def read_logits(path: Path, batch: int) -> list[float]:
    """Tensor "output" (F32 [batch, 1000]) of a safetensors file, read with the standard library.

    The orchestrator imports neither torch nor numpy, so that it stays small: a child inherits
    the parent's RSS high-water mark in getrusage's ru_maxrss (see peak_rss_mb), and the
    resnet-zoo binary may well measure its peak that way.
    """
    try:
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(n))
            meta = header["output"]
            start, end = meta["data_offsets"]
            f.seek(8 + n + start)
            raw = f.read(end - start)
    except FileNotFoundError as e:
        raise BenchError(f"no output file {path.name}") from e
    except (OSError, struct.error, ValueError, KeyError, TypeError) as e:
        raise BenchError(f"unreadable output {path.name}: {type(e).__name__}: {e}") from e
    if meta.get("dtype") != "F32" or list(meta.get("shape", [])) != [batch, NUM_CLASSES]:
        raise BenchError(f"output is {meta.get('dtype')} {meta.get('shape')}, expected F32 [{batch}, {NUM_CLASSES}]")
    values = array.array("f")
    if len(raw) != 4 * batch * NUM_CLASSES:
        raise BenchError(f"output {path.name} holds {len(raw)} bytes, expected {4 * batch * NUM_CLASSES}")
    values.frombytes(raw)
    if sys.byteorder == "big":
        values.byteswap()
    if not all(math.isfinite(v) for v in values):
        raise BenchError("output has NaN or inf")
    return values.tolist()


def check_outputs(cells, models, batches, engines, work: Path, ran: set) -> None:
    """Compare this round's logits of every engine with torch-eager's; keep the worst rel err."""
    for model_name in models:
        for batch in batches:
            if (REFERENCE, model_name, batch) not in ran:
                continue
            try:
                ref = read_logits(output_path(work, REFERENCE, model_name, batch), batch)
            except BenchError as e:
                cells[(model_name, batch, REFERENCE)].check_error = one_line(str(e))
                continue
            scale = max(abs(v) for v in ref) or 1.0
            for engine in engines:
                if engine == REFERENCE or (engine, model_name, batch) not in ran:
                    continue
                cell = cells[(model_name, batch, engine)]
                try:
                    out = read_logits(output_path(work, engine, model_name, batch), batch)
                except BenchError as e:
                    cell.check_error = one_line(str(e))
                    continue
                err = max(abs(a - b) for a, b in zip(out, ref, strict=True)) / scale
                cell.rel_err = err if cell.rel_err is None else max(cell.rel_err, err)


def machine_line(args, engines) -> str:
    cpu, flags = None, set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and cpu is None:
                    cpu = value.strip()
                elif key.strip() == "flags" and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    cpu = cpu or platform.processor() or "unknown CPU"
    simd = "AVX-512" if "avx512f" in flags else "AVX2/FMA" if {"avx2", "fma"} <= flags else "no AVX2"
    parts = [
        f"{cpu} ({simd})",
        f"{os.cpu_count()} logical CPUs",
        f"{args.threads} threads",
        f"torch {package_version('torch')}",
        f"torchvision {package_version('torchvision')}",
        f"onnxruntime {package_version('onnxruntime')}",
    ]
    if args.load_before is not None:
        parts.append(f"load avg {args.load_before:.1f} before the run")
    if "resnet-zoo" in engines:
        parts.append(f"resnet-zoo {resnet_zoo_version(args.resnet_zoo_bin)}")
    parts += [
        f"{args.rounds} rounds x {args.repeats} repeats",
        datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
    ]
    return "Machine: " + ", ".join(parts)


def resnet_zoo_version(binary: Path) -> str:
    if not Path(binary).is_file():
        return "(binary missing)"
    try:
        proc = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "(version unknown)"
    words = proc.stdout.split()
    return words[-1] if proc.returncode == 0 and words else "(version unknown)"


def fmt_rate(x: float) -> str:
    return f"{x:.1f}" if x < 100 else f"{x:.0f}"


def md_cell(text: str) -> str:
    return text.replace("|", "\\|")


def render_table(cells, models, batches, engines) -> tuple[str, list[str]]:
    header = [
        "engine",
        "model",
        "batch",
        "img/s (median)",
        "spread (min–max img/s)",
        "vs torch-eager",
        "vs onnxruntime",
        "load ms (median)",
        "peak RSS MB",
        "rel err vs torch",
    ]
    rows = [header, ["---"] * 3 + ["---:"] * (len(header) - 3)]
    notes = []

    def median_rate(model_name, batch, engine):
        cell = cells.get((model_name, batch, engine))
        if cell is None or not cell.times_ms:
            return None
        return statistics.median(batch * 1e3 / t for t in cell.times_ms)

    for model_name in models:
        for batch in batches:
            torch_rate = median_rate(model_name, batch, REFERENCE)
            ort_rate = median_rate(model_name, batch, "onnxruntime")
            for engine in engines:
                cell = cells[(model_name, batch, engine)]
                if cell.failures and (cell.times_ms or len(one_line(cell.failures[0], 90)) < len(cell.failures[0])):
                    notes.append(
                        f"{engine} {model_name} b{batch} failed in {len(cell.failures)}/{cell.runs} rounds: "
                        + cell.failures[0]
                    )
                if not cell.times_ms:
                    reason = one_line(cell.failures[0], 90) if cell.failures else "not run"
                    rows.append([engine, model_name, str(batch), md_cell(f"failed: {reason}")] + ["–"] * 6)
                    continue
                rates = [batch * 1e3 / t for t in cell.times_ms]
                rate = statistics.median(rates)
                if cell.check_error:
                    err = f"FAILED: {cell.check_error}"
                elif cell.rel_err is None:
                    err = "ref" if engine == REFERENCE else f"n/a (no {REFERENCE} output)"
                elif engine == REFERENCE:
                    err = "ref"
                else:
                    err = f"{cell.rel_err:.1e}" + (" FAILED" if cell.rel_err > TOLERANCE else "")
                rows.append(
                    [
                        engine,
                        model_name,
                        str(batch),
                        fmt_rate(rate),
                        f"{fmt_rate(min(rates))}–{fmt_rate(max(rates))}",
                        f"{rate / torch_rate:.2f}x" if torch_rate else "–",
                        f"{rate / ort_rate:.2f}x" if ort_rate else "–",
                        f"{statistics.median(cell.load_ms):.0f}",
                        f"{max(cell.rss_mb):.0f}",
                        md_cell(err),
                    ]
                )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = []
    for i, r in enumerate(rows):
        if i == 1:
            r = [("-" * (w - 1) + ":") if s.endswith(":") else "-" * w for s, w in zip(r, widths, strict=True)]
        else:
            r = [s.ljust(w) if j < 3 else s.rjust(w) for j, (s, w) in enumerate(zip(r, widths, strict=True))]
        lines.append("| " + " | ".join(r) + " |")
    return "\n".join(lines), notes


def parse_list(text: str, what: str, conv=str) -> list:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise BenchError(f"--{what}: empty list")
    try:
        values = [conv(t) for t in items]
    except ValueError as e:
        raise BenchError(f"--{what}: {e}") from e
    return list(dict.fromkeys(values))  # drop duplicates, keep order


def run_orchestrator(args: argparse.Namespace) -> int:
    if args.smoke:
        args.models, args.batches, args.rounds, args.repeats = "resnet18", "1", 1, 1
    models = parse_list(args.models, "models")
    batches = parse_list(args.batches, "batches", int)
    engines = parse_list(args.engines, "engines")
    unknown = [e for e in engines if e not in ALL_ENGINES]
    if unknown:
        raise BenchError(f"--engines: unknown {unknown} (known: {', '.join(ALL_ENGINES)})")
    if args.smoke and "torch-compile" in engines:
        engines.remove("torch-compile")
        log("--smoke: leaving torch-compile out (a cold torch.compile takes about a minute on 2 cores)")
    if not engines:
        raise BenchError("--engines: nothing left to run")
    if any(b < 1 for b in batches) or args.rounds < 1 or args.repeats < 1 or args.threads < 1:
        raise BenchError("--batches, --rounds, --repeats and --threads must be >= 1")
    if REFERENCE not in engines:
        log(f"note: {REFERENCE} is not among the engines, so outputs are not checked and no ratio to it is shown")

    try:
        args.load_before = os.getloadavg()[0]  # other work on the machine skews every figure
    except OSError:
        args.load_before = None
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    for model_name in models:  # every engine, resnet-zoo included, reads the prepared files
        if prep_status(model_name, batches, work, args.reprepare)[0]:
            log(f"prepare {model_name}: up to date in {work}")
            continue
        cmd = [
            sys.executable, str(Path(__file__).resolve()), "--prepare",
            "--models", model_name,
            "--batches", ",".join(map(str, batches)),
            "--work", str(work),
        ]  # fmt: skip
        if args.reprepare:
            cmd.append("--reprepare")
        try:
            proc = subprocess.run(cmd, check=False)  # its messages go straight to our stderr
        except OSError as e:
            raise BenchError(f"could not start the preparation of {model_name}: {e}") from e
        if proc.returncode != 0:
            raise BenchError(f"preparing {model_name} failed (exit {proc.returncode}, see above)")

    cells = {(m, b, e): Cell() for m in models for b in batches for e in engines}
    t_start = time.perf_counter()
    for rnd in range(args.rounds):
        shift = rnd % len(engines)
        order = engines[shift:] + engines[:shift]
        ran = set()
        for model_name in models:
            for batch in batches:
                for engine in order:
                    cell = cells[(model_name, batch, engine)]
                    cell.runs += 1
                    prefix = f"[round {rnd + 1}/{args.rounds}] {model_name} b{batch} {engine}:"
                    try:
                        rec = measure(engine, model_name, batch, args, work)
                    except BenchError as e:
                        msg = one_line(str(e))
                        cell.failures.append(msg)
                        log(f"{prefix} FAILED: {msg}")
                        continue
                    ran.add((engine, model_name, batch))
                    cell.times_ms += rec["times_ms"]
                    cell.load_ms.append(rec["load_ms"])
                    cell.rss_mb.append(rec["peak_rss_mb"])
                    med = statistics.median(rec["times_ms"])
                    log(
                        f"{prefix} median {med:.1f} ms ({batch * 1e3 / med:.1f} img/s), "
                        f"load {rec['load_ms']:.0f} ms, peak RSS {rec['peak_rss_mb']:.0f} MB"
                    )
        check_outputs(cells, models, batches, engines, work, ran)
    log(f"measured in {time.perf_counter() - t_start:.0f} s")

    table, notes = render_table(cells, models, batches, engines)
    text = machine_line(args, engines) + "\n\n" + table + "\n"
    if notes:
        text += "\n" + "\n".join(f"- {md_cell(n)}" for n in notes) + "\n"
    text += (
        f"\nimg/s = batch / time of one forward; median and spread over rounds x repeats. "
        f"rel err = max|out - out_{REFERENCE}| / max|out_{REFERENCE}| (worst round), limit {TOLERANCE:g}. "
        "load ms: reading the weights and building the model or session (torch-compile: plus the "
        "compiling warm-up forward, which later rounds may partly take from the inductor cache). "
        "Peak RSS: the process's high-water mark. Each measurement ran in a fresh process.\n"
    )
    print("\n" + text, end="")
    if args.markdown:
        try:
            Path(args.markdown).write_text(text, encoding="utf-8")
        except OSError as e:
            raise BenchError(f"--markdown: cannot write {args.markdown}: {e}") from e

    bad_check = [k for k, c in cells.items() if c.check_error or (c.rel_err is not None and c.rel_err > TOLERANCE)]
    failed = [k for k, c in cells.items() if c.failures]
    if bad_check:
        log(f"FAILED: outputs disagree with {REFERENCE} for " + ", ".join(f"{e} {m} b{b}" for m, b, e in bad_check))
        return 1
    if failed and not args.allow_failures:
        log("FAILED: measurements did not run for " + ", ".join(f"{e} {m} b{b}" for m, b, e in failed))
        return 3
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Benchmark resnet-zoo against PyTorch eager, torch.compile and ONNX Runtime on the CPU.",
        epilog="See the module docstring (top of this file) for what is measured and how.",
    )
    p.add_argument("--models", default="resnet50", help="comma-separated torchvision model names (default resnet50)")
    p.add_argument("--batches", default="1,8", help="comma-separated batch sizes (default 1,8)")
    p.add_argument("--rounds", type=int, default=2, help="interleaved rounds (default 2)")
    p.add_argument("--repeats", type=int, default=5, help="timed forwards per measurement (default 5)")
    p.add_argument("--threads", type=int, default=2, help="threads per engine (default 2)")
    p.add_argument("--engines", default=",".join(ALL_ENGINES), help=f"comma-separated, default {','.join(ALL_ENGINES)}")
    p.add_argument(
        "--resnet-zoo-bin",
        type=Path,
        default=REPO_ROOT / "target/release/resnet-zoo",
        help="the resnet-zoo binary (default <repo>/target/release/resnet-zoo)",
    )
    p.add_argument(
        "--work",
        type=Path,
        default=REPO_ROOT / "target/bench-compare",
        help="folder for weights, inputs, ONNX files and outputs (default <repo>/target/bench-compare)",
    )
    p.add_argument(
        "--smoke", action="store_true", help="CI check: resnet18, batch 1, 1 round, 1 repeat, no torch-compile"
    )
    p.add_argument("--markdown", type=Path, help="also write the header and table to this file")
    p.add_argument("--timeout", type=int, default=1800, help="seconds allowed per measurement process (default 1800)")
    p.add_argument(
        "--reprepare", action="store_true", help="regenerate weights, inputs and ONNX files even if up to date"
    )
    p.add_argument(
        "--allow-failures", action="store_true", help="exit 0 even if an engine failed to run (outputs still checked)"
    )
    # Internal modes, started by the orchestrator: --prepare (with --models, --batches, --work)
    # and --worker ENGINE (one measurement of a Python engine).
    worker = p.add_argument_group("internal modes")
    worker.add_argument("--prepare", action="store_true", help=argparse.SUPPRESS)
    worker.add_argument("--worker", choices=PY_ENGINES, help=argparse.SUPPRESS)
    worker.add_argument("--model", help=argparse.SUPPRESS)
    worker.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.prepare:
        try:
            for model_name in parse_list(args.models, "models"):
                prepare_model(model_name, parse_list(args.batches, "batches", int), args.work, args.reprepare)
        except BenchError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        except ImportError as e:
            print(f"error: preparation needs torch, torchvision, safetensors and onnx: {e}", file=sys.stderr)
            return 2
        return 0
    if args.worker:
        if not args.model or not args.batch:
            print("error: --worker needs --model and --batch", file=sys.stderr)
            return 2
        return run_worker(args)
    try:
        return run_orchestrator(args)
    except BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
