"""The one image-input module every command reads through: the folder rule, opening / orienting / converting,
resize and centre crop, and Hugging Face datasets (damaged rows fail one at a time, never the whole reader)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image, UnidentifiedImageError

from diffusers_litevae.image_io import (
    DatasetImages,
    ImageInputError,
    centre_crop,
    dataset_images,
    describe_read_error,
    find_images,
    is_saved_dataset,
    load_image,
    load_image_dataset,
    resize_and_crop,
    short_side_size,
)


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def _gradient(width: int, height: int) -> Image.Image:
    """Every pixel different, so a crop in the wrong place cannot match."""
    x, y = np.meshgrid(np.arange(width), np.arange(height))
    return Image.fromarray(np.stack([x * 3 % 256, y * 5 % 256, (x + y) % 256], -1).astype(np.uint8))


def test_find_images_rule_and_errors(tmp_path):
    for name in ["b/z.PNG", "a.jpg", "b/a.webp", ".hidden.png", ".cache/x.png", "notes.txt"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    assert [p.relative_to(tmp_path).as_posix() for p in find_images(tmp_path)] == ["a.jpg", "b/a.webp", "b/z.PNG"]
    with pytest.raises(ImageInputError, match="does not exist"):
        find_images(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImageInputError, match="holds no .* images"):
        find_images(tmp_path / "empty")


def test_load_image_turns_upright_and_converts_every_mode():
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    buffer = io.BytesIO()
    Image.new("RGB", (48, 32), (200, 10, 10)).save(buffer, "JPEG", exif=exif.tobytes())
    rotated = load_image(buffer.getvalue())
    assert rotated.mode == "RGB" and rotated.size == (32, 48)

    rgba = Image.new("RGBA", (8, 8), (0, 0, 255, 255))
    rgba.putpixel((0, 0), (0, 0, 0, 0))  # transparent: composited onto the background
    assert load_image(_png(rgba)).getpixel((0, 0)) == (255, 255, 255)
    assert load_image(_png(rgba), background=(0, 128, 0)).getpixel((0, 0)) == (0, 128, 0)
    assert load_image(_png(rgba)).getpixel((1, 1)) == (0, 0, 255)

    deep = Image.fromarray(np.full((4, 4), 65535, dtype=np.uint16))  # 16-bit white: scaled, not clipped to 255
    assert load_image(_png(deep)).getpixel((0, 0)) == (255, 255, 255)
    half = Image.fromarray(np.full((4, 4), 32896, dtype=np.uint16))
    assert load_image(_png(half)).getpixel((0, 0)) == (128, 128, 128)

    value = {"bytes": _png(Image.new("L", (6, 4), 77)), "path": None}  # a datasets image value read undecoded
    assert load_image(value).mode == "RGB" and load_image(value).getpixel((0, 0)) == (77, 77, 77)


def test_unreadable_images_raise_one_line_reasons(tmp_path):
    good = _png(_gradient(16, 16))
    (tmp_path / "truncated.png").write_bytes(good[: len(good) // 2])
    for data in [tmp_path / "truncated.png", b"not an image", b""]:
        with pytest.raises(Exception) as caught:
            load_image(data)
        reason = describe_read_error(caught.value)
        assert "\n" not in reason and len(reason) <= 200 and reason.split(":")[0] == type(caught.value).__name__
    with pytest.raises(Exception) as caught:
        load_image(b"not an image")
    assert describe_read_error(caught.value) == "UnidentifiedImageError: not an image, or a format PIL cannot read"
    with pytest.raises(TypeError, match="int"):
        load_image(5)


def test_resize_and_crop_arithmetic():
    image = _gradient(70, 45)
    assert short_side_size(70, 45, 32) == (50, 32)  # 70 * 32 / 45 = 49.8 -> 50
    resized = image.resize((50, 32), Image.Resampling.BICUBIC)
    square = resize_and_crop(image, 32)
    assert square.size == (32, 32)
    assert np.array_equal(np.asarray(square), np.asarray(resized.crop((9, 0, 41, 32))))  # centre: (50 - 32) // 2
    assert resize_and_crop(image, 32, square=False).size == (48, 32)
    native = resize_and_crop(image)  # full size, trimmed to multiples of 8 from the centre
    assert np.array_equal(np.asarray(native), np.asarray(image.crop((3, 2, 67, 42))))
    full_size = resize_and_crop(image, 32, resize=False)  # crop from the full-size image
    assert np.array_equal(np.asarray(full_size), np.asarray(image.crop((19, 6, 51, 38))))
    small = resize_and_crop(_gradient(20, 12), 32, resize=False)  # smaller than the crop: resized up first
    assert small.size == (32, 32)
    with pytest.raises(ValueError, match="smaller than 8 pixels"):
        resize_and_crop(_gradient(20, 5))


def test_centre_crop_takes_the_same_pixels_from_images_and_tensors():
    image = _gradient(11, 7)
    tensor = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)
    for width, height in [(4, 4), (5, 2), (11, 7), (20, 3)]:  # a side larger than the image keeps the image's
        from_image = torch.from_numpy(np.asarray(centre_crop(image, width, height)).copy()).permute(2, 0, 1)
        assert torch.equal(centre_crop(tensor, width, height), from_image)
        assert from_image.shape[-2:] == (min(height, 7), min(width, 11))


@pytest.fixture
def datasets():
    return pytest.importorskip("datasets")


def test_load_image_dataset_reads_saved_folders_splits_and_checks_the_column(tmp_path, datasets):
    images = [Image.new("RGB", (16 + 8 * i, 16), (40 * i, 100, 200)) for i in range(3)]
    table = datasets.Dataset.from_dict({"caption": ["a", "b", "c"], "picture": images})
    table = table.cast_column("picture", datasets.Image())
    datasets.DatasetDict({"train": table, "test": table.select([0])}).save_to_disk(str(tmp_path / "saved"))
    assert is_saved_dataset(tmp_path / "saved") and not is_saved_dataset(tmp_path)

    dataset, column = load_image_dataset(str(tmp_path / "saved"), split="test")
    assert column == "picture" and len(dataset) == 1  # the first Image feature, of the split asked for
    assert isinstance(dataset[0]["picture"], dict)  # undecoded: pixels are read one row at a time
    with pytest.raises(ImageInputError, match="no split 'validation'"):
        load_image_dataset(str(tmp_path / "saved"), split="validation")
    with pytest.raises(ImageInputError, match=r"no image column 'image'.*'picture'.*--image_column"):
        load_image_dataset(table, image_column="image")
    with pytest.raises(ImageInputError, match="could not load dataset"):
        load_image_dataset(str(tmp_path / "not-a-dataset"))


def test_a_damaged_row_fails_alone(datasets):
    rows = [_png(_gradient(16, 16)), b"\x89PNG truncated", _png(_gradient(24, 16))]
    table = datasets.Dataset.from_dict({"image": [{"bytes": data, "path": None} for data in rows]})
    dataset, column = load_image_dataset(table.cast_column("image", datasets.Image()))
    source = DatasetImages(dataset, column, indices=[2, 1, 0])
    assert source.load(0).size == (24, 16) and source.name(1) == "row 1"
    with pytest.raises(UnidentifiedImageError):
        source.load(1)
    assert source.load(2).size == (16, 16)

    named = dataset_images(dataset, max_images=2)
    assert len(named) == 2
    pairs = list(named)
    assert [name for name, _ in pairs] == ["train/0", "train/1"]
    assert load_image(pairs[0][1]).size == (16, 16)
