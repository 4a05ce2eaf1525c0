"""Decoding: every format and mode the issue lists, EXIF, bombs, and every kind of bad file."""

from __future__ import annotations

import io
import os
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from infergraph.inference import decode, decode_budget
from infergraph.inference.decode import ImageDecodeError, decode_image, decoded
from infergraph.inference.decode_budget import DecodeBudget
from tests.support.images import encode, png16


def gradient(width: int = 40, height: int = 30) -> np.ndarray:
    """An RGB image whose every pixel differs, so orientation and channel errors show."""
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 6, y * 8, (x + y) * 3], axis=-1).astype(np.uint8)


@pytest.mark.parametrize(
    ("fmt", "lossless"),
    [("PNG", True), ("BMP", True), ("TIFF", True), ("WEBP", False), ("JPEG", False)],
)
def test_each_format_decodes_to_rgb_uint8(fmt: str, lossless: bool) -> None:
    pixels = gradient()
    params = {"lossless": True} if fmt == "WEBP" else {}
    out = decode_image(encode(Image.fromarray(pixels), fmt, **params), f"x.{fmt.lower()}")
    assert out.shape == (30, 40, 3) and out.dtype == np.uint8
    if lossless or fmt == "WEBP":
        np.testing.assert_array_equal(out, pixels)
    else:
        assert np.abs(out.astype(int) - pixels).mean() < 6


def test_gif_decodes_first_frame_of_an_animation() -> None:
    frames = [Image.new("P", (8, 8), i) for i in (10, 200)]
    for frame, colour in zip(frames, [(255, 0, 0), (0, 0, 255)], strict=True):
        frame.putpalette(list(colour) * 256)
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    out = decode_image(data, "anim.gif")
    assert out.shape == (8, 8, 3)
    assert tuple(out[0, 0]) == (255, 0, 0)


@pytest.mark.parametrize(
    ("mode", "value", "expected"),
    [
        ("1", 1, (255, 255, 255)),
        ("L", 77, (77, 77, 77)),
        ("LA", (77, 255), (77, 77, 77)),
        ("LA", (0, 0), (255, 255, 255)),  # fully transparent → white background
        ("RGBA", (10, 20, 30, 255), (10, 20, 30)),
        ("RGBA", (0, 0, 0, 0), (255, 255, 255)),
        ("RGBA", (0, 0, 0, 128), (127, 127, 127)),  # half-transparent black over white
        ("P", 5, None),
    ],
)
def test_modes_become_rgb(mode: str, value, expected) -> None:
    image = Image.new(mode, (6, 4), value)
    if mode == "P":
        image.putpalette([0, 0, 0] * 5 + [12, 34, 56] + [0, 0, 0] * 250)
        expected = (12, 34, 56)
    out = decode_image(encode(image, "PNG"), f"{mode}.png")
    assert out.shape == (4, 6, 3) and out.dtype == np.uint8
    assert np.all(np.abs(out.astype(int) - expected) <= 1), (mode, out[0, 0])


def test_palette_with_transparency_is_composited() -> None:
    image = Image.new("P", (4, 4), 1)
    image.putpalette([0, 0, 0, 200, 10, 10] + [0] * 762)
    data = encode(image, "PNG", transparency=1)
    assert tuple(decode_image(data, "p.png")[0, 0]) == (255, 255, 255)


def test_cmyk_jpeg_and_tiff() -> None:
    cmyk = Image.new("CMYK", (5, 5), (0, 255, 255, 0))  # pure red in CMYK
    for fmt in ("JPEG", "TIFF"):
        out = decode_image(encode(cmyk, fmt), f"cmyk.{fmt.lower()}")
        red, green, blue = (int(c) for c in out[2, 2])
        assert red > 200 and green < 60 and blue < 60, (fmt, out[2, 2])


def test_16_bit_grey_is_scaled_not_clipped() -> None:
    ramp = np.array([[0, 257 * 100, 65535]], dtype=np.uint16)
    data = encode(Image.fromarray(ramp), "PNG")
    out = decode_image(data, "deep.png")
    assert out[0, :, 0].tolist() == [0, 100, 255]
    assert np.all(out[..., 0] == out[..., 2])


