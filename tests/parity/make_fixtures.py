"""Generate PyTorch/torchvision reference fixtures for the resnet-zoo parity tests.

What it writes (into --out, default tests/fixtures/, which is git-ignored):

  {P}.safetensors         state_dict of torchvision.models.{P}(weights=None) for
                          P in resnet18/34/50/101/152, resnext50_32x4d, wide_resnet50_2,
                          and resnet50_v1 (torchvision's resnet50 with the paper's
                          stride placement, see tv_model), seeded, with every BatchNorm
                          tensor (weight, bias, running_mean, running_var) made
                          random and non-trivial (see randomise_batchnorm), and
                          fc.bias ~ N(0, 0.1).
  {P}.io.safetensors      inputs and float32 reference activations:
                            input_224 [2,3,224,224], input_160x192 [1,3,160,192],
                            and for S in {224, 160x192}:
                            stem_S (after conv1/bn1/relu, before maxpool),
                            layer1_S .. layer4_S, pooled_S [N,C], logits_S [N,1000].
  resnet18_f64.safetensors                     resnet18 weights as float64
                                               (expected outputs: resnet18.io.safetensors).
  resnet18_{f16,bf16}.safetensors              resnet18 weights rounded to f16 / bf16.
  resnet18_{f16,bf16}.io.safetensors           same inputs; outputs of a float32 model
                                               loaded with those rounded weights.
  images/{stem}.safetensors                    per photo in tests/data/images/:
                                               rgb, resized_v1, v1, v2, logits_v1,
                                               resized_bicubic_235, a1
                                               (see make_image_fixture).
  {P}_hf.safetensors                           P in resnet50/resnet18: the {P}.safetensors
                                               weights renamed to Hugging Face transformers'
                                               ResNetForImageClassification state_dict (see
                                               hf_key; checked with transformers' own forward
                                               against {P}.io.safetensors).
  resnet18_hf_headless.safetensors             the same as a headless transformers ResNetModel
                                               (no classifier, no "resnet." prefix).
  pth/*.pth, pth/strided_expected.safetensors  torch.save checkpoints for a pickle-free .pth
                                               reader: plain, nn.Parameter, f16, nested, legacy
                                               (non-zip), strided views, and malicious.pth,
                                               whose pickle runs a shell command if unpickled:
                                               never load it (see make_pth_fixtures).
  STAMP                                        hash of this script, the package
                                               versions and the input photos.

Run from the repository root:

    make fixtures                          # what `make test` runs (skips when STAMP matches)
    $VENV/bin/python tests/parity/make_fixtures.py --out tests/fixtures --force   # regenerate

If STAMP matches and all files exist the script exits 0 at once. Everything is
deterministic (fixed seeds, 2 CPU threads); files are written atomically. All files
are byte-identical across reruns except pth/legacy.pth, whose legacy format keys
storages by memory address (the tensor values are still identical).
The pinned package versions live in tests/requirements.txt.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import pickletools
import re
import struct
import sys
import time
import zipfile
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
IMAGES_DIR = REPO / "tests" / "data" / "images"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")

PRESETS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
           # Bottleneck variants: grouped 3x3 (32 groups of 4 channels per 64), double-width
           # 3x3, and the paper's original stride placement (see tv_model).
           "resnext50_32x4d", "wide_resnet50_2", "resnet50_v1")
# One seed per preset, picked so that check_logits passes (for resnet18 also on the
# f16/bf16 copies, for resnet50 also on every photo in tests/data/images). If the
# check rejects a model, change its seed here; never loosen the check.
MODEL_SEED = {"resnet18": 1090, "resnet34": 1031, "resnet50": 1072, "resnet101": 1023, "resnet152": 1024,
              "resnext50_32x4d": 1102, "wide_resnet50_2": 1201, "resnet50_v1": 1301}
# resnet50_v1: the first (downsampling) Bottleneck of each of these stages strides its
# conv1 (first 1x1) instead of its conv2 (3x3).
V1_STRIDED_STAGES = ("layer2", "layer3", "layer4")
# Extra safetensors metadata for presets that are not a torchvision builder as is.
PRESET_NOTE = {"resnet50_v1": "torchvision resnet50 with the stride of block 0 of layer2/3/4 moved from "
                              "conv2 (3x3) to conv1 (first 1x1), downsample stride 2 kept: the original "
                              "ResNet-50 of He et al. 2015 (V1)"}
# Minimum gap between consecutive top-6 logits, relative to max|logits|. The
# requirement is 1e-4; 1e-3 leaves margin for summation-order differences.
MIN_TOP6_GAP_REL = 1e-3
INPUT_SEED = 7
# Input sizes: tag -> (N, H, W). "160x192" is H=160, W=192 (non-square on purpose).
SIZES = {"224": (2, 224, 224), "160x192": (1, 160, 192)}
# Activations captured by forward hooks: fixture name -> torchvision module attribute.
TAPS = {"stem": "relu", "layer1": "layer1", "layer2": "layer2", "layer3": "layer3",
        "layer4": "layer4", "pooled": "avgpool"}
# BatchNorm calibration: a few random batches in train mode with momentum=None.
CALIB_BATCHES, CALIB_N, CALIB_HW = 4, 4, 160
# Extra resnet18 weight dtypes: file tag -> torch dtype name.
LOW_PRECISION = {"f16": "float16", "bf16": "bfloat16"}
# timm's eval resize for crop_pct 0.95 (the resnet50.a1_in1k weights): shorter side
# floor(224 / 0.95) = 235, bicubic, then centre crop 224.
BICUBIC_RESIZE = 235
# transformers.ResNetConfig arguments giving each preset torchvision's architecture.
# downsample_in_bottleneck=False puts the stride on the 3x3 conv, as torchvision's
# ResNet V1.5 does; the other defaults are asserted in hf_config.
HF_ARCH = {
    "resnet50": {"layer_type": "bottleneck", "depths": [3, 4, 6, 3],
                 "hidden_sizes": [256, 512, 1024, 2048], "embedding_size": 64,
                 "downsample_in_bottleneck": False, "num_labels": 1000},
    "resnet18": {"layer_type": "basic", "depths": [2, 2, 2, 2],
                 "hidden_sizes": [64, 128, 256, 512], "embedding_size": 64,
                 "downsample_in_bottleneck": False, "num_labels": 1000},
}
# Relative tolerance (vs max|reference|) for transformers' forward against torchvision's.
HF_MAX_DIFF_REL = 1e-5
# torch.save checkpoints in pth/ (see make_pth_fixtures), and the file that unpickling
# pth/malicious.pth would create.
PTH_FILES = ("resnet18", "resnet18_params", "resnet18_f16", "nested", "malicious", "legacy", "strided")
PWNED = Path("/tmp/resnet-zoo-pwned")
PACKAGES = ("torch", "torchvision", "safetensors", "numpy", "pillow", "transformers")


# --------------------------------------------------------------------------- stamp
# Only the standard library is used up to the up-to-date check, so a run with
# nothing to do returns in well under a second instead of paying ~8 s of imports.

def versions() -> dict[str, str]:
    ver = {pkg: metadata.version(pkg) for pkg in PACKAGES}
    ver["python"] = sys.version.split()[0]
    return ver


def image_files() -> list[Path]:
    if not IMAGES_DIR.is_dir():
        return []
    return sorted(p for p in IMAGES_DIR.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def stamp_text() -> str:
    """First line: sha256 over this script, package versions and input photos."""
    h = hashlib.sha256(Path(__file__).read_bytes())
    ver = versions()
    for k in sorted(ver):
        h.update(f"{k}={ver[k]}\n".encode())
    for p in image_files():
        h.update(p.name.encode() + b"\0" + p.read_bytes())
    lines = [h.hexdigest()] + [f"# {k} {v}" for k, v in sorted(ver.items())]
    return "\n".join(lines) + "\n"


def expected_files(out: Path) -> list[Path]:
    names = [f"{p}.safetensors" for p in PRESETS] + [f"{p}.io.safetensors" for p in PRESETS]
    names += ["resnet18_f64.safetensors"]
    names += [f"resnet18_{t}{s}" for t in LOW_PRECISION for s in (".safetensors", ".io.safetensors")]
    names += [f"images/{p.stem}.safetensors" for p in image_files()]
    names += [f"{p}_hf.safetensors" for p in HF_ARCH] + ["resnet18_hf_headless.safetensors"]
    names += [f"pth/{n}.pth" for n in PTH_FILES] + ["pth/strided_expected.safetensors"]
    return [out / n for n in names]


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description="Generate torchvision ResNet parity fixtures.")
    ap.add_argument("--out", type=Path, default=REPO / "tests" / "fixtures")
    ap.add_argument("--force", action="store_true", help="regenerate even if STAMP matches")
    return ap.parse_args()


def up_to_date(out: Path, force: bool) -> bool:
    stamp_path = out / "STAMP"
    return (not force and stamp_path.is_file() and stamp_path.read_text() == stamp_text()
            and all(p.is_file() for p in expected_files(out)))


if __name__ == "__main__":
    ARGS = parse_args()
    if up_to_date(ARGS.out, ARGS.force):
        print(f"{ARGS.out}: fixtures up to date (STAMP matches)")
        sys.exit(0)

# Heavy imports, needed only when (re)generating.
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torchvision  # noqa: E402
import transformers  # noqa: E402
from PIL import Image, ImageOps  # noqa: E402
from safetensors.torch import load_file, save  # noqa: E402
from torch import nn  # noqa: E402
from torchvision import transforms as T  # noqa: E402
from torchvision.models import ResNet50_Weights  # noqa: E402
from torchvision.transforms import functional as TF  # noqa: E402


# --------------------------------------------------------------------------- utilities

def serialize(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> bytes:
    """safetensors bytes with the metadata keys sorted, so reruns are byte-identical.

    safetensors emits __metadata__ in hash-map order, which changes from run to run;
    the tensor entries and data are already in a fixed order. Data offsets are
    relative to the end of the header, so re-emitting the header keeps them valid.
    """
    blob = save({k: v.detach().contiguous() for k, v in tensors.items()}, metadata=metadata)
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n])
    header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # pad with spaces to 8-byte alignment, as safetensors does
    return struct.pack("<Q", len(text)) + text + blob[8 + n:]


def save_atomic(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(serialize(tensors, metadata))
    os.replace(tmp, path)


def cast_floats(sd: dict[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Cast floating tensors; integer ones (num_batches_tracked, int64) stay as they are."""
    return {k: (v.to(dtype) if v.is_floating_point() else v).contiguous() for k, v in sd.items()}


