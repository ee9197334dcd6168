from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
import tifffile
from PIL import Image

from microcli.errors import (
    EmptyFileError,
    ImageTooLargeError,
    NotAnImageError,
    OutputExistsError,
    TruncatedImageError,
    UnsupportedImageError,
)
from microcli.io import MicrocliWarning, find_images, read_image, read_path_list, walk_images, write_image

from .conftest import NEU, neu, save_png


def test_8bit_png_scaled_to_unit_range(tmp_path, gray8):
    img = read_image(save_png(tmp_path / "a.png", gray8))
    assert img.data.dtype == np.float32 and img.bit_depth == 8
    np.testing.assert_allclose(img.data, gray8 / 255.0, atol=1e-6)


def test_16bit_png_round_trip_keeps_values(tmp_path, gray16):
    img = read_image(save_png(tmp_path / "a.png", gray16))
    assert img.bit_depth == 16
    np.testing.assert_allclose(img.data * 65535, gray16, atol=0.01)
    out = write_image(tmp_path / "b.png", img.data, bit_depth=16)
    back = np.asarray(Image.open(out))
    assert back.dtype == np.uint16 and back.max() > 255
    np.testing.assert_array_equal(back, gray16)


@pytest.mark.parametrize("dtype,scale,depth", [(np.uint8, 255, 8), (np.uint16, 65535, 16)])
def test_tiff_round_trip(tmp_path, dtype, scale, depth):
    arr = np.random.default_rng(2).integers(0, scale + 1, (30, 20)).astype(dtype)
    tifffile.imwrite(tmp_path / "a.tif", arr)
    img = read_image(tmp_path / "a.tif")
    assert img.bit_depth == depth
    write_image(tmp_path / "b.tif", img.data, bit_depth=depth)
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "b.tif"), arr)


def test_float32_tiff_kept_as_is(tmp_path):
    arr = np.linspace(-0.5, 2.0, 600, dtype=np.float32).reshape(20, 30)
    tifffile.imwrite(tmp_path / "f.tif", arr)
    img = read_image(tmp_path / "f.tif")
    assert img.bit_depth == 32
    np.testing.assert_array_equal(img.data, arr)


def test_multipage_tiff_reads_first_page_with_warning(tmp_path):
    stack = np.stack([np.full((8, 8), 10, np.uint8), np.full((8, 8), 200, np.uint8)])
    tifffile.imwrite(tmp_path / "m.tif", stack)
    with pytest.warns(MicrocliWarning, match=r"m\.tif: multi-page TIFF \(2 pages\); using the first page"):
        img = read_image(tmp_path / "m.tif")
    np.testing.assert_allclose(img.data, 10 / 255)


def test_palette_png_reads_its_colours(tmp_path):
    idx = np.array([[0, 1], [1, 0]], np.uint8)
    p = Image.fromarray(idx, mode="P")
    p.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    p.save(tmp_path / "p.png")
    img = read_image(tmp_path / "p.png")  # red is real colour: auto keeps RGB
    assert img.data.shape == (2, 2, 3)
    np.testing.assert_allclose(img.data[0, 1], [1, 0, 0])
    gray = read_image(tmp_path / "p.png", mode="gray").data
    assert gray.shape == (2, 2) and gray[0, 1] == pytest.approx(0.299, abs=1e-3)


def test_gray_palette_png_is_gray(tmp_path):
    p = Image.fromarray(np.array([[0, 1]], np.uint8), mode="P")
    p.putpalette([10, 10, 10, 240, 240, 240] + [0] * 762)
    p.save(tmp_path / "p.png")
    np.testing.assert_allclose(read_image(tmp_path / "p.png").data, [[10 / 255, 240 / 255]], atol=1e-6)


def test_gray_alpha_png_drops_alpha(tmp_path, gray8):
    la = np.stack([gray8, np.full_like(gray8, 128)], -1)
    Image.fromarray(la, mode="LA").save(tmp_path / "la.png")
    img = read_image(tmp_path / "la.png")
    assert img.data.shape == gray8.shape
    np.testing.assert_allclose(img.data, gray8 / 255.0, atol=1e-6)


def test_rgb_with_equal_channels_is_gray_in_auto_mode(tmp_path, gray8):
    save_png(tmp_path / "g.png", np.stack([gray8] * 3, -1))
    assert read_image(tmp_path / "g.png").data.shape == gray8.shape
    assert read_image(tmp_path / "g.png", mode="rgb").data.shape == (*gray8.shape, 3)


