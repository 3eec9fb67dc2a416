"""Generate PyTorch reference fixtures (torchvision, timm, CIFAR) for the resnet-zoo parity tests.

What it writes (into --out, default tests/fixtures/, which is git-ignored):

  {P}.safetensors         state_dict of the reference model P, under the reference's OWN
                          key names (num_batches_tracked included), seeded (MODEL_SEED), with
                          every normalisation layer made random and non-trivial (see
                          randomise_batchnorm / randomise_preact) and the classifier bias
                          ~ N(0, 0.1). The presets and their references:
                          - torchvision.models.{P}(weights=None): resnet18/34/50/101/152,
                            resnext50_32x4d, wide_resnet50_2, and resnet50_v1 (torchvision's
                            resnet50 with the paper's stride placement, see tv_model);
                          - timm.create_model(P, pretrained=False): resnet50d, resnet101d
                            (ResNet-D: deep stem, avg-pool shortcut), resnetv2_50, resnetv2_101
                            (pre-activation, BatchNorm) and resnetv2_50x1_bit (BiT: StdConv2d +
                            GroupNorm), 1000 classes;
                          - the CIFAR ResNets of He et al. 2015 (section 4.2), CifarResNet in
                            this file: resnet20/32/44/56/110 (shortcut option A) and
                            resnet20_b/32_b/44_b/56_b/110_b (option B), 10 classes.
  {P}.io.safetensors      inputs and float32 reference activations, per input size tag S
                          (SIZES, per family; N = batch):
                            torchvision presets: S in {224 (N=2), 160x192 (N=1, H=160, W=192)};
                            timm presets:        S in {224 (N=2), 200x168 (N=1)}: odd stage maps
                                                 (100/50/25/13/7 x 84/42/21/11/6), for the
                                                 ResNet-D shortcut's ceil_mode avg pool;
                            CIFAR presets:       S in {32 (N=2), 28x36 (N=1)}.
                          Every family draws its inputs from its own generator seeded with
                          INPUT_SEED, so input_224 is the same tensor for torchvision and timm.
                          Tensors: input_S [N,3,H,W], and
                            stem_S      torchvision/CIFAR: after conv1/bn1/relu (before the max
                                        pool; CIFAR has none); ResNet-D: timm's act1 (after the
                                        deep stem and bn1 + ReLU, before the max pool);
                                        resnetv2/BiT: the output of stem.conv (no norm in a
                                        pre-activation stem; before BiT's zero pad and pool);
                            layer1_S .. layer4_S  stage outputs (CIFAR: layer1_S .. layer3_S;
                                        resnetv2/BiT: stages.{K-1}, the residual sum, before
                                        the final norm);
                            features_S  what the head pools (timm's forward_features): the last
                                        stage output, or for resnetv2/BiT norm(stages(x)), after
                                        the final norm + ReLU;
                            pooled_S [N,C]  global average of features_S;
                            logits_S [N,classes]  model(x).
                          At the first size tag these taps must be bit-identical to what the
                          official feature APIs return (check_feature_apis): torchvision's
                          create_feature_extractor (torchvision and CIFAR presets), timm's
                          features_only model and forward_intermediates (timm presets).
  {P}.cam.safetensors     P in CAM_PRESETS: class-activation maps of the reference model on
                          input_224, for each image's top-1 class (see make_cam_fixtures):
                          input, classes, cam [N,h,w], cam_224 [N,224,224].
  models.json             every preset of the zoo (MANIFEST_PRESETS, fixtures or not):
                          reference, family, params, macs (torch.utils.flop_counter FLOPs // 2
                          at batch 1, 224x224 or 32x32 for CIFAR), flops_by_op, input_size,
                          num_classes, fixtures (see make_manifest).
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

# Fixture presets, by reference implementation (see family()).
TV_PRESETS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
              # Bottleneck variants: grouped 3x3 (32 groups of 4 channels per 64), double-width
              # 3x3, and the paper's original stride placement (see tv_model).
              "resnext50_32x4d", "wide_resnet50_2", "resnet50_v1")
# timm.create_model names: ResNet-D (deep 3x3 stem, avg-pool downsample shortcut), pre-activation
# ResNet V2 with BatchNorm, and BiT (pre-activation, StdConv2d + GroupNorm, padded stem pool).
TIMM_PRESETS = ("resnet50d", "resnet101d", "resnetv2_50", "resnetv2_101", "resnetv2_50x1_bit")
# CIFAR ResNets (He et al. 2015, section 4.2): depth 6n+2 -> n basic blocks per stage.
# "{P}" uses shortcut option A (stride + zero channel padding), "{P}_b" option B (1x1 projection).
CIFAR_BLOCKS = {"resnet20": 3, "resnet32": 5, "resnet44": 7, "resnet56": 9, "resnet110": 18}
CIFAR_PRESETS = tuple(CIFAR_BLOCKS) + tuple(f"{p}_b" for p in CIFAR_BLOCKS)
PRESETS = TV_PRESETS + TIMM_PRESETS + CIFAR_PRESETS
# models.json covers every preset of the zoo; the ones not in PRESETS have no fixtures.
MANIFEST_PRESETS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
                    "resnet50_v1", "resnet101_v1", "resnet152_v1",
                    "resnext50_32x4d", "resnext101_32x8d", "resnext101_64x4d",
                    "wide_resnet50_2", "wide_resnet101_2") + TIMM_PRESETS + CIFAR_PRESETS
# One seed per preset, picked so that check_logits passes (for resnet18 also on the
# f16/bf16 copies, for resnet50 also on every photo in tests/data/images). If the
# check rejects a model, change its seed here; never loosen the check.
MODEL_SEED = {"resnet18": 1090, "resnet34": 1031, "resnet50": 1072, "resnet101": 1023, "resnet152": 1024,
              "resnext50_32x4d": 1102, "wide_resnet50_2": 1201, "resnet50_v1": 1301,
              "resnet50d": 1401, "resnet101d": 1403, "resnetv2_50": 1501, "resnetv2_101": 1503,
              "resnetv2_50x1_bit": 1602,
              "resnet20": 1701, "resnet32": 1702, "resnet44": 1703, "resnet56": 1704, "resnet110": 1705,
              "resnet20_b": 1810, "resnet32_b": 1802, "resnet44_b": 1803, "resnet56_b": 1804,
              "resnet110_b": 1805}
# *_v1 presets: the first (downsampling) Bottleneck of each of these stages strides its
# conv1 (first 1x1) instead of its conv2 (3x3).
V1_STRIDED_STAGES = ("layer2", "layer3", "layer4")
# Minimum gap between consecutive top-6 logits, relative to max|logits|. The
# requirement is 1e-4; 1e-3 leaves margin for summation-order differences.
MIN_TOP6_GAP_REL = 1e-3
INPUT_SEED = 7
# Input sizes per family: tag -> (N, H, W). "160x192" is H=160, W=192 (non-square on purpose).
# 200x168 gives odd maps at every timm stage: 100/50/25/13/7 x 84/42/21/11/6, so ResNet-D's
# AvgPool2d(2, ceil_mode=True, count_include_pad=False) shortcut sees partial windows.
IMAGENET_ODD_SIZES = {"224": (2, 224, 224), "200x168": (1, 200, 168)}
SIZES = {"torchvision": {"224": (2, 224, 224), "160x192": (1, 160, 192)},
         "timm_resnet": IMAGENET_ODD_SIZES,
         "timm_resnetv2": IMAGENET_ODD_SIZES,
         "cifar": {"32": (2, 32, 32), "28x36": (1, 28, 36)}}
# Activations captured by forward hooks, per family: fixture name -> submodule path
# (model.get_submodule). Every hooked module must run exactly once per forward.
_TV_STAGES = {f"layer{k}": f"layer{k}" for k in (1, 2, 3, 4)}
TAPS = {
    "torchvision": {"stem": "relu", **_TV_STAGES, "features": "layer4", "pooled": "avgpool"},
    "timm_resnet": {"stem": "act1", **_TV_STAGES, "features": "layer4", "pooled": "global_pool"},
    # stages.{K-1} is the raw residual sum; "norm" (final norm + ReLU) is what the head pools.
    "timm_resnetv2": {"stem": "stem.conv", **{f"layer{k}": f"stages.{k - 1}" for k in (1, 2, 3, 4)},
                      "features": "norm", "pooled": "head.global_pool"},
    "cifar": {"stem": "relu", "layer1": "layer1", "layer2": "layer2", "layer3": "layer3",
              "features": "layer3", "pooled": "avgpool"},
}
# BatchNorm calibration: a few random batches in train mode with momentum=None, at the
# family's training resolution (CIFAR: 32).
CALIB_BATCHES, CALIB_N = 4, 4
CALIB_HW = {"torchvision": 160, "timm_resnet": 160, "timm_resnetv2": 160, "cifar": 32}
# models.json: FLOPs of one forward at batch 1 and this square input size.
MANIFEST_HW = {"torchvision": 224, "timm_resnet": 224, "timm_resnetv2": 224, "cifar": 32}
# Stage outputs (layerK, features) must stay well scaled; see check_scale.
STAGE_STD_RANGE, STAGE_MAX_ABS = (0.2, 5.0), 100.0
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
# Class-activation maps (make_cam_fixtures): a post-activation net (torchvision fc) and a
# pre-activation one (timm head.fc, a 1x1 conv, after the final norm + ReLU).
CAM_PRESETS = ("resnet18", "resnetv2_50")
PACKAGES = ("torch", "torchvision", "safetensors", "numpy", "pillow", "transformers", "timm")


def family(preset: str) -> str:
    """Which reference builds the preset, and so its SIZES / TAPS / CALIB_HW entry."""
    if preset in TIMM_PRESETS:
        return "timm_resnetv2" if preset.startswith("resnetv2_") else "timm_resnet"
    if preset.removesuffix("_b") in CIFAR_BLOCKS:
        return "cifar"
    return "torchvision"


# --------------------------------------------------------------------------- stamp
# Only the standard library is used up to the up-to-date check, so a run with
# nothing to do returns in well under a second instead of paying ~8 s of imports.

def versions() -> dict[str, str]:
    ver = {}
    for pkg in PACKAGES:
        try:
            ver[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            if not MODELS_ONLY:
                raise
            ver[pkg] = "absent"
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
    names += ["models.json", "resnet18_f64.safetensors"] + [f"{p}.cam.safetensors" for p in CAM_PRESETS]
    names += [f"resnet18_{t}{s}" for t in LOW_PRECISION for s in (".safetensors", ".io.safetensors")]
    if not MODELS_ONLY:
        names += [f"images/{p.stem}.safetensors" for p in image_files()]
        names += [f"{p}_hf.safetensors" for p in HF_ARCH] + ["resnet18_hf_headless.safetensors"]
        names += [f"pth/{n}.pth" for n in PTH_FILES] + ["pth/strided_expected.safetensors"]
    return [out / n for n in names]


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description="Generate torchvision / timm / CIFAR ResNet parity fixtures.")
    ap.add_argument("--out", type=Path, default=REPO / "tests" / "fixtures")
    ap.add_argument("--force", action="store_true", help="regenerate even if STAMP matches")
    ap.add_argument("--models-only", action="store_true",
                    help="only the presets' weights and outputs, resnet18's dtype files and models.json "
                         "(what tests/parity.rs and tests/backbone.rs read; scripts/gpu-check.sh), "
                         "without transformers, the photos, the .pth files")
    return ap.parse_args()


def up_to_date(out: Path, force: bool) -> bool:
    stamp_path = out / "STAMP"
    return (not force and stamp_path.is_file() and stamp_path.read_text() == stamp_text()
            and all(p.is_file() for p in expected_files(out)))


MODELS_ONLY = False

if __name__ == "__main__":
    ARGS = parse_args()
    MODELS_ONLY = ARGS.models_only
    if up_to_date(ARGS.out, ARGS.force):
        print(f"{ARGS.out}: fixtures up to date (STAMP matches)")
        sys.exit(0)

# Heavy imports, needed only when (re)generating.
import numpy as np  # noqa: E402
import timm  # noqa: E402
import torch  # noqa: E402
import torchvision  # noqa: E402
from PIL import Image, ImageOps  # noqa: E402
from safetensors import safe_open  # noqa: E402
from safetensors.torch import load_file, save  # noqa: E402
from timm.layers import GroupNormAct, StdConv2d  # noqa: E402
from timm.models.resnetv2 import DownsampleConv, PreActBottleneck  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402
from torchvision import transforms as T  # noqa: E402
from torchvision.models import ResNet50_Weights  # noqa: E402
from torchvision.models.feature_extraction import create_feature_extractor  # noqa: E402
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

def stages_of(model: nn.Module) -> list[nn.Sequential]:
    """layer1 .. layer4 of a torchvision-style ResNet (torchvision, timm ResNet; CIFAR: .. layer3)."""
    return [getattr(model, f"layer{k}") for k in (1, 2, 3, 4) if hasattr(model, f"layer{k}")]


def calibrate_batchnorm(model: nn.Module, gen: torch.Generator, hw: int) -> None:
    """Steps 1 and 2 of randomise_batchnorm: calibrate, then perturb, every BatchNorm2d
    (timm's BatchNormAct2d included: it subclasses nn.BatchNorm2d)."""
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
    model.train()
    with torch.no_grad():
        for _ in range(CALIB_BATCHES):
            model(torch.randn(CALIB_N, 3, hw, hw, generator=gen))
        for bn in bns:
            bn.momentum = 0.1  # back to the torchvision / timm default (not part of the state_dict)
            c = bn.num_features
            bn.weight.copy_(torch.empty(c).uniform_(0.5, 1.5, generator=gen))
            bn.bias.copy_(torch.randn(c, generator=gen) * 0.1)
            bn.running_mean.add_(torch.randn(c, generator=gen) * 0.1 * bn.running_var.sqrt())
            bn.running_var.mul_(torch.empty(c).uniform_(0.5, 2.0, generator=gen))
    model.eval()


def randomise_batchnorm(model: nn.Module, gen: torch.Generator, hw: int) -> None:
    """Make every BatchNorm non-trivial while keeping activations well-conditioned.

    For post-activation ResNets with stages layer1..layerK: torchvision, timm's ResNet-D,
    the CIFAR ResNets. (Pre-activation nets: randomise_preact.)

    0. Reset every BatchNorm to the identity affine (weight 1, bias 0). torchvision and
       CifarResNet already init them so (nothing changes, nothing is drawn); timm's
       zero_init_last zeroes each block's last BN weight, which would calibrate the
       stream of a network whose residual branches are all switched off.
    1. Calibrate: reset running stats, run CALIB_BATCHES random batches of hw x hw in
       train mode with momentum=None (cumulative average), so running_mean/var match the
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
       output stays at std ~ 0.5-1.5, |x| < ~20 (see check_scale).
    """
    with torch.no_grad():
        for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):
            bn.weight.fill_(1.0)
            bn.bias.zero_()
    calibrate_batchnorm(model, gen, hw)
    with torch.no_grad():
        for stage in stages_of(model):
            damp = len(stage) ** -0.5
            for block in stage:
                last = block.bn3 if hasattr(block, "bn3") else block.bn2
                last.weight.mul_(damp)
                last.bias.mul_(damp)