def test_float_tiff_is_scaled() -> None:
    data = encode(Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32)), "TIFF")
    assert decode_image(data, "f.tif")[0, :, 0].tolist() == [0, 128, 255]


def test_exif_orientation_is_applied() -> None:
    pixels = gradient(40, 30)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    data = encode(Image.fromarray(pixels), "PNG", exif=exif.tobytes())
    out = decode_image(data, "rotated.png")
    assert out.shape == (40, 30, 3)
    np.testing.assert_array_equal(out, np.rot90(pixels, k=-1))


def test_all_black_image_is_valid() -> None:
    out = decode_image(encode(Image.new("L", (64, 64), 0), "PNG"), "black.png")
    assert out.shape == (64, 64, 3) and not out.any()


def test_the_projects_own_pixel_limit_fires_far_below_pillows_guard() -> None:
    """3000×3000 is 9 MP: Pillow's bomb guard (89 MP warning, 179 MP error) lets it
    through, so only infergraph's own check can refuse it at a 1 MP limit."""
    png = encode(Image.new("L", (3000, 3000)), "PNG")
    assert Image.MAX_IMAGE_PIXELS is None or Image.MAX_IMAGE_PIXELS > 9_000_000
    with pytest.raises(ImageDecodeError) as caught:
        decode_image(png, "big.png", max_pixels=1_000_000)
    assert "9,000,000 pixels" in str(caught.value)
    assert "over the limit of 1,000,000" in str(caught.value)
    assert decode_image(png, "big.png", max_pixels=10_000_000).shape == (3000, 3000, 3)


def test_pixel_limit_rejects_before_decoding() -> None:
    # A 20000×20000 PNG of zeros: 60 KB on disk, 1.2 GB as RGB pixels.
    width = height = 20_000
    raw = zlib.compress(b"".join(b"\x00" + bytes(width) for _ in range(height)), 9)

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body).to_bytes(4, "big")
        return len(body).to_bytes(4, "big") + kind + body + crc

    header = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 0, 0, 0, 0])
    bomb = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")
    assert len(bomb) < 1_000_000
    with pytest.raises(ImageDecodeError) as caught:
        decode_image(bomb, "s3://bucket/bomb.png")
    message = str(caught.value)
    assert "s3://bucket/bomb.png" in message
    assert "400,000,000 pixels" in message and "over the limit of 50,000,000" in message


def test_pixel_limit_is_configurable() -> None:
    data = encode(Image.new("L", (100, 100)), "PNG")
    assert decode_image(data, "ok.png", max_pixels=10_000).shape == (100, 100, 3)
    with pytest.raises(ImageDecodeError, match="over the limit of 9,999"):
        decode_image(data, "big.png", max_pixels=9_999)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty file"),
        (b"hello, I am a text file\n", "not a supported image"),
        (b"%PDF-1.7\n...", "looks like a PDF document"),
        (b'{"s3_uri": "x"}', "looks like JSON or text"),
        (bytes(range(256)) * 4, "not a supported image"),
    ],
)
def test_non_images_name_the_file_and_cause(data: bytes, reason: str) -> None:
    with pytest.raises(ImageDecodeError) as caught:
        decode_image(data, "inbox/thing.png")
    assert str(caught.value).startswith("inbox/thing.png: ")
    assert reason in str(caught.value)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "GIF", "TIFF", "BMP"])