def test_jpeg_and_bmp(tmp_path, gray8):
    Image.fromarray(gray8).save(tmp_path / "a.bmp")
    np.testing.assert_allclose(read_image(tmp_path / "a.bmp").data, gray8 / 255.0, atol=1e-6)
    Image.fromarray(np.stack([gray8] * 3, -1)).save(tmp_path / "a.JPG", quality=95)
    assert read_image(tmp_path / "a.JPG").data.shape == gray8.shape


def test_empty_file(tmp_path):
    (tmp_path / "e.png").write_bytes(b"")
    with pytest.raises(EmptyFileError, match=r"e\.png: empty file \(0 bytes\)"):
        read_image(tmp_path / "e.png")


def test_truncated_png(truncated_png):
    with pytest.raises(TruncatedImageError, match=r"truncated\.png: truncated or corrupt image data"):
        read_image(truncated_png)


def test_truncated_tiff(tmp_path):
    tifffile.imwrite(tmp_path / "t.tif", np.zeros((64, 64), np.uint16))
    data = (tmp_path / "t.tif").read_bytes()
    (tmp_path / "t.tif").write_bytes(data[:200])
    with pytest.raises(TruncatedImageError, match=r"t\.tif: truncated or corrupt"):
        read_image(tmp_path / "t.tif")


def test_text_file_is_not_an_image(tmp_path):
    (tmp_path / "notes.png").write_text("hello")
    with pytest.raises(NotAnImageError, match=r"notes\.png: not an image file"):
        read_image(tmp_path / "notes.png")


def test_gif_is_unsupported(tmp_path, gray8):
    Image.fromarray(gray8).save(tmp_path / "a.gif")
    with pytest.raises(UnsupportedImageError, match=r"a\.gif: unsupported .*PNG, JPEG, BMP, TIFF"):
        read_image(tmp_path / "a.gif")


def test_pixel_limit_guards_decompression_bombs(tmp_path, gray8):
    save_png(tmp_path / "a.png", gray8)
    with pytest.raises(ImageTooLargeError, match=r"a\.png: too many pixels .*50x40 = 2,000 pixels > limit 1,000"):
        read_image(tmp_path / "a.png", max_pixels=1000)
    tifffile.imwrite(tmp_path / "a.tif", gray8)
    with pytest.raises(ImageTooLargeError):
        read_image(tmp_path / "a.tif", max_pixels=1000)


def test_write_refuses_to_overwrite(tmp_path, gray8):
    p = save_png(tmp_path / "a.png", gray8)
    with pytest.raises(OutputExistsError, match="exists"):
        write_image(p, np.zeros((2, 2), np.float32))


def test_write_binary_as_0_255(tmp_path):
    write_image(tmp_path / "m.png", np.array([[True, False]]))
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "m.png")), [[255, 0]])


def test_find_images_sorted_case_insensitive_skips_hidden_and_survives_loops(tmp_path, gray8):
    for rel in ["b/z.PNG", "b/a.tif", "a.JpEg", ".hidden.png", ".git/x.png", "c/notes.txt"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    os.symlink(tmp_path, tmp_path / "b" / "loop")
    rels = [f.rel for f in walk_images(tmp_path)]
    assert rels == ["a.JpEg", "b/a.tif", "b/z.PNG"]
    assert [f.rel for f in walk_images(tmp_path, recursive=False)] == ["a.JpEg"]


def test_read_path_list_lines_and_nul():
    import io

    assert list(read_path_list(io.StringIO("a.png\n\nb c.png\n"))) == ["a.png", "b c.png"]
    assert list(read_path_list(io.StringIO("a.png\0with\nnewline.png\0"), nul=True)) == ["a.png", "with\nnewline.png"]


def test_find_images_reads_stdin_dash(tmp_path):
    import io

    found = list(find_images(["-"], stdin=io.StringIO(f"{tmp_path}/x.png\n")))
    assert [f.path for f in found] == [f"{tmp_path}/x.png"]


def test_no_warning_for_plain_files(tmp_path, gray8):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_image(save_png(tmp_path / "a.png", gray8))


@neu
@pytest.mark.neu
def test_neu_det_jpegs_read_as_200px_grayscale():
    from microcli.data import discover
    from microcli.inputs import detect_channels

    found = discover(NEU)
    assert found.classes == ["crazing", "inclusion", "patches", "pitted_surface", "rolled-in_scale", "scratches"]
    assert len(found.items()) == 1800
    sample = [it.path for it in found.items()[::150]]
    assert detect_channels(sample) == 1  # stored as RGB JPEG, but R = G = B
    img = read_image(sample[0])
    assert img.data.shape == (200, 200) and img.bit_depth == 8 and 0 <= img.data.min() < img.data.max() <= 1