def randomise_preact(model: nn.Module, gen: torch.Generator, hw: int) -> None:
    """randomise_batchnorm for timm's pre-activation ResNetV2 (resnetv2_50/101, BiT).

    A PreActBottleneck computes s + conv3(norm3(conv2(norm2(conv1(norm1(x)))))), where
    s = x, or in block 0 of a stage s = downsample.conv(norm1(x)) (a 1x1 projection).
    No norm follows conv3, so the branch is damped where it ends, by 1/sqrt(blocks in
    the stage) as in randomise_batchnorm:

    - BatchNorm nets (plain Conv2d, resnetv2_*): conv3.weight is scaled BEFORE the
      calibration, so the running statistics are those of the damped network; then
      steps 1 and 2 of randomise_batchnorm (calibrate_batchnorm). Every BN starts from
      timm's init, weight 1 and bias 0.
    - BiT (StdConv2d + GroupNorm): a standardised conv ignores the scale of its weight,
      and maps inputs of rms r to outputs of rms ~ r * sqrt(fan_in). GroupNorm has no
      running statistics: every GroupNormAct gets weight ~ U(0.5, 1.5), bias ~ N(0, 0.1),
      then the norm feeding each conv that writes into the residual stream is damped
      (ReLU(d * y) = d * ReLU(y) for d > 0):
        norm3 (feeds conv3)                                       by 1/sqrt(mid_chs * blocks)
        norm1 of block 0 (feeds the projection, downsample.conv)  by 1/sqrt(in_chs)
      norm1's other consumer, conv1, is followed by norm2, which undoes that scale.
      The stem conv has no norm before it and keeps its gain: stem_S has std ~ sqrt(3 * 7 * 7)
      ~ 12 (the first norm1 normalises it).
    """
    blocks = [(len(stage.blocks), block) for stage in model.stages for block in stage.blocks]
    bit = isinstance(model.stem.conv, StdConv2d)
    with torch.no_grad():
        if not bit:
            for n, block in blocks:
                block.conv3.weight.mul_(n ** -0.5)
            calibrate_batchnorm(model, gen, hw)
            return
        for gn in (m for m in model.modules() if isinstance(m, nn.GroupNorm)):
            c = gn.num_channels
            gn.weight.copy_(torch.empty(c).uniform_(0.5, 1.5, generator=gen))
            gn.bias.copy_(torch.randn(c, generator=gen) * 0.1)
        for n, block in blocks:
            damp = (block.conv3.in_channels * n) ** -0.5
            block.norm3.weight.mul_(damp)
            block.norm3.bias.mul_(damp)
            if block.downsample is not None:
                damp = block.downsample.conv.in_channels ** -0.5
                block.norm1.weight.mul_(damp)
                block.norm1.bias.mul_(damp)
    model.eval()


