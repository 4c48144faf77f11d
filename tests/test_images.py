"""Images as people have them: each odd file gives the result the bad-input table of docs/datasets.md documents.

Expected pixels are computed by hand from the generated input, not by calling the loader's helpers.
"""

import numpy as np
import pytest
from PIL import Image
from standins import jpeg_with_orientation, noise, png_16bit_rgb, truncated_jpeg

from monkey.errors import ConfigError
from monkey.images import BadImageError, ImageOptions, load_rgb

ORIGINAL_MPO = "/work/shared/dreambooth/quirks/candle_01_original_mpo.jpg"
KEEP = ImageOptions(fit="none", min_side=1)


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)  # [H, W, 3]


def test_original_dreambooth_mpo_named_jpg_loads_as_its_first_frame():
    with Image.open(ORIGINAL_MPO) as raw:
        assert raw.format == "MPO" and raw.n_frames == 2  # a real phone file, not a plain JPEG
        raw.seek(0)
        first_frame = np.asarray(raw.convert("RGB"))
    image = load_rgb(ORIGINAL_MPO)
    assert image.mode == "RGB" and image.size == (2048, 2048)
    assert np.array_equal(np.asarray(image), first_frame)


def test_rgba_is_composited_on_white(tmp_path):
    rgba = np.zeros((64, 64, 4), dtype=np.uint8)
    rgba[:, :32] = (255, 0, 0, 255)  # opaque red
    rgba[:, 32:48] = (0, 0, 255, 128)  # half-transparent blue
    rgba[:, 48:] = (0, 255, 0, 0)  # fully transparent green
    Image.fromarray(rgba, "RGBA").save(tmp_path / "sticker.png")
    out = pixels(load_rgb(tmp_path / "sticker.png"))
    assert (out[:, :32] == (255, 0, 0)).all()
    half = 128 / 255
    expected_blue = np.round([255 * (1 - half), 255 * (1 - half), 255 * half + 255 * (1 - half)])
    assert np.abs(out[:, 32:48] - expected_blue).max() <= 1
    assert (out[:, 48:] == 255).all()  # white, not black


def test_palette_with_and_without_transparency(tmp_path):
    palette = [255, 0, 0, 0, 0, 255] + [0] * (256 * 3 - 6)  # index 0 red, 1 blue
    indices = np.zeros((64, 64), dtype=np.uint8)
    indices[:, 32:] = 1
    image = Image.fromarray(indices, "P")
    image.putpalette(palette)
    image.save(tmp_path / "plain.png")
    image.save(tmp_path / "transparent.png", transparency=1)
    plain = pixels(load_rgb(tmp_path / "plain.png"))
    assert (plain[:, :32] == (255, 0, 0)).all() and (plain[:, 32:] == (0, 0, 255)).all()
    transparent = pixels(load_rgb(tmp_path / "transparent.png"))
    assert (transparent[:, :32] == (255, 0, 0)).all() and (transparent[:, 32:] == 255).all()


def test_greyscale_and_cmyk_become_rgb(tmp_path):
    grey = np.tile(np.arange(64, dtype=np.uint8) * 4, (64, 1))
    Image.fromarray(grey, "L").save(tmp_path / "grey.png")
    out = pixels(load_rgb(tmp_path / "grey.png"))
    assert all((out[..., channel] == grey).all() for channel in range(3))

    cmyk = Image.new("CMYK", (64, 64), (255, 0, 0, 0))  # pure cyan
    cmyk.paste((0, 0, 0, 255), (0, 32, 64, 64))  # pure black below
    cmyk.save(tmp_path / "print.jpg", quality=100)
    out = pixels(load_rgb(tmp_path / "print.jpg"))
    assert np.abs(out[4:28] - (0, 255, 255)).max() <= 3  # cyan = no red
    assert np.abs(out[36:60]).max() <= 3