# --------------------------------------------------------------------------- models

def randomise_batchnorm(model: nn.Module, gen: torch.Generator) -> None:
    """Make every BatchNorm non-trivial while keeping activations well-conditioned.

    1. Calibrate: reset running stats, run CALIB_BATCHES random batches in train
       mode with momentum=None (cumulative average), so running_mean/var match the
       real per-channel statistics of this randomly initialised network.
    2. Perturb all four tensors per channel:
         weight        ~ U(0.5, 1.5)
         bias          ~ N(0, 0.1)
         running_mean += N(0, 0.1) * sqrt(running_var)   (a shift of ~0.1 std)
         running_var  *= U(0.5, 2.0)
       Each BN output stays O(1).
    3. Damp the residual branches: the last BN of every block (bn2 in BasicBlock,
       bn3 in Bottleneck) has weight and bias scaled by 1/sqrt(blocks in its stage).
       Without this the post-ReLU residual stream drifts upward block after block
       (resnet152's 36-block layer3 reached |x| ~ 1.3e3); with it, n blocks add
       about n * (1/sqrt(n))^2 = 1 unit of variance per stage, and every stage
       output of every preset stays at std ~ 0.5-1.5, |x| < ~20.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
    model.train()
    with torch.no_grad():
        for _ in range(CALIB_BATCHES):
            model(torch.randn(CALIB_N, 3, CALIB_HW, CALIB_HW, generator=gen))
        for bn in bns:
            bn.momentum = 0.1  # back to the torchvision default (not part of the state_dict)
            c = bn.num_features
            bn.weight.copy_(torch.empty(c).uniform_(0.5, 1.5, generator=gen))
            bn.bias.copy_(torch.randn(c, generator=gen) * 0.1)
            bn.running_mean.add_(torch.randn(c, generator=gen) * 0.1 * bn.running_var.sqrt())
            bn.running_var.mul_(torch.empty(c).uniform_(0.5, 2.0, generator=gen))
        for stage in (model.layer1, model.layer2, model.layer3, model.layer4):
            damp = len(stage) ** -0.5
            for block in stage:
                last = block.bn3 if hasattr(block, "bn3") else block.bn2
                last.weight.mul_(damp)
                last.bias.mul_(damp)
    model.eval()


def tv_model(preset: str) -> nn.Module:
    """torchvision.models.{preset}(weights=None), or for resnet50_v1 the paper's ResNet-50.

    resnet50_v1 is the ORIGINAL ResNet-50 (He et al. 2015, the Caffe model): identical to
    torchvision's resnet50 ("ResNet V1.5") except that every downsampling Bottleneck
    (block 0 of layer2, layer3, layer4) has its stride 2 on conv1 (the first 1x1) and
    stride 1 on conv2 (the 3x3). It is built from torchvision's resnet50 by moving those
    two strides; the downsample projection (downsample.0, 1x1) keeps its stride 2. A
    stride is not a parameter, so the state_dict keys and shapes are resnet50's and the
    init draws the same random numbers. (Bottleneck.stride is only stored, not used in
    forward, so it is left alone.)
    """
    if preset != "resnet50_v1":
        model = getattr(torchvision.models, preset)(weights=None)
        check_variant(preset, model)
        return model
    model = torchvision.models.resnet50(weights=None)
    for stage in V1_STRIDED_STAGES:
        block = getattr(model, stage)[0]
        assert (block.conv1.stride, block.conv2.stride, block.downsample[0].stride) == ((1, 1), (2, 2), (2, 2)), stage
        block.conv1.stride = (2, 2)
        block.conv2.stride = (1, 1)
    strided = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and m.stride != (1, 1)]
    assert strided == ["conv1"] + [f"{s}.0.{c}" for s in V1_STRIDED_STAGES for c in ("conv1", "downsample.0")], strided
    return model


def check_variant(preset: str, model: nn.Module) -> None:
    """The ResNeXt / wide presets really are grouped / wide (torchvision builder arguments)."""
    want = {"resnext50_32x4d": (32, 128), "wide_resnet50_2": (1, 128), "resnet50": (1, 64)}.get(preset)
    if want is None:
        return
    groups, width = want  # width: channels of layer1's 3x3 = 64 * width_per_group / 64 * groups
    assert model.layer1[0].conv2.in_channels == width, (preset, model.layer1[0].conv2)
    for stage in (model.layer1, model.layer2, model.layer3, model.layer4):
        for block in stage:
            assert block.conv2.groups == groups and block.conv1.groups == block.conv3.groups == 1, (preset, block)


@torch.no_grad()
def check_v1_stride(sd: dict[str, torch.Tensor], inputs: dict[str, torch.Tensor], v1: dict) -> None:
    """resnet50_v1's io tensors: stage shapes are resnet50's, but the stride move changes
    layer2..layer4 (torchvision's resnet50 with the same weights gives other values).
    Before layer2 nothing differs, so stem and layer1 must match bit for bit."""
    v15 = fresh_model("resnet50", sd)
    for tag, (n, h, w) in SIZES.items():
        got = run_with_taps(v15, inputs[f"input_{tag}"])
        for k, div, c in (("layer1", 4, 256), ("layer2", 8, 512), ("layer3", 16, 1024), ("layer4", 32, 2048)):
            shape = (n, c, -(-h // div), -(-w // div))
            assert tuple(v1[f"{k}_{tag}"].shape) == tuple(got[k].shape) == shape, (k, tag, v1[f"{k}_{tag}"].shape)
        for k in ("stem", "layer1"):
            assert torch.equal(v1[f"{k}_{tag}"], got[k]), f"resnet50_v1 {k}_{tag} differs from resnet50"
        for k in ("layer2", "layer3", "layer4", "logits"):
            rel = ((v1[f"{k}_{tag}"] - got[k]).abs().max() / got[k].abs().max()).item()
            assert rel > 1e-2, f"resnet50_v1 {k}_{tag} is resnet50's (rel diff {rel:.1e}): stride not moved"
            print(f"  resnet50_v1 vs resnet50 (same weights) {k}_{tag}: max rel diff {rel:.2f}")


def build_model(preset: str) -> nn.Module:
    """Seeded torchvision model with random BatchNorm tensors and fc.bias ~ N(0, 0.1).

    fc.weight keeps torchvision's init. Pooled features are post-ReLU averages with
    a large shared mean, so the logits of different random inputs share most of
    their top-5 classes (the order differs). Centring fc on that mean to make the
    top-5 input-dependent was tried and rejected: it needs |fc.bias| up to ~500
    cancelling fc.weight @ pooled in resnet152, which is badly conditioned.
    """
    seed = MODEL_SEED[preset]
    torch.manual_seed(seed)  # torchvision's own init draws from the global RNG
    model = tv_model(preset)
    gen = torch.Generator().manual_seed(seed)
    randomise_batchnorm(model, gen)
    with torch.no_grad():
        model.fc.bias.copy_(torch.randn(model.fc.bias.shape, generator=gen) * 0.1)
    return model


def fresh_model(preset: str, state_dict: dict[str, torch.Tensor]) -> nn.Module:
    model = tv_model(preset)
    model.load_state_dict(state_dict)
    return model.eval()


def make_inputs() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(INPUT_SEED)
    return {f"input_{tag}": torch.randn(n, 3, h, w, generator=gen) for tag, (n, h, w) in SIZES.items()}


@torch.no_grad()
def run_with_taps(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Forward x, returning logits plus the TAPS activations (captured by forward hooks)."""
    feats: dict[str, list[torch.Tensor]] = {k: [] for k in TAPS}
    handles = [getattr(model, attr).register_forward_hook(
        lambda _m, _i, out, key=key: feats[key].append(out.detach().clone()))
        for key, attr in TAPS.items()]
    try:
        logits = model(x)
    finally:
        for h in handles:
            h.remove()
    for key, got in feats.items():  # model.relu must be the stem ReLU only, called once
        assert len(got) == 1, f"{key}: module called {len(got)} times"
    out = {k: v[0] for k, v in feats.items()}
    out["pooled"] = torch.flatten(out["pooled"], 1)
    # Cross-check the taps against the model's own forward.
    assert torch.equal(model.fc(out["pooled"]), logits)
    out["logits"] = logits
    return out


def check_logits(what: str, logits: torch.Tensor) -> tuple[float, float]:
    """Finite, sensibly scaled, and top-6 well separated per row (so top-5 is stable)."""
    logits = logits.reshape(-1, logits.shape[-1])
    assert torch.isfinite(logits).all(), f"{what}: non-finite logits"
    peak = logits.abs().max().item()
    assert 1e-2 < peak < 1e4, f"{what}: max|logits| = {peak}"
    top = logits.topk(6, dim=-1).values
    gap = (top[:, :-1] - top[:, 1:]).min().item()
    assert gap > MIN_TOP6_GAP_REL * peak, \
        f"{what}: top-6 gap {gap} <= {MIN_TOP6_GAP_REL} * {peak}; change MODEL_SEED"
    return peak, gap


def io_tensors(model: nn.Module, inputs: dict[str, torch.Tensor], what: str) -> tuple[dict, list]:
    tensors: dict[str, torch.Tensor] = dict(inputs)
    stats = []
    for tag in SIZES:
        outs = run_with_taps(model, inputs[f"input_{tag}"])
        for k, v in outs.items():
            assert torch.isfinite(v).all(), f"{what} {k}_{tag}: non-finite"
            tensors[f"{k}_{tag}"] = v
        stats.append((tag, *check_logits(f"{what} {tag}", outs["logits"]),
                      {k: outs[k].std().item() for k in ("stem", "layer1", "layer2", "layer3", "layer4")}))
    return tensors, stats


def print_stats(what: str, stats: list) -> None:
    for tag, peak, gap, stds in stats:
        s = " ".join(f"{k}={v:.2f}" for k, v in stds.items())
        print(f"  {what:14} {tag:8} max|logits|={peak:8.4f} min top-6 gap={gap:.3e} "
              f"({gap / peak:.1e} rel)  std: {s}")


# --------------------------------------------------------------------------- images

def load_like_a_user(path: Path) -> Image.Image:
    """EXIF orientation first (it needs the original file's metadata), then RGB."""
    with Image.open(path) as raw:
        return ImageOps.exif_transpose(raw).convert("RGB")


def crop_and_normalise(resized: Image.Image, crop: list[int], mean: list[float], std: list[float]) -> torch.Tensor:
    """The steps after the resize: centre crop, uint8 -> float / 255, normalise."""
    return TF.normalize(TF.convert_image_dtype(TF.pil_to_tensor(TF.center_crop(resized, crop)), torch.float),
                        mean, std)


@torch.no_grad()
def make_image_fixture(path: Path, resnet50: nn.Module, out: Path) -> tuple[str, float, float]:
    """rgb [H,W,3] u8, resized_v1 [h,w,3] u8, v1/v2 [3,224,224] f32, logits_v1 [1000] f32,
    resized_bicubic_235 [h,w,3] u8, a1 [3,224,224] f32."""
    img = load_like_a_user(path)
    t_v1 = ResNet50_Weights.IMAGENET1K_V1.transforms()  # resize 256, crop 224
    t_v2 = ResNet50_Weights.IMAGENET1K_V2.transforms()  # resize 232, crop 224
    v1, v2 = t_v1(img), t_v2(img)
    # The resize step alone, with exactly the preset's arguments (PIL bilinear, antialias).
    resized = TF.resize(img, t_v1.resize_size, interpolation=t_v1.interpolation, antialias=t_v1.antialias)
    # resized_v1 must reproduce v1 through the remaining steps of the preset.
    again = crop_and_normalise(resized, t_v1.crop_size, t_v1.mean, t_v1.std)
    assert torch.equal(again, v1), f"{path.name}: resize-only image does not reproduce v1"

    # timm's eval transform for crop_pct 0.95 (resnet50.a1_in1k), built from torchvision
    # transforms as timm builds it: Resize(floor(224 / 0.95), bicubic) -> CenterCrop(224)
    # -> ToTensor (float / 255) -> Normalize(ImageNet mean/std).
    bicubic = T.InterpolationMode.BICUBIC
    t_a1 = T.Compose([T.Resize(BICUBIC_RESIZE, interpolation=bicubic, antialias=True), T.CenterCrop(224),
                      T.ToTensor(), T.Normalize(t_v1.mean, t_v1.std)])
    a1 = t_a1(img)
    resized_bic = TF.resize(img, BICUBIC_RESIZE, interpolation=bicubic, antialias=True)
    # On a PIL image that is exactly PIL's own bicubic resize (shorter side 235) ...
    assert min(resized_bic.size) == BICUBIC_RESIZE, f"{path.name}: bicubic size {resized_bic.size}"
    assert np.array_equal(np.array(resized_bic), np.array(img.resize(resized_bic.size, Image.Resampling.BICUBIC))), \
        f"{path.name}: torchvision bicubic resize is not PIL's"
    # ... and resized_bicubic_235 must reproduce a1 through the remaining steps.
    again = crop_and_normalise(resized_bic, [224, 224], t_v1.mean, t_v1.std)
    assert torch.equal(again, a1), f"{path.name}: resize-only image does not reproduce a1"

    logits = resnet50(v1.unsqueeze(0))[0]
    peak, gap = check_logits(path.name, logits)
    tensors = {
        "rgb": torch.from_numpy(np.array(img, dtype=np.uint8)),
        "resized_v1": torch.from_numpy(np.array(resized, dtype=np.uint8)),
        "v1": v1, "v2": v2, "logits_v1": logits,
        "resized_bicubic_235": torch.from_numpy(np.array(resized_bic, dtype=np.uint8)),
        "a1": a1,
    }
    meta = {**versions(), "source": f"tests/data/images/{path.name}",
            "decode": "PIL.ImageOps.exif_transpose(Image.open(path)).convert('RGB')",
            "v1": "ResNet50_Weights.IMAGENET1K_V1.transforms(): resize 256 bilinear antialias, crop 224",
            "v2": "ResNet50_Weights.IMAGENET1K_V2.transforms(): resize 232 bilinear antialias, crop 224",
            "logits_v1": "resnet50.safetensors fixture model applied to v1",
            "resized_bicubic_235": "TF.resize(img, 235, BICUBIC, antialias=True) = PIL Image.resize BICUBIC",
            "a1": "timm eval transform, crop_pct 0.95: Resize(235, bicubic), CenterCrop(224), ToTensor, "
                  "Normalize(ImageNet mean/std)"}
    save_atomic(tensors, out / "images" / f"{path.stem}.safetensors", meta)
    return f"{img.width}x{img.height} -> {resized.width}x{resized.height}", peak, gap


# --------------------------------------------------------------------------- Hugging Face transformers

def hf_config(preset: str) -> transformers.ResNetConfig:
    """ResNetConfig with torchvision's architecture; the defaults it relies on are asserted."""
    config = transformers.ResNetConfig(**HF_ARCH[preset])
    # Defaults that must match torchvision: 3 input channels, ReLU everywhere, no stride in
    # stage 1 (its stride comes from the stem's max pool), and the V1.5 stride placement.
    assert config.num_channels == 3 and config.hidden_act == "relu", config
    assert config.downsample_in_first_stage is False and config.downsample_in_bottleneck is False, config
    for k, v in HF_ARCH[preset].items():
        assert getattr(config, k) == v, (k, getattr(config, k), v)
    return config


def hf_key(tv: str) -> str:
    """torchvision ResNet state_dict key -> transformers ResNetForImageClassification key.

    torchvision                      transformers
    conv1.W                          resnet.embedder.embedder.convolution.W
    bn1.B                            resnet.embedder.embedder.normalization.B
    layer{i}.{j}.conv{k}.W           resnet.encoder.stages.{i-1}.layers.{j}.layer.{k-1}.convolution.W
    layer{i}.{j}.bn{k}.B             resnet.encoder.stages.{i-1}.layers.{j}.layer.{k-1}.normalization.B
    layer{i}.{j}.downsample.0.W      resnet.encoder.stages.{i-1}.layers.{j}.shortcut.convolution.W
    layer{i}.{j}.downsample.1.B      resnet.encoder.stages.{i-1}.layers.{j}.shortcut.normalization.B
    fc.{weight,bias}                 classifier.1.{weight,bias}   (classifier.0 is nn.Flatten)

    W = weight; B = weight, bias, running_mean, running_var, num_batches_tracked.
    A headless ResNetModel has the same keys without the "resnet." prefix and no classifier.
    """
    if m := re.fullmatch(r"(conv|bn)1\.(\w+)", tv):
        kind = "convolution" if m[1] == "conv" else "normalization"
        return f"resnet.embedder.embedder.{kind}.{m[2]}"
    if m := re.fullmatch(r"fc\.(weight|bias)", tv):
        return f"classifier.1.{m[1]}"
    block = r"layer([1-4])\.(\d+)\."
    if m := re.fullmatch(block + r"(conv|bn)([1-3])\.(\w+)", tv):
        kind = "convolution" if m[3] == "conv" else "normalization"
        return f"resnet.encoder.stages.{int(m[1]) - 1}.layers.{m[2]}.layer.{int(m[4]) - 1}.{kind}.{m[5]}"
    if m := re.fullmatch(block + r"downsample\.([01])\.(\w+)", tv):
        kind = "convolution" if m[3] == "0" else "normalization"
        return f"resnet.encoder.stages.{int(m[1]) - 1}.layers.{m[2]}.shortcut.{kind}.{m[4]}"
    raise KeyError(f"no transformers name for torchvision key {tv!r}")


def load_renamed(model: nn.Module, tv_sd: dict[str, torch.Tensor], rename) -> dict[str, torch.Tensor]:
    """Load tv_sd into model under rename(key); every model tensor must be covered exactly once."""
    renamed = {rename(k): v for k, v in tv_sd.items()}
    assert len(renamed) == len(tv_sd), "name mapping is not one-to-one"
    want = model.state_dict()
    assert set(renamed) == set(want), (sorted(set(renamed) ^ set(want)))[:10]
    for k, v in renamed.items():
        assert v.shape == want[k].shape and v.dtype == want[k].dtype, (k, v.shape, want[k].shape)
    model.load_state_dict(renamed, strict=True)
    model.eval()
    got = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    assert all(torch.equal(got[k], v) for k, v in renamed.items())
    return got


def check_close(what: str, got: torch.Tensor, ref: torch.Tensor) -> float:
    """max|got - ref| relative to max|ref|, asserted below HF_MAX_DIFF_REL."""
    assert got.shape == ref.shape, (what, got.shape, ref.shape)
    rel = ((got - ref).abs().max() / ref.abs().max()).item()
    assert rel < HF_MAX_DIFF_REL, f"{what}: max diff {rel:.2e} of max|ref| >= {HF_MAX_DIFF_REL}"
    return rel


@torch.no_grad()
def make_hf_fixtures(out: Path, common: dict) -> None:
    """{P}_hf.safetensors (+ resnet18_hf_headless): fixture weights under transformers' names.

    The renamed weights are loaded into transformers' own ResNet classes and their
    forward must give the torchvision reference outputs in {P}.io.safetensors.
    """
    for preset in HF_ARCH:
        tv_sd = load_file(out / f"{preset}.safetensors")
        ref = load_file(out / f"{preset}.io.safetensors")
        config = hf_config(preset)
        arch = json.dumps({**HF_ARCH[preset], "hidden_act": config.hidden_act,
                           "downsample_in_first_stage": config.downsample_in_first_stage}, sort_keys=True)
        meta = {**common, "format": "pt", "preset": preset, "weights": f"{preset}.safetensors",
                "expected": f"{preset}.io.safetensors", "config": arch}

        model = transformers.ResNetForImageClassification(config)
        sd = load_renamed(model, tv_sd, hf_key)
        diffs = [check_close(f"{preset}_hf logits_{tag}", model(ref[f"input_{tag}"]).logits, ref[f"logits_{tag}"])
                 for tag in SIZES]
        save_atomic(sd, out / f"{preset}_hf.safetensors", {**meta, "class": "ResNetForImageClassification"})
        print(f"  {preset}_hf: {len(sd)} tensors, max|logits - torchvision| / max|logits| = "
              + ", ".join(f"{d:.1e} ({tag})" for d, tag in zip(diffs, SIZES)))

        if preset == "resnet18":
            headless = transformers.ResNetModel(config)
            body = {k: v for k, v in tv_sd.items() if not k.startswith("fc.")}
            sd = load_renamed(headless, body, lambda k: hf_key(k).removeprefix("resnet."))
            diffs = []
            for tag in SIZES:
                o = headless(ref[f"input_{tag}"])
                diffs.append(check_close(f"resnet18_hf_headless pooled_{tag}", o.pooler_output.flatten(1),
                                         ref[f"pooled_{tag}"]))
                diffs.append(check_close(f"resnet18_hf_headless layer4_{tag}", o.last_hidden_state,
                                         ref[f"layer4_{tag}"]))
            save_atomic(sd, out / "resnet18_hf_headless.safetensors", {**meta, "class": "ResNetModel"})
            print(f"  resnet18_hf_headless: {len(sd)} tensors, pooled/layer4 max rel diff {max(diffs):.1e}")


# --------------------------------------------------------------------------- .pth checkpoints

class RunsShellOnLoad:
    """Pickles as a call to os.system: unpickling it runs `touch /tmp/resnet-zoo-pwned`.

    Only ever pickled (torch.save does not call it); pth/malicious.pth must never be loaded.
    """

    def __reduce__(self):
        return (os.system, (f"touch {PWNED}",))


def save_pth_atomic(obj, path: Path, **kwargs) -> None:
    """torch.save to {stem}.tmp, then rename. torch names the zip's root folder after the
    file name less its last extension, so it is "{stem}/" as when saving to path itself."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp, **kwargs)
    os.replace(tmp, path)


def pickle_globals(path: Path) -> list[str]:
    """Sorted "module name" of every GLOBAL / STACK_GLOBAL in a torch.save file, found
    with pickletools.genops alone (nothing is unpickled).

    Zip format: the pickle is {root}/data.pkl. Legacy format: five pickles back to back
    (magic number, protocol version, sys info, the object, storage keys), then raw data.
    STACK_GLOBAL (protocol >= 4) takes its two strings from the stack; they are tracked
    through the memo, which is enough for what pickle itself emits.
    """
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            pkl = [n for n in z.namelist() if n == "data.pkl" or n.endswith("/data.pkl")]
            assert len(pkl) == 1, pkl
            streams, count = io.BytesIO(z.read(pkl[0])), 1
    else:
        streams, count = io.BytesIO(path.read_bytes()), 5
    found: set[str] = set()
    for _ in range(count):
        pushed: list = []  # values pushed so far (None for anything that is not a string)
        memo: dict = {}
        for op, arg, _pos in pickletools.genops(streams):  # stops after this pickle's STOP
            if op.name == "GLOBAL":
                found.add(arg)
            elif op.name == "STACK_GLOBAL":
                found.add(f"{pushed[-2]} {pushed[-1]}")
            if op.name in ("MEMOIZE", "PUT", "BINPUT", "LONG_BINPUT"):
                memo[len(memo) if op.name == "MEMOIZE" else arg] = pushed[-1] if pushed else None
            elif op.name in ("GET", "BINGET", "LONG_BINGET"):
                pushed.append(memo.get(arg))
            else:
                is_str = isinstance(arg, str) and ("UNICODE" in op.name or "STRING" in op.name)
                pushed.append(arg if is_str else None)
    return sorted(found)


@torch.no_grad()
def make_pth_fixtures(out: Path, common: dict) -> None:
    """pth/*.pth: torch.save files for a converter that reads them without unpickling.

    resnet18.pth         model.state_dict() (OrderedDict with _metadata), default zip format.
    resnet18_params.pth  dict(model.named_parameters()) (nn.Parameter, so
                         torch._utils._rebuild_parameter) plus dict(model.named_buffers()).
    resnet18_f16.pth     the state_dict with floating tensors in float16.
    nested.pth           {"state_dict": sd, "epoch": 3, "arch": "resnet18"}.
    malicious.pth        {"fc.weight", "fc.bias", "payload": RunsShellOnLoad()}: its pickle
                         calls os.system (GLOBAL "posix system"). Never load it.
    legacy.pth           the state_dict, _use_new_zipfile_serialization=False (not a zip).
    strided.pth          {"transposed": fc.weight.t() (strides (1, 512)),
                          "sliced": big[10:20] of a [30, 7] arange (storage offset 70)};
                         torch.save keeps the views, storing each whole storage.
    strided_expected.safetensors  the same two tensors made contiguous.

    Every file but malicious.pth is read back with torch.load(weights_only=True) (the
    restricted unpickler) and compared. All hold resnet18.safetensors values.
    """
    pth = out / "pth"
    model = fresh_model("resnet18", load_file(out / "resnet18.safetensors"))
    state = model.state_dict()
    sd = dict(state)
    strided = {"transposed": sd["fc.weight"].t(),
               "sliced": torch.arange(30 * 7, dtype=torch.float32).reshape(30, 7)[10:20]}
    assert not strided["transposed"].is_contiguous() and strided["sliced"].storage_offset() == 70
    expected = {k: v.contiguous() for k, v in strided.items()}
    save_atomic(expected, pth / "strided_expected.safetensors",
                {**common, "format": "pt", "source": "pth/strided.pth", "note": "contiguous copies of its views"})

    if PWNED.exists():  # left over from elsewhere: remove it so the check below means something
        print(f"  removing pre-existing {PWNED}")
        PWNED.unlink()
    checkpoints = {
        "resnet18": (state, {}),
        "resnet18_params": ({**dict(model.named_parameters()), **dict(model.named_buffers())}, {}),
        "resnet18_f16": (cast_floats(sd, torch.float16), {}),
        "nested": ({"state_dict": sd, "epoch": 3, "arch": "resnet18"}, {}),
        "malicious": ({"fc.weight": sd["fc.weight"], "fc.bias": sd["fc.bias"], "payload": RunsShellOnLoad()}, {}),
        "legacy": (sd, {"_use_new_zipfile_serialization": False}),
        "strided": (strided, {}),
    }
    assert tuple(checkpoints) == PTH_FILES
    for name, (obj, kwargs) in checkpoints.items():
        path = pth / f"{name}.pth"
        save_pth_atomic(obj, path, **kwargs)
        if name == "legacy":
            assert not zipfile.is_zipfile(path)
        else:
            with zipfile.ZipFile(path) as z:
                assert f"{name}/data.pkl" in z.namelist(), z.namelist()
        found = pickle_globals(path)
        print(f"  pth/{name}.pth: {path.stat().st_size} bytes, globals: {', '.join(found)}")
        if name == "malicious":
            assert "posix system" in found, found  # the payload really is in the pickle
            continue  # and it is never unpickled
        assert "posix system" not in found, found
        back = torch.load(path, map_location="cpu", weights_only=True)
        if name == "nested":
            assert back["epoch"] == 3 and back["arch"] == "resnet18"
            back, obj = back["state_dict"], obj["state_dict"]
        assert list(back) == list(obj), name
        for k, v in obj.items():
            assert type(back[k]) is type(v) and back[k].dtype == v.dtype and torch.equal(back[k], v), (name, k)
            assert back[k].stride() == v.stride() and back[k].storage_offset() == v.storage_offset(), (name, k)
        if name == "resnet18_params":
            assert isinstance(back["conv1.weight"], nn.Parameter) and back["conv1.weight"].requires_grad
    assert not PWNED.exists(), f"{PWNED} was created: something unpickled malicious.pth"


# --------------------------------------------------------------------------- main

def generate(out: Path) -> None:
    torch.set_num_threads(2)
    inputs = make_inputs()
    common = {**versions(), "generator": "tests/parity/make_fixtures.py"}
    resnet50_sd = None

    for preset in PRESETS:
        t0 = time.time()
        model = build_model(preset)
        sd = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
        meta = {**common, "format": "pt", "preset": preset, "seed": str(MODEL_SEED[preset])}
        if preset in PRESET_NOTE:
            meta["arch"] = PRESET_NOTE[preset]
        save_atomic(sd, out / f"{preset}.safetensors", meta)
        tensors, stats = io_tensors(model, inputs, preset)
        save_atomic(tensors, out / f"{preset}.io.safetensors",
                    {**meta, "input_seed": str(INPUT_SEED), "weights": f"{preset}.safetensors"})
        print_stats(preset, stats)
        if preset == "resnet50_v1":
            check_v1_stride(sd, inputs, tensors)
        print(f"  {preset}: {time.time() - t0:.1f}s")
        if preset == "resnet18":
            make_dtype_fixtures(sd, inputs, tensors, out, common)
        if preset == "resnet50":
            resnet50_sd = sd

    assert resnet50_sd is not None
    resnet50 = fresh_model("resnet50", resnet50_sd)
    for path in image_files():
        size, peak, gap = make_image_fixture(path, resnet50, out)
        print(f"  image {path.name:22} {size:20} max|logits|={peak:.4f} min top-6 gap={gap:.3e}")

    # Both read the weights written above back from their files.
    make_hf_fixtures(out, common)
    make_pth_fixtures(out, common)


def make_dtype_fixtures(sd: dict, inputs: dict, ref: dict, out: Path, common: dict) -> None:
    """resnet18 weights in f64 (reuses resnet18.io) and f16/bf16 (own io files)."""
    meta = {**common, "format": "pt", "preset": "resnet18", "seed": str(MODEL_SEED["resnet18"])}
    sd64 = cast_floats(sd, torch.float64)
    save_atomic(sd64, out / "resnet18_f64.safetensors", {**meta, "expected": "resnet18.io.safetensors"})
    # Informational: how far a true float64 forward lands from the float32 reference.
    m64 = fresh_model("resnet18", sd).double()
    with torch.no_grad():
        d = (m64(inputs["input_224"].double()).float() - ref["logits_224"]).abs().max().item()
    print(f"  resnet18_f64: max|f64 forward - f32 logits_224| = {d:.2e}")

    for tag, dtype_name in LOW_PRECISION.items():
        low = cast_floats(sd, getattr(torch, dtype_name))
        save_atomic(low, out / f"resnet18_{tag}.safetensors", meta)
        model = fresh_model("resnet18", cast_floats(low, torch.float32))
        tensors, stats = io_tensors(model, inputs, f"resnet18_{tag}")
        save_atomic(tensors, out / f"resnet18_{tag}.io.safetensors",
                    {**meta, "input_seed": str(INPUT_SEED), "weights": f"resnet18_{tag}.safetensors",
                     "note": f"float32 forward with weights rounded to {tag}"})
        print_stats(f"resnet18_{tag}", stats)
        d = (tensors["logits_224"] - ref["logits_224"]).abs().max().item()
        print(f"  resnet18_{tag}: max|logits_224 - f32 weights logits_224| = {d:.2e}")


def main(args: argparse.Namespace) -> int:
    out: Path = args.out
    stamp_path = out / "STAMP"
    t0 = time.time()
    out.mkdir(parents=True, exist_ok=True)
    stamp_path.unlink(missing_ok=True)  # an interrupted run must not look complete
    generate(out)
    tmp = stamp_path.with_name("STAMP.tmp")
    tmp.write_text(stamp_text())
    os.replace(tmp, stamp_path)
    print(f"{out}: fixtures written in {time.time() - t0:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main(ARGS))