def classifier(model: nn.Module) -> nn.Module:
    """The final linear map: fc (torchvision, timm ResNet, CIFAR), head.fc (timm ResNetV2, a 1x1 Conv2d)."""
    return model.get_classifier() if hasattr(model, "get_classifier") else model.fc


def tv_model(preset: str) -> nn.Module:
    """torchvision.models.{preset}(weights=None), or for resnet{50,101,152}_v1 the paper's ResNet.

    The *_v1 presets are the ORIGINAL ResNets (He et al. 2015, the Caffe models): identical
    to torchvision's resnet50/101/152 ("ResNet V1.5") except that every downsampling
    Bottleneck (block 0 of layer2, layer3, layer4) has its stride 2 on conv1 (the first 1x1)
    and stride 1 on conv2 (the 3x3). They are built from torchvision's model by moving those
    two strides; the downsample projection (downsample.0, 1x1) keeps its stride 2. A stride
    is not a parameter, so the state_dict keys and shapes are torchvision's and the init
    draws the same random numbers. (Bottleneck.stride is only stored, not used in forward,
    so it is left alone.)
    """
    base = preset.removesuffix("_v1")
    model = getattr(torchvision.models, base)(weights=None)
    check_variant(base, model)
    if base == preset:
        return model
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
    want = {"resnext50_32x4d": (32, 128), "resnext101_32x8d": (32, 256), "resnext101_64x4d": (64, 256),
            "wide_resnet50_2": (1, 128), "wide_resnet101_2": (1, 128), "resnet50": (1, 64)}.get(preset)
    if want is None:
        return
    groups, width = want  # width: channels of layer1's 3x3 = 64 * width_per_group / 64 * groups
    assert model.layer1[0].conv2.in_channels == width, (preset, model.layer1[0].conv2)
    for stage in (model.layer1, model.layer2, model.layer3, model.layer4):
        for block in stage:
            assert block.conv2.groups == groups and block.conv1.groups == block.conv3.groups == 1, (preset, block)