def test_16_bit_greyscale_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 257, 32896, 65535]], dtype=np.uint16).repeat(64, axis=0).repeat(16, axis=1)  # [64, 64]
    Image.fromarray(values).save(tmp_path / "scan16.png")
    with Image.open(tmp_path / "scan16.png") as raw:
        assert raw.mode.startswith("I")  # PIL's own convert would clip everything above 255 to white
    out = pixels(load_rgb(tmp_path / "scan16.png"))
    assert [int(out[0, 16 * k, 0]) for k in range(4)] == [0, 1, 128, 255]


def test_16_bit_rgb_keeps_the_high_byte(tmp_path):
    rgb16 = np.zeros((64, 64, 3), dtype=np.uint16)
    rgb16[..., 0] = 0xFF00
    rgb16[..., 1] = 0x8000
    rgb16[..., 2] = 0x0100
    png_16bit_rgb(tmp_path / "rgb16.png", rgb16)
    out = pixels(load_rgb(tmp_path / "rgb16.png"))
    assert (out == (0xFF, 0x80, 0x01)).all()


def test_exif_orientation_is_applied(tmp_path):
    landscape = np.zeros((64, 96, 3), dtype=np.uint8)  # [H, W, 3]: stored 96 wide, 64 high
    landscape[:, :48] = (255, 0, 0)  # left half red
    jpeg_with_orientation(tmp_path / "phone.jpg", Image.fromarray(landscape), orientation=6)
    out = pixels(load_rgb(tmp_path / "phone.jpg", KEEP))
    # orientation 6 = "rotate 90 degrees clockwise to display": portrait, the left half on top
    assert out.shape == (96, 64, 3)
    assert np.abs(out[:40] - (255, 0, 0)).max() < 30 and np.abs(out[56:]).max() < 30


def test_non_square_is_centre_cropped_padded_or_kept(tmp_path):
    wide = np.zeros((64, 128, 3), dtype=np.uint8)
    wide[:, 32:96] = (0, 0, 255)  # the centre square is blue, the sides black
    Image.fromarray(wide).save(tmp_path / "wide.png")
    crop = pixels(load_rgb(tmp_path / "wide.png", ImageOptions(fit="crop")))
    assert crop.shape == (64, 64, 3) and (crop == (0, 0, 255)).all()
    pad = pixels(load_rgb(tmp_path / "wide.png", ImageOptions(fit="pad")))
    assert pad.shape == (128, 128, 3)
    assert (pad[:32] == 255).all() and (pad[96:] == 255).all() and np.array_equal(pad[32:96], wide)
    kept = pixels(load_rgb(tmp_path / "wide.png", ImageOptions(fit="none")))
    assert np.array_equal(kept, wide)


def test_very_large_images_are_reduced_first(tmp_path):
    big = np.zeros((1500, 3000, 3), dtype=np.uint8)
    big[:, 1500:] = 255  # right half white
    Image.fromarray(big).save(tmp_path / "big.jpg", quality=95)
    out = pixels(load_rgb(tmp_path / "big.jpg", ImageOptions(fit="none", max_side=600)))
    assert out.shape == (300, 600, 3)
    assert out[:, :280].max() < 20 and out[:, 320:].min() > 235


def test_small_images_are_rejected_and_options_checked(tmp_path):
    noise(48, 200).save(tmp_path / "thumb.png")
    with pytest.raises(BadImageError, match=r"thumb\.png.*48x200.*min_side=64"):
        load_rgb(tmp_path / "thumb.png")
    assert load_rgb(tmp_path / "thumb.png", ImageOptions(min_side=32)).size == (48, 48)
    with pytest.raises(ConfigError, match="fit"):
        ImageOptions(fit="stretch")


@pytest.mark.parametrize(
    ("name", "make", "reason"),
    [
        ("empty.jpg", lambda path: path.write_bytes(b""), "empty"),
        ("cut.jpg", truncated_jpeg, "truncated"),
        ("notes.jpg", lambda path: path.write_text("not an image"), "not an image"),
        ("gone.jpg", lambda path: None, "not found"),
    ],
)
def test_broken_files_raise_one_error_naming_the_file(tmp_path, name, make, reason):
    make(tmp_path / name)
    with pytest.raises(BadImageError, match=reason) as caught:
        load_rgb(tmp_path / name)
    assert str(tmp_path / name) in str(caught.value)