def test_truncated_files_fail_cleanly(fmt: str) -> None:
    rng = np.random.default_rng(0)
    noisy = Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    if fmt == "GIF":
        noisy = noisy.convert("P")
    data = encode(noisy, fmt)
    with pytest.raises(ImageDecodeError) as caught:
        decode_image(data[: len(data) // 2], f"cut.{fmt.lower()}")
    assert f"cut.{fmt.lower()}" in str(caught.value)


@pytest.mark.parametrize(
    ("data", "fmt"),
    [
        (b"\x89PNG\r\n\x1a\n broken", "PNG"),
        (b"\xff\xd8\xff\xe0 broken", "JPEG"),
        (b"GIF89a broken", "GIF"),
        (b"RIFF\x10\x00\x00\x00WEBPbroken", "WEBP"),
    ],
)
def test_damaged_headers_are_named_by_the_format_they_claim(data: bytes, fmt: str) -> None:
    with pytest.raises(ImageDecodeError, match=f"corrupt or truncated {fmt} data"):
        decode_image(data, "damaged")


def test_unsupported_format_is_refused_even_if_pillow_reads_it() -> None:
    data = encode(Image.new("RGB", (4, 4)), "PPM")
    with pytest.raises(ImageDecodeError, match="expected one of PNG, JPEG"):
        decode_image(data, "x.ppm")


# ---------------------------------------------------------------- 16-bit and the decode budget


def reference_8_bit(pixels: np.ndarray) -> np.ndarray:
    """The high byte of each 16-bit sample: 0..65535 onto 0..255, as libpng's strip-16."""
    return (pixels >> 8).astype(np.uint8)


@pytest.mark.parametrize("shape", [(37, 53), (37, 53, 3)], ids=["grey", "rgb"])
def test_16_bit_png_gives_the_reference_8_bit_values(shape: tuple[int, ...]) -> None:
    pixels = np.random.default_rng(7).integers(0, 65536, shape, dtype=np.uint16)
    pixels.flat[:4] = [0, 255, 256, 65535]
    out = decode_image(png16(pixels), "deep.png")
    expected = reference_8_bit(pixels)
    if expected.ndim == 2:
        expected = np.repeat(expected[..., None], 3, axis=2)
    assert out.shape == (37, 53, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, expected)
    assert out.flags.c_contiguous and out.flags.writeable


def test_16_bit_grey_taller_than_one_band_is_converted_whole(monkeypatch) -> None:
    monkeypatch.setattr(decode, "BAND_PIXELS", 100)  # 3 rows of 37 per band
    pixels = np.random.default_rng(3).integers(0, 65536, (50, 37), dtype=np.uint16)
    out = decode_image(png16(pixels), "tall.png")
    np.testing.assert_array_equal(out[..., 1], reference_8_bit(pixels))


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_matches_pillow(orientation: int) -> None:
    pixels = gradient(7, 5)
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encode(Image.fromarray(pixels), "PNG", exif=exif.tobytes())
    expected = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))
    np.testing.assert_array_equal(decode_image(data, "o.png"), expected)


@pytest.fixture
def budget() -> Iterator[DecodeBudget]:
    """A 4 MiB process budget that gives up after 0.2 s of waiting, restored afterwards."""
    saved = decode_budget._budget
    try:
        yield decode_budget.configure(4 * 1024 * 1024, wait_seconds=0.2)
    finally:
        decode_budget._budget = saved


def test_image_bigger_than_the_whole_budget_is_refused_before_decoding(budget) -> None:
    # Estimates: 400² × (2 bytes decoded + 3 converted) + 400² × 16 for the band temporaries
    # = 3.2 MiB fits; 600² × 5 + 2¹⁸ × 16 (one band at most) = 5.7 MiB never does.
    data = png16(np.zeros((400, 400), dtype=np.uint16))
    assert decode_image(data, "fits.png").shape == (400, 400, 3)
    big = png16(np.zeros((600, 600), dtype=np.uint16))
    with pytest.raises(ImageDecodeError) as caught:
        decode_image(big, "s3://b/big.png")
    assert caught.value.busy is False
    assert str(caught.value).startswith("s3://b/big.png: decoding needs about 6 MiB")
    assert "more than the whole per-process decode budget of 4 MiB" in str(caught.value)
    assert budget.used_bytes == 0


def test_decodes_queue_for_the_budget_and_give_up_clearly(budget) -> None:
    data = png16(np.zeros((400, 400), dtype=np.uint16))
    with decoded(data, "first.png") as first:
        assert first.shape == (400, 400, 3)
        held = budget.used_bytes
        assert held > 0
        # A second decode cannot fit beside the first: it waits, then says why.
        with pytest.raises(ImageDecodeError) as caught:
            decode_image(data, "second.png")
        assert caught.value.busy is True
        assert "decoder busy" in caught.value.reason and "try again later" in caught.value.reason

        # Without a wait limit it queues, and proceeds once the first is done.
        budget.wait_seconds = None
        result: list[np.ndarray] = []
        waiter = threading.Thread(target=lambda: result.append(decode_image(data, "third.png")))
        waiter.start()
        waiter.join(0.5)
        assert waiter.is_alive() and not result
    waiter.join(30)
    assert not waiter.is_alive() and result[0].shape == (400, 400, 3)
    assert budget.used_bytes == 0