def timm_model(preset: str) -> nn.Module:
    """timm.create_model(preset, pretrained=False), 1000 classes; architecture asserted."""
    model = timm.create_model(preset, pretrained=False, num_classes=1000)
    check_timm_variant(preset, model)
    return model


def conv_spec(conv: nn.Module) -> tuple:
    """(type, in, out, kernel, stride, padding, groups, has bias) of a Conv2d."""
    return (type(conv), conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
            conv.groups, conv.bias is not None)


def check_timm_variant(preset: str, model: nn.Module) -> None:
    """What timm builds for each preset is the architecture the Rust side implements.

    ResNet-D (resnet50d/101d): deep stem conv1 = [3x3 s2 3->32, BN, ReLU, 3x3 32->32, BN,
    ReLU, 3x3 32->64] then bn1/act1/maxpool; strides on the 3x3 conv2; block 0 of every
    stage has downsample = [AvgPool2d(2, 2, ceil_mode, count_include_pad=False) (layer1:
    Identity), 1x1 conv stride 1, BN].
    resnetv2_* / BiT: pre-activation bottlenecks, stem = 7x7 s2 conv (no norm) + max pool
    (BiT: ConstantPad2d(1, 0) + MaxPool2d(3, 2, padding 0)), block 0 of each stage has a
    1x1 strided projection without norm, final norm + ReLU, head.fc a 1x1 Conv2d with bias.
    BiT: every conv but head.fc is StdConv2d(eps=1e-8), every norm GroupNormAct(32 groups).
    """
    depth = {"resnet50d": (3, 4, 6, 3), "resnet101d": (3, 4, 23, 3), "resnetv2_50": (3, 4, 6, 3),
             "resnetv2_101": (3, 4, 23, 3), "resnetv2_50x1_bit": (3, 4, 6, 3)}[preset]
    if family(preset) == "timm_resnet":
        stem = model.conv1
        assert isinstance(stem, nn.Sequential), f"{preset}: no deep stem: conv1 = {stem}"
        assert [type(m) for m in stem] == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU] * 2 + [nn.Conv2d], stem
        for i, (cin, cout, s) in {0: (3, 32, 2), 3: (32, 32, 1), 6: (32, 64, 1)}.items():
            assert conv_spec(stem[i]) == (nn.Conv2d, cin, cout, (3, 3), (s, s), (1, 1), 1, False), (i, stem[i])
        assert isinstance(model.bn1, nn.BatchNorm2d) and model.bn1.num_features == 64
        mp = model.maxpool
        assert isinstance(mp, nn.MaxPool2d) and (mp.kernel_size, mp.stride, mp.padding) == (3, 2, 1), mp
        assert tuple(len(s) for s in stages_of(model)) == depth
        for k, stage in enumerate(stages_of(model), start=1):
            for j, block in enumerate(stage):
                s = 2 if k > 1 and j == 0 else 1
                assert block.conv1.stride == (1, 1) and block.conv2.stride == (s, s), (k, j)
                if j > 0:
                    assert block.downsample is None, (k, j)
                    continue
                assert isinstance(block.downsample, nn.Sequential) and len(block.downsample) == 3, \
                    f"{preset} layer{k}.0: no avg-pool shortcut: {block.downsample}"
                pool, conv, bn = block.downsample
                if s == 1:
                    assert isinstance(pool, nn.Identity), (k, pool)
                else:
                    assert type(pool) is nn.AvgPool2d, (k, pool)
                    assert (pool.kernel_size, pool.stride, pool.padding, pool.ceil_mode, pool.count_include_pad) \
                        == (2, 2, 0, True, False), (k, pool)
                assert conv_spec(conv)[3:] == ((1, 1), (1, 1), (0, 0), 1, False) and isinstance(bn, nn.BatchNorm2d)
        assert isinstance(model.layer1[0].downsample[0], nn.Identity)
        return

    bit = preset.endswith("_bit")
    conv_type, norm_type = (StdConv2d, GroupNormAct) if bit else (nn.Conv2d, timm.layers.BatchNormAct2d)
    stem = dict(model.stem.named_children())
    assert list(stem) == (["conv", "pad", "pool"] if bit else ["conv", "pool"]), model.stem
    assert conv_spec(stem["conv"]) == (conv_type, 3, 64, (7, 7), (2, 2), (3, 3), 1, False), stem["conv"]
    pool = stem["pool"]
    assert type(pool) is nn.MaxPool2d and (pool.kernel_size, pool.stride, pool.padding) == (3, 2, 0 if bit else 1)
    if bit:
        pad = stem["pad"]
        assert type(pad) is nn.ConstantPad2d and pad.padding == (1, 1, 1, 1) and pad.value == 0.0, pad
    body_convs = [m for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and not n.startswith("head.")]
    assert all(type(c) is conv_type for c in body_convs), {type(c) for c in body_convs}
    if bit:
        assert all(c.eps == 1e-8 for c in body_convs), {c.eps for c in body_convs}
    norms = [m for m in model.modules() if isinstance(m, (nn.BatchNorm2d, nn.GroupNorm))]
    assert norms and all(type(m) is norm_type for m in norms), {type(m) for m in norms}
    assert not bit or all(m.num_groups == 32 for m in norms)
    assert isinstance(model.norm, norm_type) and isinstance(model.norm.act, nn.ReLU)
    assert tuple(len(s.blocks) for s in model.stages) == depth
    for k, stage in enumerate(model.stages):
        for j, block in enumerate(stage.blocks):
            s = 2 if k > 0 and j == 0 else 1
            assert type(block) is PreActBottleneck and block.conv2.stride == (s, s), (k, j)
            if j == 0:
                ds = block.downsample
                assert type(ds) is DownsampleConv and isinstance(ds.norm, nn.Identity), (k, ds)
                assert conv_spec(ds.conv)[3:] == ((1, 1), (s, s), (0, 0), 1, False), (k, ds.conv)
            else:
                assert block.downsample is None, (k, j)
    assert conv_spec(model.head.fc) == (nn.Conv2d, 2048, 1000, (1, 1), (1, 1), (0, 0), 1, True), model.head.fc


