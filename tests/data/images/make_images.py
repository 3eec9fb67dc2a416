"""Regenerate the small test photos in tests/data/images/ from scikit-image's bundled data.

Every image here is derived from a photo that ships inside the scikit-image
wheel (``skimage/data/*.png|jpg``) and whose docstring in
``skimage/data/_fetchers.py`` states CC0 or public-domain terms; see
ATTRIBUTION.md for the per-file provenance and licence.

The set deliberately covers the decode paths a Rust image pipeline has to get
right before it can match torchvision: baseline and progressive JPEG, 8-bit RGB,
grayscale (L), RGBA, palette (P, with and without transparency) and 16-bit RGB
PNG, a CMYK (Adobe) JPEG, an EXIF-rotated JPEG, and
small / tall / wide sizes (the resize-to-256 step upsamples the small one).

Run from the repository root (scikit-image only needs to be importable as a
package directory, it is never imported, so ``pip install --no-deps`` is enough):

    $VENV/bin/python tests/data/images/make_images.py            # regenerate + report
    $VENV/bin/python tests/data/images/make_images.py --check    # only report

The report prints, per file, the PIL mode after ``Image.open`` and after
``ImageOps.exif_transpose``, the size, and what ``.convert("RGB")`` does.
The output is byte-for-byte reproducible for a given Pillow version.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

HERE = Path(__file__).resolve().parent
MAX_BYTES = 150 * 1024  # keep every committed photo small
EXIF_ORIENTATION = 0x0112


def skimage_data_dir() -> Path:
    """Locate skimage/data without importing skimage (its runtime deps may be absent)."""
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("scikit-image is not installed; `pip install --no-deps scikit-image==0.26.0`")
    return Path(list(spec.submodule_search_locations)[0]) / "data"


def load(data: Path, name: str) -> Image.Image:
    """Open a bundled photo as plain 8-bit RGB with no metadata.

    Clearing ``info`` matters: Pillow would otherwise copy the sources' ICC
    profiles (and rocket.jpg's comment) into the outputs, e.g. an RGB profile
    into a grayscale PNG, which libpng rejects with a warning.
    """
    with Image.open(data / name) as im:
        rgb = im.convert("RGB")
    rgb.info = {}
    return rgb


def atomic_save(im: Image.Image, path: Path, **kwargs) -> None:
    tmp = path.with_name(path.name + ".tmp")
    im.save(tmp, format=kwargs.pop("format"), **kwargs)
    os.replace(tmp, path)


def write_png_rgb16(path: Path, rgb16: np.ndarray) -> None:
    """Write an [H, W, 3] uint16 array as a 16-bit/channel RGB PNG.

    Pillow can read 16-bit RGB PNGs but cannot write them, so this emits the
    handful of chunks by hand (IHDR, one IDAT with filter type 0, IEND).
    """
    h, w, c = rgb16.shape
    assert c == 3 and rgb16.dtype == np.uint16

    def chunk(kind: bytes, payload: bytes) -> bytes:
        crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)

    # bit depth 16, colour type 2 (truecolour), deflate, adaptive filtering, no interlace
    ihdr = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    rows = rgb16.astype(">u2").reshape(h, w * 3).tobytes()
    stride = w * 3 * 2
    raw = b"".join(b"\x00" + rows[y * stride:(y + 1) * stride] for y in range(h))
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(png)
    os.replace(tmp, path)


def resize_float16bit(im: Image.Image, size: tuple[int, int]) -> np.ndarray:
    """Downscale an 8-bit RGB image per channel in float and quantise to 16 bits.

    Going through float keeps genuine low-byte detail (values are not just
    v * 257), so a decoder that truncates to the high byte and one that rounds
    give measurably different 8-bit results.
    """
    chans = []
    for band in im.split():
        f = band.convert("F").resize(size, Image.Resampling.LANCZOS)
        chans.append(np.asarray(f, dtype=np.float64))
    arr = np.stack(chans, axis=-1) * (65535.0 / 255.0)
    return np.clip(np.rint(arr), 0, 65535).astype(np.uint16)


def radial_alpha(size: tuple[int, int]) -> Image.Image:
    """Alpha that is opaque in the middle and fully transparent in the corners."""
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    r = np.hypot((xx - (w - 1) / 2) / (w / 2), (yy - (h - 1) / 2) / (h / 2))  # 0 centre, ~1.41 corner
    a = np.clip((1.25 - r) / 0.6, 0.0, 1.0) * 255.0
    return Image.fromarray(np.rint(a).astype(np.uint8))  # 2-D uint8 -> mode L


def generate(data: Path) -> None:
    chelsea = load(data, "chelsea.png")      # 451x300, CC0
    coffee = load(data, "coffee.png")        # 600x400, CC0
    astronaut = load(data, "astronaut.png")  # 512x512, public domain
    rocket = load(data, "rocket.jpg")        # 640x427, public domain

    # 1. Baseline JPEG at full size (4:2:0 chroma subsampling, Pillow's default at q90).
    atomic_save(chelsea, HERE / "chelsea.jpg", format="JPEG", quality=90, progressive=False)

    # 2. 8-bit RGB PNG (downscaled: the 600x400 original is ~460 KB).
    atomic_save(coffee.resize((300, 200), Image.Resampling.LANCZOS), HERE / "coffee.png",
                format="PNG", optimize=True)

    # 3. Portrait 270x427 crop around the rocket, progressive JPEG.
    atomic_save(rocket.crop((185, 0, 455, 427)), HERE / "rocket_tall.jpg",
                format="JPEG", quality=85, progressive=True)

    # 4. Grayscale (mode L) PNG.
    gray = astronaut.resize((256, 256), Image.Resampling.LANCZOS).convert("L")
    atomic_save(gray, HERE / "astronaut_gray.png", format="PNG", optimize=True)

    # 5. RGBA PNG with a radial alpha; the RGB under transparent pixels is still the photo.
    rgba = astronaut.resize((192, 192), Image.Resampling.LANCZOS)
    rgba.putalpha(radial_alpha(rgba.size))
    atomic_save(rgba, HERE / "astronaut_rgba.png", format="PNG", optimize=True)

    # 6. Palette (mode P) PNG, 64 colours by median cut.
    pal = chelsea.resize((320, 213), Image.Resampling.LANCZOS).quantize(
        colors=64, method=Image.Quantize.MEDIANCUT)
    atomic_save(pal, HERE / "chelsea_palette.png", format="PNG", optimize=True)

    # 7. 16-bit per channel RGB PNG (hand-written encoder, see write_png_rgb16).
    write_png_rgb16(HERE / "coffee_rgb16.png", resize_float16bit(coffee, (160, 107)))

    # 8. EXIF Orientation=6 ("rotate 90 CW to display"): store the upright photo rotated
    #    90 CCW so that ImageOps.exif_transpose gives back the upright 360x240 cat.
    upright = chelsea.resize((360, 240), Image.Resampling.LANCZOS)
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6
    atomic_save(upright.transpose(Image.Transpose.ROTATE_90), HERE / "chelsea_exif6.jpg",
                format="JPEG", quality=90, exif=exif.tobytes())

    # 9. Small (upsampled by the resize-to-256 step), 4:4:4 chroma.
    small = coffee.crop((50, 0, 550, 400)).resize((100, 80), Image.Resampling.LANCZOS)
    atomic_save(small, HERE / "coffee_small.jpg", format="JPEG", quality=90, subsampling=0)

    # 10. Wide 512x200 crop (face and shoulders), 4:2:2 chroma.
    atomic_save(astronaut.crop((0, 30, 512, 230)), HERE / "astronaut_wide.jpg",
                format="JPEG", quality=90, subsampling=1)

    # 11. CMYK JPEG (Pillow writes Adobe APP14 and inverted samples, as Photoshop does).
    atomic_save(chelsea.resize((226, 150), Image.Resampling.LANCZOS).convert("CMYK"),
                HERE / "chelsea_cmyk.jpg", format="JPEG", quality=90)

    # 12. Palette PNG with transparency (a tRNS chunk making colour 0 fully transparent):
    #     convert("RGB") ignores it and keeps the palette colour.
    trns = chelsea.resize((160, 107), Image.Resampling.LANCZOS).quantize(
        colors=32, method=Image.Quantize.MEDIANCUT)
    atomic_save(trns, HERE / "chelsea_palette_trns.png", format="PNG", optimize=True,
                transparency=0)

    # The EXIF file must round-trip to the upright picture (lossy JPEG, so compare loosely).
    with Image.open(HERE / "chelsea_exif6.jpg") as im:
        fixed = ImageOps.exif_transpose(im)
    assert fixed.size == upright.size, (fixed.size, upright.size)
    err = np.abs(np.asarray(fixed, np.int16) - np.asarray(upright, np.int16)).mean()
    assert err < 4.0, f"chelsea_exif6.jpg does not transpose back to upright (mean err {err:.2f})"


def image_files() -> list[Path]:
    return sorted(p for p in HERE.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))


def report() -> None:
    """Print decode facts per file: modes, size, and what convert("RGB") does."""
    print(f"Pillow {Image.__version__}")
    print(f"{'file':22} {'bytes':>7} {'open':>6} {'exif_t':>6} {'orient':>6} {'size':>9}  notes")
    for path in image_files():
        with Image.open(path) as im:
            mode_open = im.mode
            orient = im.getexif().get(EXIF_ORIENTATION, "-")
            stored = im.size
            fmt = f"{im.format}{' progressive' if im.info.get('progressive') else ''}"
            up = ImageOps.exif_transpose(im)
        rgb = up.convert("RGB")
        notes = [fmt]
        if stored != up.size:
            notes.append("stored as %dx%d before exif_transpose" % stored)
        if up.mode == "RGBA":
            a = np.asarray(up)
            same = np.array_equal(a[..., :3], np.asarray(rgb))
            notes.append(f"alpha {a[..., 3].min()}..{a[..., 3].max()}, "
                         f"convert drops alpha without compositing: {same}")
        elif up.mode == "P":
            pal_rgb = np.asarray(up.convert("RGBA"))[..., :3]
            notes.append(f"{len(up.getcolors())} colours, convert = palette lookup: "
                         f"{np.array_equal(pal_rgb, np.asarray(rgb))}")
        elif up.mode == "L":
            g = np.asarray(up)
            r = np.asarray(rgb)
            notes.append(f"convert replicates L into R=G=B: "
                         f"{all(np.array_equal(g, r[..., i]) for i in range(3))}")
        print(f"{path.name:22} {path.stat().st_size:7} {mode_open:>6} {up.mode:>6} {orient!s:>6} "
              f"{'%dx%d' % up.size:>9}  {'; '.join(notes)}")
        if path.stat().st_size > MAX_BYTES:
            print(f"  WARNING: {path.name} is over {MAX_BYTES} bytes")
    report_16bit()


def read_png_rgb16(path: Path) -> np.ndarray:
    """Minimal reader for the files write_png_rgb16 produces (filter 0, one IDAT)."""
    blob = path.read_bytes()
    pos, idat, w, h = 8, b"", 0, 0
    while pos < len(blob):
        (n,) = struct.unpack(">I", blob[pos:pos + 4])
        kind, payload = blob[pos + 4:pos + 8], blob[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            w, h, depth, ctype = struct.unpack(">IIBB", payload[:10])
            assert (depth, ctype) == (16, 2)
        elif kind == b"IDAT":
            idat += payload
        pos += 12 + n
    raw = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(h, 1 + w * 6)
    assert (raw[:, 0] == 0).all(), "only filter type 0 is supported"
    return raw[:, 1:].copy().view(">u2").reshape(h, w, 3).astype(np.uint16)


def report_16bit() -> None:
    """How Pillow maps 16-bit PNG samples to 8 bits (RGB here; I;16 gray for comparison)."""
    path = HERE / "coffee_rgb16.png"
    if not path.exists():
        return
    v16 = read_png_rgb16(path).astype(np.int64)
    with Image.open(path) as im:
        print(f"\n{path.name}: Image.open mode={im.mode!r} (16-bit samples are already reduced on decode)")
        v8 = np.asarray(im.convert("RGB")).astype(np.int64)
    for label, guess in (("high byte (v >> 8)", v16 >> 8),
                         ("round(v / 257)", (v16 + 128) // 257)):
        print(f"  PIL 8-bit == {label:20}: {np.array_equal(v8, guess)} "
              f"(differs at {np.count_nonzero(v8 != guess)} of {v8.size} samples)")
    idx = np.unravel_index(np.argmax((v16 + 128) // 257 != v16 >> 8), v16.shape)
    print(f"  example sample {tuple(int(i) for i in idx)}: 16-bit {v16[idx]} -> PIL {v8[idx]}, "
          f"high byte {v16[idx] >> 8}, round(v/257) {(v16[idx] + 128) // 257}")

    # Not committed: a 16-bit grayscale PNG (PIL can write mode I;16) to show how its
    # convert("RGB") behaves, since that path differs from 16-bit RGB.
    import io
    ramp = np.array([[0, 100, 255, 256, 1000, 32768, 65535]], dtype=np.uint16)
    buf = io.BytesIO()
    Image.fromarray(ramp).save(buf, format="PNG")
    buf.seek(0)
    with Image.open(buf) as g:
        mode = g.mode
        l8 = np.asarray(g.convert("L"))[0].tolist()
        rgb8 = np.asarray(g.convert("RGB"))[0, :, 0].tolist()
    print(f"  16-bit gray PNG opens as {mode!r}; values {ramp[0].tolist()}\n"
          f"    -> convert('L')   {l8}\n    -> convert('RGB') {rgb8} (R channel)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="only print the decode report")
    args = ap.parse_args()
    if not args.check:
        generate(skimage_data_dir())
    report()


if __name__ == "__main__":
    main()