def test_small_images_are_decoded_on_one_thread_large_ones_on_every_core(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second thread only slows GIL-bound small decodes; large ones release the GIL."""
    from infergraph.inference import fetch
    from infergraph.inference.records import ImageRecord
    from infergraph.predictors.digits import SAMPLES
    from infergraph.predictors.loading import PredictorSpec, get_predictor

    monkeypatch.setattr(fetch, "_COST", fetch._PrepareCost())
    monkeypatch.setattr(fetch.os, "cpu_count", lambda: 4)
    predictor = get_predictor(PredictorSpec(path="infergraph.predictors.digits:DigitsClassifier"))
    small = [ImageRecord(uri=str(p), record_id=p.name) for p in sorted(SAMPLES.glob("*.png"))]
    fetch.prepare_batch(small[:20], predictor, fetch.FetchOptions())
    assert fetch._COST.decode_threads() == 1

    noise = np.random.default_rng(0).integers(0, 255, (2500, 2500, 3), dtype=np.uint8)
    large = tmp_path / "large.png"
    Image.fromarray(noise).save(large)
    record = ImageRecord(uri=str(large), record_id="large")
    fetch.prepare_batch([record] * 10, predictor, fetch.FetchOptions())
    assert fetch._COST.decode_threads() == 4


def test_small_images_stay_on_one_thread_while_other_threads_hold_the_gil(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The cost is CPU time: waiting for the GIL must not make a digit look like a photo."""
    import threading

    from infergraph.inference import fetch
    from infergraph.inference.records import ImageRecord
    from infergraph.predictors.digits import SAMPLES
    from infergraph.predictors.loading import PredictorSpec, get_predictor

    monkeypatch.setattr(fetch, "_COST", fetch._PrepareCost())
    monkeypatch.setattr(fetch.os, "cpu_count", lambda: 4)
    predictor = get_predictor(PredictorSpec(path="infergraph.predictors.digits:DigitsClassifier"))
    small = [ImageRecord(uri=str(p), record_id=p.name) for p in sorted(SAMPLES.glob("*.png"))]
    stop = threading.Event()

    def spin() -> None:  # pure Python: holds the GIL for whole switch intervals
        while not stop.is_set():
            sum(range(10_000))

    spinners = [threading.Thread(target=spin) for _ in range(3)]
    for t in spinners:
        t.start()
    try:
        fetch.prepare_batch(small[:40], predictor, fetch.FetchOptions())
    finally:
        stop.set()
        for t in spinners:
            t.join()
    assert fetch._COST.mean is not None and fetch._COST.mean < fetch.SMALL_IMAGE_SECONDS
    assert fetch._COST.decode_threads() == 1


MMAP_PROBE = """
import ctypes, sys
from infergraph.inference.decode_budget import tune_malloc

class Info(ctypes.Structure):
    names = "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost"
    _fields_ = [(n, ctypes.c_size_t) for n in names.split()]

libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
libc.mallinfo2.restype = Info
if sys.argv[1] == "tuned":
    tune_malloc()
libc.free(libc.malloc(8 << 20))  # glibc's own threshold now rises to 8 MiB
before = libc.mallinfo2().hblks
block = libc.malloc(2 << 20)
print(libc.mallinfo2().hblks - before)
"""


@pytest.mark.parametrize(("mode", "mapped"), [("tuned", 1), ("glibc", 0)])
def test_batch_sized_buffers_stay_mapped_so_freeing_them_returns_the_memory(
    mode: str, mapped: int
) -> None:
    """A fixed mmap threshold: after a large free, 2 MiB blocks are still mapped, not heap."""
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    done = subprocess.run(
        [sys.executable, "-c", MMAP_PROBE, mode], capture_output=True, text=True, env=env,
        cwd=Path(__file__).resolve().parents[1], timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) == mapped