class CifarBasicBlock(nn.Module):
    """relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)), 3x3 convs without bias.

    shortcut: identity when stride 1 and in == out channels, otherwise
      option "A": x[:, :, ::s, ::s] zero-padded from in to out channels, p0 = (out - in) // 2
                  zero channels before and out - in - p0 after (no parameters);
      option "B": downsample = [1x1 conv stride s, no bias; BatchNorm2d] (downsample.0/1).
    """

    def __init__(self, cin: int, cout: int, stride: int, option: str):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()
        self.stride = stride
        self.pad: tuple[int, int] | None = None  # option A: zero channels (before, after)
        self.downsample: nn.Module | None = None
        if stride != 1 or cin != cout:
            if option == "A":
                p0 = (cout - cin) // 2
                self.pad = (p0, cout - cin - p0)
            else:
                self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False),
                                                nn.BatchNorm2d(cout))

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        if self.downsample is not None:
            return self.downsample(x)
        if self.pad is not None:
            s = self.stride
            return F.pad(x[:, :, ::s, ::s], (0, 0, 0, 0, *self.pad))  # (W, H, C) pads, last dim first
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """The CIFAR-10 ResNets of He et al. 2015, section 4.2: depth 6n + 2.

    conv1 (3x3, 3 -> 16, stride 1, no bias), bn1, relu (no max pool); layer1, layer2,
    layer3 = n CifarBasicBlocks of 16, 32, 64 channels, block 0 of layer2/layer3 with
    stride 2; global average pool, fc = Linear(64, num_classes). Init as torchvision's
    ResNet: kaiming_normal_(fan_out, relu) for the convs, PyTorch defaults otherwise.
    """

    def __init__(self, blocks: int, option: str, num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU()  # the stem's only: the blocks have their own
        self.layer1 = self._stage(16, 16, 1, blocks, option)
        self.layer2 = self._stage(16, 32, 2, blocks, option)
        self.layer3 = self._stage(32, 64, 2, blocks, option)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    @staticmethod
    def _stage(cin: int, cout: int, stride: int, blocks: int, option: str) -> nn.Sequential:
        return nn.Sequential(*(CifarBasicBlock(cin if j == 0 else cout, cout, stride if j == 0 else 1, option)
                               for j in range(blocks)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def cifar_model(preset: str) -> nn.Module:
    """CifarResNet for resnet{20,32,44,56,110} (option A) and resnet{..}_b (option B)."""
    base = preset.removesuffix("_b")
    option = "B" if preset.endswith("_b") else "A"
    n = CIFAR_BLOCKS[base]
    model = CifarResNet(n, option)
    # depth 6n + 2 counts the weighted layers on the main path: 3x3 convs and fc.
    convs3 = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    assert len(convs3) + 1 == 6 * n + 2 == int(base.removeprefix("resnet")), (preset, len(convs3))
    projections = {k.rsplit(".", 2)[0] for k in model.state_dict() if ".downsample." in k}
    if option == "A":
        assert not projections, projections  # option A is parameter-free
    else:
        assert projections == {"layer2.0.downsample", "layer3.0.downsample"}, projections
    return model


def reference_model(preset: str) -> nn.Module:
    """The reference module of a preset with its builder's default init (global RNG)."""
    fam = family(preset)
    if fam == "torchvision":
        return tv_model(preset)
    if fam == "cifar":
        return cifar_model(preset)
    return timm_model(preset)


def reference_name(preset: str) -> str:
    """What the preset's reference is, e.g. "timm 1.0.31 resnetv2_50" (metadata, models.json)."""
    fam, ver = family(preset), versions()
    if fam == "cifar":
        return f"harness (He et al. 2015 CIFAR, option {'B' if preset.endswith('_b') else 'A'})"
    if fam.startswith("timm"):
        return f"timm {ver['timm']} {preset}"
    base = preset.removesuffix("_v1")
    name = f"torchvision {ver['torchvision']} {base}"
    return name if base == preset else f"{name}, stride of block 0 of layer2/3/4 moved from conv2 to conv1"


def arch_note(preset: str) -> str | None:
    """Extra safetensors metadata ("arch") for presets that are not a library builder as is."""
    if preset.endswith("_v1"):
        return (f"torchvision {preset.removesuffix('_v1')} with the stride of block 0 of layer2/3/4 moved from "
                "conv2 (3x3) to conv1 (first 1x1), downsample stride 2 kept: the original "
                f"ResNet-{preset.removeprefix('resnet').removesuffix('_v1')} of He et al. 2015 (V1)")
    if family(preset) == "cifar":
        n = CIFAR_BLOCKS[preset.removesuffix("_b")]
        shortcut = ("option B: downsample = 1x1 conv stride 2 + BatchNorm (downsample.0/1)"
                    if preset.endswith("_b") else
                    "option A: x[:, :, ::2, ::2] zero-padded to the new channel count, "
                    "(out - in) // 2 zero channels first, no parameters")
        return (f"He et al. 2015 CIFAR ResNet, depth {6 * n + 2}: conv1 3x3 16 + bn1 + ReLU, no max pool; "
                f"layer1/2/3 = {n} basic blocks of 16/32/64 channels, stride 1/2/2; global avg pool, "
                f"fc 64 -> 10; shortcut {shortcut}")
    return None


def check_v1_stride(sd: dict[str, torch.Tensor], inputs: dict[str, torch.Tensor], v1: dict) -> None:
    """resnet50_v1's io tensors: stage shapes are resnet50's, but the stride move changes
    layer2..layer4 (torchvision's resnet50 with the same weights gives other values).
    Before layer2 nothing differs, so stem and layer1 must match bit for bit."""
    v15 = fresh_model("resnet50", sd)
    for tag, (n, h, w) in SIZES["torchvision"].items():
        got = run_with_taps(v15, inputs[f"input_{tag}"], "torchvision")
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
    """Seeded reference model with random norm layers and classifier bias ~ N(0, 0.1).

    The classifier weight keeps its builder's init. Pooled features are post-ReLU averages
    with a large shared mean, so the logits of different random inputs share most of
    their top-5 classes (the order differs). Centring fc on that mean to make the
    top-5 input-dependent was tried and rejected: it needs |fc.bias| up to ~500
    cancelling fc.weight @ pooled in resnet152, which is badly conditioned.
    """
    seed = MODEL_SEED[preset]
    fam = family(preset)
    torch.manual_seed(seed)  # the builders' own init draws from the global RNG
    model = reference_model(preset)
    gen = torch.Generator().manual_seed(seed)
    if fam == "timm_resnetv2":
        randomise_preact(model, gen, CALIB_HW[fam])
    else:
        randomise_batchnorm(model, gen, CALIB_HW[fam])
    with torch.no_grad():
        fc = classifier(model)
        fc.bias.copy_(torch.randn(fc.bias.shape, generator=gen) * 0.1)
    return model


def fresh_model(preset: str, state_dict: dict[str, torch.Tensor]) -> nn.Module:
    model = reference_model(preset)
    model.load_state_dict(state_dict)
    return model.eval()


def make_inputs(sizes: dict[str, tuple[int, int, int]]) -> dict[str, torch.Tensor]:
    """input_{tag} for every size tag, drawn in order from a generator seeded with INPUT_SEED."""
    gen = torch.Generator().manual_seed(INPUT_SEED)
    return {f"input_{tag}": torch.randn(n, 3, h, w, generator=gen) for tag, (n, h, w) in sizes.items()}


@torch.no_grad()
def run_with_taps(model: nn.Module, x: torch.Tensor, fam: str) -> dict[str, torch.Tensor]:
    """Forward x, returning the TAPS[fam] activations (captured by forward hooks) and logits,
    cross-checked against the model's own forward."""
    taps = TAPS[fam]
    feats: dict[str, list[torch.Tensor]] = {k: [] for k in taps}
    handles = [model.get_submodule(path).register_forward_hook(
        lambda _m, _i, out, key=key: feats[key].append(out.detach().clone()))
        for key, path in taps.items()]
    try:
        logits = model(x)
    finally:
        for h in handles:
            h.remove()
    for key, got in feats.items():  # e.g. torchvision's model.relu must be the stem ReLU only, called once
        assert len(got) == 1, f"{key}: module called {len(got)} times"
    out = {k: v[0] for k, v in feats.items()}
    out["pooled"] = torch.flatten(out["pooled"], 1)
    # pooled is the global average of features (the pool's own output, not this mean) ...
    assert torch.allclose(out["pooled"], out["features"].mean((2, 3)), rtol=1e-4, atol=1e-5)
    # ... and the taps agree with the model's own forward, bit for bit.
    if fam.startswith("timm"):
        assert torch.equal(model.forward_features(x), out["features"])
        assert torch.equal(model.forward_head(out["features"], pre_logits=True), out["pooled"])
        assert torch.equal(model.forward_head(out["features"]), logits)
    else:
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


def check_scale(what: str, scale: dict[str, tuple[float, float]]) -> None:
    """Stage outputs (layerK, features) within STAGE_STD_RANGE and below STAGE_MAX_ABS.

    The stem is exempt: BiT's stem conv is weight-standardised with no norm after it
    (std ~ 12, see randomise_preact). A failure means the damping needs another look.
    """
    lo, hi = STAGE_STD_RANGE
    for k, (std, peak) in scale.items():
        if k.startswith("layer") or k == "features":
            assert lo < std < hi and peak < STAGE_MAX_ABS, f"{what} {k}: std {std:.3f}, max|x| {peak:.1f}"


def io_tensors(model: nn.Module, inputs: dict[str, torch.Tensor], what: str, fam: str) -> tuple[dict, list]:
    tensors: dict[str, torch.Tensor] = dict(inputs)
    stats = []
    for tag in SIZES[fam]:
        outs = run_with_taps(model, inputs[f"input_{tag}"], fam)
        for k, v in outs.items():
            assert torch.isfinite(v).all(), f"{what} {k}_{tag}: non-finite"
            tensors[f"{k}_{tag}"] = v
        scale = {k: (v.std().item(), v.abs().max().item())
                 for k, v in outs.items() if k not in ("pooled", "logits")}
        check_scale(f"{what} {tag}", scale)
        stats.append((tag, *check_logits(f"{what} {tag}", outs["logits"]), scale))
    return tensors, stats


def print_stats(what: str, stats: list) -> None:
    for tag, peak, gap, scale in stats:
        s = " ".join(f"{k}={std:.2f}/{mx:.1f}" for k, (std, mx) in scale.items())
        print(f"  {what:17} {tag:8} max|logits|={peak:8.4f} min top-6 gap={gap:.3e} "
              f"({gap / peak:.1e} rel)  std/max|x|: {s}")


# --------------------------------------------------------------------------- official feature APIs

# create_feature_extractor return nodes per saved tap (torchvision presets, resnet*_v1, CIFAR).
# "relu" is the stem's ReLU (the blocks' are "layerK.J.relu"), "layerK" the last node of that
# stage, "flatten" torch.flatten(avgpool(x), 1). features_S is the last stage's output.
FX_NODES = {
    "torchvision": {"stem": "relu", **{f"layer{k}": f"layer{k}" for k in (1, 2, 3, 4)}, "pooled": "flatten"},
    "cifar": {"stem": "relu", **{f"layer{k}": f"layer{k}" for k in (1, 2, 3)}, "pooled": "flatten"},
}
# timm feature indices 0..4, in order: what timm's features_only model and forward_intermediates return.
TIMM_FEATURE_TAPS = ("stem", "layer1", "layer2", "layer3", "layer4")


def max_diffs(what: str, got: dict[str, torch.Tensor], ref: dict[str, torch.Tensor]) -> str:
    """Assert got[k] is bit-identical to ref[k] for every k of got; "k=max|diff| ..." for the log line."""
    parts = []
    for k, v in got.items():
        assert v.shape == ref[k].shape, f"{what} {k}: shape {tuple(v.shape)} != saved {tuple(ref[k].shape)}"
        d = (v - ref[k]).abs().max().item()
        assert torch.equal(v, ref[k]), f"{what} {k}: max|diff| {d:.3e} vs the hooked tensor (max|x| " \
                                       f"{ref[k].abs().max().item():.3e}): not bit-identical"
        parts.append(f"{k}={d:g}")
    return " ".join(parts)


def timm_features_state_dict(feat: nn.Module, sd: dict[str, torch.Tensor], head: tuple[str, ...]) -> dict:
    """sd (the full timm model's keys) under the names of its features_only FeatureListNet.

    FeatureListNet keeps the model's top-level children up to the last feature module; with
    flatten_sequential (resnetv2) the children of a top-level nn.Sequential are hoisted, their
    names joined by "_" ("stem.conv.weight" -> "stem_conv.weight", "stages.0.blocks..." ->
    "stages_0.blocks..."). Every key must map to exactly one features key, except the head's
    (the keys starting with a prefix in head), which the features model does not have.
    """
    want = feat.state_dict()
    out, dropped = {}, []
    for k, v in sd.items():
        a, b, *rest = k.split(".")
        cands = [c for c in (k, ".".join([f"{a}_{b}", *rest]) if rest else None) if c in want]
        assert len(cands) <= 1, (k, cands)
        if cands:
            assert want[cands[0]].shape == v.shape and want[cands[0]].dtype == v.dtype, (k, cands[0])
            out[cands[0]] = v
        else:
            dropped.append(k)
    assert set(out) == set(want) and len(out) == len(sd) - len(dropped), sorted(set(want) - set(out))[:10]
    assert dropped and all(k.startswith(head) for k in dropped), dropped[:10]
    return out


@torch.no_grad()
def check_feature_apis(model: nn.Module, preset: str, fam: str, sd: dict[str, torch.Tensor],
                       tensors: dict[str, torch.Tensor]) -> None:
    """The hooked taps (run_with_taps) are exactly what the official feature-extraction APIs return.

    At the first size tag of the family, with the same model (weights sd) and input:
      torchvision / resnet*_v1 / CIFAR: torchvision's create_feature_extractor(model, FX_NODES)
        -> stem, layerK, features (= last layer), pooled;
      timm: timm.create_model(preset, features_only=True, out_indices=(0..4)) with sd loaded
        (timm_features_state_dict) -> stem, layer1..layer4 (for resnetv2/BiT index 4 is
        stages.3, the raw residual sum: features_only stops before the final norm); and
        model.forward_intermediates(x, indices=[0..4]) -> the same five, and its final x =
        features; for resnetv2/BiT also with norm=True, whose index 4 is norm(stages.3) = features.
    Every output must equal the saved tensor bit for bit. The global RNG (timm's init of the
    features model draws from it) is restored afterwards.
    """
    tag = next(iter(SIZES[fam]))
    x = tensors[f"input_{tag}"]
    ref = {k: tensors[f"{k}_{tag}"] for k in ("stem", "layer1", "layer2", "layer3", "layer4", "features", "pooled")
           if f"{k}_{tag}" in tensors}
    lines = []
    with torch.random.fork_rng(devices=[]):
        if fam in FX_NODES:
            nodes = FX_NODES[fam]
            fx = create_feature_extractor(model, return_nodes={node: k for k, node in nodes.items()})
            assert not model.training and not fx.training
            out = fx(x)
            last = TAPS[fam]["features"]
            out["features"] = out[next(k for k, node in nodes.items() if node == last)]
            lines.append(f"torchvision create_feature_extractor({', '.join(nodes.values())}): "
                         + max_diffs(f"{preset} create_feature_extractor {tag}", out, ref))
        else:
            feat = timm.create_model(preset, pretrained=False, features_only=True, out_indices=(0, 1, 2, 3, 4))
            head = ("fc.",) if fam == "timm_resnet" else ("norm.", "head.")
            feat.load_state_dict(timm_features_state_dict(feat, sd, head), strict=True)
            feat.eval()
            names = feat.feature_info.module_name()
            outs = feat(x)
            assert len(outs) == len(TIMM_FEATURE_TAPS), (preset, len(outs))
            got = dict(zip(TIMM_FEATURE_TAPS, outs, strict=True))
            lines.append(f"timm features_only [{', '.join(names)}]: "
                         + max_diffs(f"{preset} features_only {tag}", got, ref))
            final, inter = model.forward_intermediates(x, indices=[0, 1, 2, 3, 4])
            got = {**dict(zip(TIMM_FEATURE_TAPS, inter, strict=True)), "features": final}
            lines.append("forward_intermediates: " + max_diffs(f"{preset} forward_intermediates {tag}", got, ref))
            if fam == "timm_resnetv2":
                inter = model.forward_intermediates(x, indices=[4], norm=True, intermediates_only=True)
                assert len(inter) == 1
                lines.append("forward_intermediates(norm=True)[4]: "
                             + max_diffs(f"{preset} forward_intermediates(norm=True) {tag}",
                                         {"features": inter[0]}, ref))
    print(f"  {preset} {tag} taps vs " + "; ".join(lines))


# --------------------------------------------------------------------------- models.json

@torch.no_grad()
def make_manifest(out: Path, common: dict) -> None:
    """models.json: what every preset of the zoo (MANIFEST_PRESETS) is and costs.

    {"generator": ..., "versions": {package: version}, "models": {preset: {
        "reference":   e.g. "timm 1.0.31 resnetv2_50" (see reference_name),
        "family":      torchvision / timm_resnet / timm_resnetv2 / cifar,
        "params":      sum(p.numel() for p in model.parameters()) (buffers not counted),
        "macs":        torch.utils.flop_counter.FlopCounterMode total FLOPs // 2 for one
                       forward at batch 1 of input_size,
        "flops_by_op": that total per aten operator: only convolution and addmm (the fc;
                       timm ResNetV2's head.fc is a 1x1 conv, so it counts as convolution)
                       have FLOP formulas; norms, pooling, ReLU and adds count 0,
        "input_size":  [1, 3, 224, 224] ([1, 3, 32, 32] for CIFAR),
        "num_classes": 1000 or 10,
        "fixtures":    whether {P}.safetensors / {P}.io.safetensors were written}}}

    The models are built on the meta device (shapes only: no init, no arithmetic), which
    is enough to count. For presets with fixtures the meta model's state_dict names and
    shapes must be those in {P}.safetensors (read from its header only).
    """
    models = {}
    print(f"  {'preset':20} {'params':>12} {'GMACs':>8}  FLOPs by operator")
    for preset in MANIFEST_PRESETS:
        fam = family(preset)
        hw = MANIFEST_HW[fam]
        with torch.device("meta"):
            model = reference_model(preset).eval()
            with FlopCounterMode(display=False) as counter:
                logits = model(torch.empty(1, 3, hw, hw))
        flops = counter.get_total_flops()
        by_op = {str(op): n for op, n in counter.get_flop_counts()["Global"].items()}
        assert sum(by_op.values()) == flops and set(by_op) <= {"aten.convolution", "aten.addmm"}, (preset, by_op)
        assert flops % 2 == 0, (preset, flops)
        has_fixtures = preset in PRESETS
        if has_fixtures:
            with safe_open(out / f"{preset}.safetensors", framework="pt") as f:
                saved = {k: list(f.get_slice(k).get_shape()) for k in f.keys()}
            assert saved == {k: list(v.shape) for k, v in model.state_dict().items()}, preset
        params = sum(p.numel() for p in model.parameters())
        models[preset] = {"reference": reference_name(preset), "family": fam, "params": params,
                          "macs": flops // 2, "flops_by_op": by_op, "input_size": [1, 3, hw, hw],
                          "num_classes": logits.shape[1], "fixtures": has_fixtures}
        print(f"  {preset:20} {params:12,} {flops / 2e9:8.3f}  {by_op}")
    doc = {"generator": common["generator"], "versions": versions(), "models": models}
    path = out / "models.json"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    os.replace(tmp, path)


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

def hf_config(preset: str) -> "transformers.ResNetConfig":
    import transformers  # only for these fixtures; --models-only runs without it
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
    import transformers  # only for these fixtures; --models-only runs without it

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
        sizes = SIZES["torchvision"]
        diffs = [check_close(f"{preset}_hf logits_{tag}", model(ref[f"input_{tag}"]).logits, ref[f"logits_{tag}"])
                 for tag in sizes]
        save_atomic(sd, out / f"{preset}_hf.safetensors", {**meta, "class": "ResNetForImageClassification"})
        print(f"  {preset}_hf: {len(sd)} tensors, max|logits - torchvision| / max|logits| = "
              + ", ".join(f"{d:.1e} ({tag})" for d, tag in zip(diffs, sizes)))

        if preset == "resnet18":
            headless = transformers.ResNetModel(config)
            body = {k: v for k, v in tv_sd.items() if not k.startswith("fc.")}
            sd = load_renamed(headless, body, lambda k: hf_key(k).removeprefix("resnet."))
            diffs = []
            for tag in sizes:
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
    torch.set_num_threads(int(os.environ.get("RESNET_ZOO_FIXTURE_THREADS", "2")))
    inputs = {fam: make_inputs(sizes) for fam, sizes in SIZES.items()}
    common = {**versions(), "generator": "tests/parity/make_fixtures.py"}
    resnet50_sd = None

    for preset in PRESETS:
        t0 = time.time()
        fam = family(preset)
        model = build_model(preset)
        sd = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
        meta = {**common, "format": "pt", "preset": preset, "seed": str(MODEL_SEED[preset]),
                "reference": reference_name(preset)}
        if note := arch_note(preset):
            meta["arch"] = note
        save_atomic(sd, out / f"{preset}.safetensors", meta)
        tensors, stats = io_tensors(model, inputs[fam], preset, fam)
        save_atomic(tensors, out / f"{preset}.io.safetensors",
                    {**meta, "input_seed": str(INPUT_SEED), "weights": f"{preset}.safetensors",
                     "sizes": ",".join(SIZES[fam])})
        print_stats(preset, stats)
        check_feature_apis(model, preset, fam, sd, tensors)
        if preset == "resnet50_v1":
            check_v1_stride(sd, inputs[fam], tensors)
        print(f"  {preset}: {time.time() - t0:.1f}s")
        if preset == "resnet18":
            make_dtype_fixtures(sd, inputs[fam], tensors, out, common)
        if preset == "resnet50":
            resnet50_sd = sd

    assert resnet50_sd is not None
    resnet50 = fresh_model("resnet50", resnet50_sd)
    for path in ([] if MODELS_ONLY else image_files()):
        size, peak, gap = make_image_fixture(path, resnet50, out)
        print(f"  image {path.name:22} {size:20} max|logits|={peak:.4f} min top-6 gap={gap:.3e}")

    # These read the weights written above back from their files.
    make_cam_fixtures(out, common)
    if not MODELS_ONLY:
        make_hf_fixtures(out, common)
        make_pth_fixtures(out, common)
    # Shapes and counts only; checks the fixture presets' headers written above.
    make_manifest(out, common)


def minmax(maps: torch.Tensor) -> torch.Tensor:
    """Each [h, w] map of [N, h, w] scaled to [0, 1]: (x - min) / (max - min)."""
    lo = maps.amin((1, 2), keepdim=True)
    hi = maps.amax((1, 2), keepdim=True)
    return (maps - lo) / (hi - lo)


def make_cam_fixtures(out: Path, common: dict) -> None:
    """{P}.cam.safetensors for P in CAM_PRESETS: class-activation maps (CAM, Zhou et al. 2016)
    of the reference model read back from {P}.safetensors, on input_224 of {P}.io.safetensors.

      input     [N,3,224,224]  input_224
      classes   [N] int64      each image's top-1 class (argmax of the logits)
      cam       [N,h,w]        sum_c W[k,c] * F[n,c,:,:] for k = classes[n], W the classifier
                               weight, F the last feature map (the TAPS "features" module: what the
                               head pools, after the final norm + ReLU in resnetv2), min-max
                               normalised per image to [0, 1]; no ReLU, no bias (a constant)
      cam_224   [N,224,224]    cam upsampled: F.interpolate(bilinear, align_corners=False)

    Checked here: Grad-CAM without its ReLU (channel weights = the spatial mean of d logit / d F,
    by autograd) gives the same normalised map, as it must for a global-average-pool + linear head.
    """
    for preset in CAM_PRESETS:
        fam = family(preset)
        model = fresh_model(preset, load_file(out / f"{preset}.safetensors"))
        x = load_file(out / f"{preset}.io.safetensors")["input_224"]
        taps = run_with_taps(model, x, fam)
        feats, classes = taps["features"], taps["logits"].argmax(1)
        weight = classifier(model).weight.detach()
        weight = weight.reshape(weight.shape[0], -1)  # timm's head.fc is a 1x1 conv
        cam = minmax(torch.einsum("nc,nchw->nhw", weight[classes], feats))
        up = F.interpolate(cam[:, None], size=tuple(x.shape[2:]), mode="bilinear", align_corners=False)[:, 0]

        hooked: list[torch.Tensor] = []

        def keep(_m, _i, o: torch.Tensor) -> None:  # returns None: the output is not replaced
            o.retain_grad()
            hooked.append(o)

        handle = model.get_submodule(TAPS[fam]["features"]).register_forward_hook(keep)
        try:
            logits = model(x)
            logits.gather(1, classes[:, None]).sum().backward()
        finally:
            handle.remove()
        fmap = hooked[0]
        alpha = fmap.grad.mean((2, 3))
        gradcam = minmax(torch.einsum("nc,nchw->nhw", alpha, fmap.detach()))
        d = (gradcam - cam).abs().max().item()
        assert d < 1e-5, f"{preset}: Grad-CAM differs from CAM by {d}"
        model.zero_grad(set_to_none=True)

        save_atomic({"input": x, "classes": classes, "cam": cam, "cam_224": up},
                    out / f"{preset}.cam.safetensors",
                    {**common, "preset": preset, "weights": f"{preset}.safetensors",
                     "classes": ",".join(str(int(k)) for k in classes)})
        print(f"  {preset}.cam: classes {classes.tolist()}, map {tuple(cam.shape[1:])}, "
              f"max|Grad-CAM - CAM| = {d:.1e}")


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
        tensors, stats = io_tensors(model, inputs, f"resnet18_{tag}", "torchvision")
        save_atomic(tensors, out / f"resnet18_{tag}.io.safetensors",
                    {**meta, "input_seed": str(INPUT_SEED), "weights": f"resnet18_{tag}.safetensors",
                     "sizes": ",".join(SIZES["torchvision"]),
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
