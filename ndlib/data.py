"""Datasets and loaders for Tables 1 (CIFAR) and 2 (ImageNet), plus labelled synthetic data.

CIFAR comes from one of two sources, tried in this order:

1. an offline folder of ``.npz`` archives ``<name>_train.npz`` / ``<name>_test.npz`` holding
   ``x`` (uint8, ``(N, 32, 32, 3)``) and ``y`` (int64, ``(N,)``) -- what
   ``python ../shared/data/unpack.py --out data/`` writes;
2. torchvision's standard dataset folder under the same root (downloaded there when
   ``download=True`` and the machine is online).

Either way the arrays are hashed (SHA-256 of the ``x`` bytes then the ``y`` bytes as int64,
the same digest ``unpack.py`` checks), and :class:`DataSource` goes into the run record.

The Table 1 augmentation is done on whole batches of tensors, on whatever device holds the
split (the GPU when there is one): the split is stored once as a uint8 ``(N, C, H, W)``
tensor; for each batch the images are gathered, zero-padded by 4, cropped back to 32 at
random offsets (one vectorised gather, no per-image Python), flipped at random, and
normalised by the training set's channel mean and std.  All randomness comes from a
``torch.Generator`` seeded from the run's seed and the epoch number, so an epoch's batches
are the same whether or not the run was resumed in between.
"""
from __future__ import annotations

import hashlib
import math
import zipfile
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

__all__ = [
    "DatasetInfo",
    "DATASETS",
    "DataSource",
    "ImageArrays",
    "load_cifar",
    "synthetic_arrays",
    "arrays_checksum",
    "channel_stats",
    "TensorLoader",
    "augment_batch",
    "ImageFolderLoader",
    "imagenet_loaders",
]


@dataclass(frozen=True)
class DatasetInfo:
    """What a dataset looks like and how it is normalised (mean/std of the training set, /255).

    For CIFAR, ``mean`` / ``std`` are the published values, used for synthetic stand-ins; a
    real CIFAR run computes its own from the training split when it loads it
    (:func:`channel_stats`, stored in the record's ``data_source``) and normalises with those.
    They agree to the 4 printed decimals.
    """

    name: str
    table: int
    num_classes: int
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    num_train: int
    num_test: int


DATASETS: dict[str, DatasetInfo] = {
    "cifar10": DatasetInfo("cifar10", 1, 10, 32, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), 50_000, 10_000),
    "cifar100": DatasetInfo("cifar100", 1, 100, 32, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), 50_000, 10_000),
    "imagenet": DatasetInfo("imagenet", 2, 1000, 224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), 1_281_167, 50_000),
}

_TORCHVISION_CLASSES = {"cifar10": "CIFAR10", "cifar100": "CIFAR100"}


def dataset_info(name: str) -> DatasetInfo:
    """The :class:`DatasetInfo` of ``name``; a ValueError lists the valid names."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; valid: {sorted(DATASETS)}")
    return DATASETS[name]


@dataclass(frozen=True)
class DataSource:
    """Where a run's data came from; stored in the run record."""

    kind: str  # "npz" | "torchvision" | "imagefolder" | "synthetic"
    location: str  # relative to the project root when inside it (ndlib.paths.portable_path)
    sha256: str
    synthetic: bool
    description: str
    channel_mean: tuple[float, ...] | None = None  # computed from the training split (/255)
    channel_std: tuple[float, ...] | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ImageArrays:
    """One split as tensors: ``x`` uint8 ``(N, C, H, W)``, ``y`` int64 ``(N,)``."""

    x: torch.Tensor
    y: torch.Tensor

    def __post_init__(self) -> None:
        if self.x.dtype != torch.uint8 or self.x.dim() != 4:
            raise TypeError(
                f"x must be a uint8 (N, C, H, W) tensor, got {self.x.dtype} of shape {tuple(self.x.shape)}"
            )
        if self.y.dtype != torch.int64 or self.y.shape != (self.x.shape[0],):
            raise TypeError(
                f"y must be an int64 tensor of shape ({self.x.shape[0]},), got {self.y.dtype} {tuple(self.y.shape)}"
            )

    def __len__(self) -> int:
        return self.x.shape[0]

    def to(self, device) -> "ImageArrays":
        return ImageArrays(self.x.to(device), self.y.to(device))


def arrays_checksum(x_nhwc: np.ndarray, y: np.ndarray) -> str:
    """SHA-256 of ``x`` bytes (uint8, NHWC, C order) followed by ``y`` as int64 bytes."""
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(x_nhwc, dtype=np.uint8).tobytes())
    digest.update(np.ascontiguousarray(y, dtype=np.int64).tobytes())
    return digest.hexdigest()


def channel_stats(x: torch.Tensor, decimals: int = 4) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (population) std of uint8 images ``(N, C, H, W)``, in units of 1/255,
    rounded to ``decimals`` (the precision of the published values).

    Exact: it counts the 256 possible values of each channel (a histogram) and takes the first
    two moments of the counts in float64, so no float copy of the images is made.
    """
    if x.dtype != torch.uint8 or x.dim() != 4:
        raise TypeError(f"channel_stats needs uint8 images (N, C, H, W), got {x.dtype} {tuple(x.shape)}")
    values = torch.arange(256, dtype=torch.float64) / 255.0
    means, stds = [], []
    for channel in range(x.shape[1]):
        counts = torch.bincount(x[:, channel].reshape(-1), minlength=256).double()
        total = counts.sum()
        mean = (counts * values).sum() / total
        var = (counts * (values - mean) ** 2).sum() / total
        means.append(round(float(mean), decimals))
        stds.append(round(float(var.sqrt()), decimals))
    return tuple(means), tuple(stds)


def _to_arrays(x_nhwc: np.ndarray, y: np.ndarray, where: str) -> ImageArrays:
    if x_nhwc.dtype != np.uint8 or x_nhwc.ndim != 4 or x_nhwc.shape[-1] != 3:
        raise ValueError(f"{where}: x must be uint8 (N, H, W, 3), got {x_nhwc.dtype} {x_nhwc.shape}")
    if y.ndim != 1 or len(y) != len(x_nhwc):
        raise ValueError(f"{where}: y must have shape ({len(x_nhwc)},), got {y.shape}")
    x = torch.from_numpy(np.ascontiguousarray(x_nhwc.transpose(0, 3, 1, 2)))
    return ImageArrays(x, torch.from_numpy(y.astype(np.int64)))


def _read_npz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``x`` and ``y`` of one ``.npz`` split; a damaged file (truncated, bit-flipped, not an npz at
    all) is a ValueError that names it and the fix, never a bare ``BadZipFile`` or numpy's advice
    about pickles (which must stay off: never unpickle a data file)."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            names = set(archive.files)
            arrays = (archive["x"], archive["y"]) if {"x", "y"} <= names else None
    except FileNotFoundError:
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError) as error:
        reason = "not an npz archive" if "pickle" in str(error) else f"{type(error).__name__}: {error}"
        raise ValueError(f"{path} is damaged ({reason}); fix: delete it and unpack it again with `make data` "
                         "(which checks every archive's SHA-256), or pass --data-dir to an intact copy") from None
    if arrays is None:
        raise ValueError(f"{path}: missing arrays {sorted({'x', 'y'} - names)}; expected 'x' (uint8 N,32,32,3) and "
                         "'y' (int64 N)")
    return arrays


def _missing_data_message(name: str, root: Path) -> str:
    return (
        f"{name} was not found under {root} (looked for {name}_train.npz / {name}_test.npz and for "
        f"torchvision's {_TORCHVISION_CLASSES[name]} folder); fix: unpack it offline with "
        f"`python ../shared/data/unpack.py --out data/ --dataset {name}` (or `make data`) "
        "or pass --data-dir to the folder that holds it, "
        "or online add --download (download=True) to let torchvision fetch it"
    )


def load_cifar(name: str, root: str | Path, download: bool = False,
               check_counts: bool = True) -> tuple[ImageArrays, ImageArrays, DataSource]:
    """Load a CIFAR dataset's train and test splits (CPU tensors) and describe their source.

    ``check_counts`` insists on the full 50,000 / 10,000 images (off only for small test archives).
    """
    info = dataset_info(name)
    if info.table != 1:
        raise ValueError(f"load_cifar handles CIFAR datasets only, got {name!r}")
    root = Path(root)
    train_npz, test_npz = root / f"{name}_train.npz", root / f"{name}_test.npz"
    if train_npz.is_file() and test_npz.is_file():
        (xtr, ytr), (xte, yte) = _read_npz(train_npz), _read_npz(test_npz)
        kind = "npz"
    else:
        import torchvision

        dataset_class = getattr(torchvision.datasets, _TORCHVISION_CLASSES[name])
        try:
            train_set = dataset_class(str(root), train=True, download=download)
            test_set = dataset_class(str(root), train=False, download=download)
        except (RuntimeError, OSError) as error:  # torchvision: "Dataset not found or corrupted"
            raise FileNotFoundError(_missing_data_message(name, root) + f" (torchvision said: {error})") from error
        xtr, ytr = np.asarray(train_set.data), np.asarray(train_set.targets, dtype=np.int64)
        xte, yte = np.asarray(test_set.data), np.asarray(test_set.targets, dtype=np.int64)
        kind = "torchvision"
    from ndlib.paths import portable_path

    location = portable_path(root)
    train, test = _to_arrays(xtr, ytr, f"{name} train"), _to_arrays(xte, yte, f"{name} test")
    for split, arrays, expected in (("train", train, info.num_train), ("test", test, info.num_test)):
        if check_counts and len(arrays) != expected:
            raise ValueError(f"{name} {split}: expected {expected} images, found {len(arrays)} in {location}")
    checksum = hashlib.sha256(
        (arrays_checksum(xtr, ytr) + arrays_checksum(xte, yte)).encode()
    ).hexdigest()
    mean, std = channel_stats(train.x)
    source = DataSource(
        kind=kind,
        location=location,
        sha256=checksum,
        synthetic=False,
        description=(
            f"{name}: {len(train)} train / {len(test)} test images from {kind}; "
            "sha256 = SHA-256 of the hex digests of train then test (each: x bytes then y as int64); "
            "channel mean/std computed from the training split"
        ),
        channel_mean=mean,
        channel_std=std,
    )
    return train, test, source


def synthetic_arrays(
    num_train: int,
    num_test: int,
    num_classes: int,
    image_size: int,
    channels: int = 3,
    seed: int = 0,
) -> tuple[ImageArrays, ImageArrays, DataSource]:
    """Random uint8 images whose class shifts the mean colour of a random class template.

    The classes are separable (each has its own smooth template plus noise), so a few steps of
    training visibly lower the loss; the data is labelled synthetic everywhere.
    """
    for name, value in (("num_train", num_train), ("num_test", num_test), ("num_classes", num_classes),
                        ("image_size", image_size), ("channels", channels)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"synthetic data: {name} must be a positive int, got {value!r}")
    generator = torch.Generator().manual_seed(seed)
    templates = torch.rand(num_classes, channels, 4, 4, generator=generator)
    templates = torch.nn.functional.interpolate(
        templates, size=(image_size, image_size), mode="bilinear", align_corners=False
    )

    def make(count: int) -> ImageArrays:
        y = torch.randint(num_classes, (count,), generator=generator)
        noise = torch.randn(count, channels, image_size, image_size, generator=generator)
        x = (templates[y] * 160 + 48 + noise * 24).clamp(0, 255).to(torch.uint8)
        return ImageArrays(x, y)

    train, test = make(num_train), make(num_test)
    checksum = hashlib.sha256(train.x.numpy().tobytes() + test.x.numpy().tobytes()).hexdigest()
    source = DataSource(
        kind="synthetic",
        location="generated in memory",
        sha256=checksum,
        synthetic=True,
        description=(
            f"SYNTHETIC data (not a real dataset): {num_train} train / {num_test} test images, "
            f"{channels}x{image_size}x{image_size}, {num_classes} classes, seed {seed}"
        ),
    )
    return train, test, source


# --------------------------------------------------------------------------------------
# Batches from tensors (CIFAR and synthetic), augmented on the device
# --------------------------------------------------------------------------------------
def augment_batch(x: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Random crop (zero padding ``padding``) back to the input size and random horizontal flip.

    ``x`` is uint8 ``(B, C, H, W)``.  The crop is one advanced-indexing gather: row indices
    ``oy_b + i`` and column indices ``ox_b + j`` into the padded batch, with offsets
    ``oy_b, ox_b`` uniform in ``[0, 2 * padding]`` (as torchvision's RandomCrop(32, padding=4)).
    """
    batch, channels, height, width = x.shape
    device = x.device
    if padding > 0:
        padded = torch.nn.functional.pad(x, (padding, padding, padding, padding))
        offset_y = torch.randint(2 * padding + 1, (batch,), generator=generator, device=device)
        offset_x = torch.randint(2 * padding + 1, (batch,), generator=generator, device=device)
        rows = offset_y[:, None] + torch.arange(height, device=device)  # (B, H)
        cols = offset_x[:, None] + torch.arange(width, device=device)  # (B, W)
        x = padded[
            torch.arange(batch, device=device)[:, None, None, None],
            torch.arange(channels, device=device)[None, :, None, None],
            rows[:, None, :, None],
            cols[:, None, None, :],
        ]
    flip = torch.rand(batch, generator=generator, device=device) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(3), x)


class TensorLoader:
    """Batches of a split that lives on one device as a uint8 tensor.

    Training batches are shuffled, augmented (:func:`augment_batch`) and normalised; evaluation
    batches are only normalised, in order.  With ``world_size > 1`` each rank takes the
    interleaved shard ``perm[rank::world_size]`` of the epoch's permutation (the same on every
    rank, as it comes from the same seed), and ``batch_size`` is the per-rank batch.
    """

    def __init__(
        self,
        arrays: ImageArrays,
        batch_size: int,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        *,
        train: bool,
        seed: int = 0,
        padding: int = 4,
        device: torch.device | str = "cpu",
        rank: int = 0,
        world_size: int = 1,
        channels_last: bool = False,
    ) -> None:
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.device = torch.device(device)
        self.arrays = arrays.to(self.device)
        self.batch_size = batch_size
        self.train = train
        self.seed = int(seed)
        self.padding = padding if train else 0
        self.rank, self.world_size = rank, world_size
        self.channels_last = channels_last
        channels = arrays.x.shape[1]
        if len(mean) != channels or len(std) != channels:
            raise ValueError(f"mean/std need {channels} values, got {len(mean)}/{len(std)}")
        self.scale = (1.0 / (255.0 * torch.tensor(std, device=self.device))).view(1, -1, 1, 1)
        self.shift = (torch.tensor(mean, device=self.device) / torch.tensor(std, device=self.device)).view(1, -1, 1, 1)
        self.epoch = 0
        self._next_batch = 0  # position of the iteration in progress
        self._live_generator: torch.Generator | None = None
        self._resume: dict | None = None

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose shuffle and augmentation the next iteration uses."""
        self.epoch = int(epoch)

    def state_dict(self) -> dict:
        """Where the iteration in progress stands: the epoch, the next batch and the state of the
        augmentation generator after the last batch handed out (for an exact mid-epoch resume)."""
        generator = self._live_generator
        return {"epoch": self.epoch, "next_batch": self._next_batch,
                "generator_state": generator.get_state() if generator is not None else None}

    def load_state_dict(self, state: dict) -> None:
        """Make the next iteration continue epoch ``state["epoch"]`` at ``state["next_batch"]``
        with the augmentation generator where it was, as if it had never stopped."""
        self.set_epoch(state["epoch"])
        self._resume = {"next_batch": int(state["next_batch"]), "generator_state": state.get("generator_state")}

    @property
    def num_samples(self) -> int:
        """Images this rank sees per epoch."""
        return len(range(self.rank, len(self.arrays), self.world_size))

    def __len__(self) -> int:
        return math.ceil(self.num_samples / self.batch_size)

    def _generator(self) -> torch.Generator:
        # A fresh generator per epoch: the batches of epoch e depend only on (seed, e).
        return torch.Generator(device=self.device).manual_seed(self.seed * 1_000_003 + self.epoch * 7_919 + 17)

    def normalize(self, x_uint8: torch.Tensor) -> torch.Tensor:
        """``(x / 255 - mean) / std`` as float32."""
        x = x_uint8.float() * self.scale - self.shift
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        count = len(self.arrays)
        if self.train:
            generator = self._generator()
            order = torch.randperm(count, generator=generator, device=self.device)
        else:
            generator = None
            order = torch.arange(count, device=self.device)
        order = order[self.rank :: self.world_size]
        first = 0
        if self._resume is not None:
            first = self._resume["next_batch"]
            if generator is not None and self._resume["generator_state"] is not None:
                generator.set_state(self._resume["generator_state"])
            self._resume = None
        self._live_generator = generator
        for batch in range(first, len(self)):
            index = order[batch * self.batch_size : (batch + 1) * self.batch_size]
            x = self.arrays.x.index_select(0, index)
            if self.train:
                x = augment_batch(x, self.padding, generator)
            self._next_batch = batch + 1
            yield self.normalize(x), self.arrays.y.index_select(0, index)


# --------------------------------------------------------------------------------------
# ImageNet: class folders, torchvision transforms, a DataLoader
# --------------------------------------------------------------------------------------
class ImageFolderLoader:
    """A DataLoader over an ImageFolder whose batches are moved to ``device``; same interface as
    :class:`TensorLoader` (``set_epoch``, ``len``, ``num_samples``, iteration)."""

    def __init__(self, dataset, batch_size: int, *, train: bool, seed: int, device, num_workers: int,
                 rank: int = 0, world_size: int = 1, channels_last: bool = False) -> None:
        from torch.utils.data import DataLoader, DistributedSampler

        self.device = torch.device(device)
        self.channels_last = channels_last
        self.dataset, self.batch_size, self.num_workers = dataset, batch_size, num_workers
        self.sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=train, seed=seed,
                                          drop_last=False)
        self.loader = DataLoader(dataset, batch_size=batch_size, sampler=self.sampler, num_workers=num_workers,
                                 pin_memory=self.device.type == "cuda", persistent_workers=num_workers > 0)
        self.epoch, self._next_batch, self._resume_batch = 0, 0, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        self.sampler.set_epoch(epoch)

    def state_dict(self) -> dict:
        """The epoch and the next batch of the iteration in progress.  A resume continues with
        the same images in the same order; the random crops and flips drawn in the loader's
        worker processes are not reproduced exactly (they are for :class:`TensorLoader`)."""
        return {"epoch": self.epoch, "next_batch": self._next_batch, "generator_state": None}

    def load_state_dict(self, state: dict) -> None:
        self.set_epoch(state["epoch"])
        self._resume_batch = int(state["next_batch"])

    @property
    def num_samples(self) -> int:
        return self.sampler.num_samples

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        from torch.utils.data import DataLoader

        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        first, self._resume_batch = self._resume_batch, 0
        loader = self.loader
        if first:  # the rest of the epoch's sample order, from the resumed batch on
            remaining = list(self.sampler)[first * self.batch_size:]
            loader = DataLoader(self.dataset, batch_size=self.batch_size, sampler=remaining,
                                num_workers=self.num_workers, pin_memory=self.device.type == "cuda")
        self._next_batch = first
        for x, y in loader:
            self._next_batch += 1
            yield (x.to(self.device, non_blocking=True, memory_format=memory_format),
                   y.to(self.device, non_blocking=True))


def _listing_checksum(folder: Path) -> str:
    """SHA-256 of the sorted relative paths and sizes of every file (hashing ImageNet's bytes is too slow)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(f"{path.relative_to(folder)}\t{path.stat().st_size}\n".encode())
    return digest.hexdigest()


def imagenet_loaders(root: str | Path, batch_size: int, *, seed: int, device, num_workers: int = 4,
                     rank: int = 0, world_size: int = 1, channels_last: bool = False,
                     image_size: int = 224) -> tuple[ImageFolderLoader, ImageFolderLoader, DataSource]:
    """ImageNet from ``root/train/<class>/*`` and ``root/val/<class>/*`` (the standard layout).

    Train: RandomResizedCrop(image_size) + horizontal flip; val: Resize(image_size * 8 / 7, i.e.
    256 for 224) + CenterCrop(image_size); both normalised by the ImageNet mean/std.
    """
    from torchvision import datasets, transforms

    root = Path(root)
    for split in ("train", "val"):
        if not (root / split).is_dir():
            raise FileNotFoundError(
                f"ImageNet split folder {root / split} not found: expected {root}/train/<class>/<image> and "
                f"{root}/val/<class>/<image> (the standard class-folder layout); pass --data-dir to its parent folder"
            )
    info = DATASETS["imagenet"]
    normalize = transforms.Normalize(info.mean, info.std)
    train_tf = transforms.Compose([transforms.RandomResizedCrop(image_size), transforms.RandomHorizontalFlip(),
                                   transforms.ToTensor(), normalize])
    val_tf = transforms.Compose([transforms.Resize(round(image_size * 8 / 7)), transforms.CenterCrop(image_size),
                                 transforms.ToTensor(), normalize])
    train_set = datasets.ImageFolder(str(root / "train"), train_tf)
    val_set = datasets.ImageFolder(str(root / "val"), val_tf)
    if train_set.classes != val_set.classes:
        raise ValueError(f"ImageNet train and val class folders differ under {root}")
    common = dict(seed=seed, device=device, num_workers=num_workers, rank=rank, world_size=world_size,
                  channels_last=channels_last)
    train = ImageFolderLoader(train_set, batch_size, train=True, **common)
    val = ImageFolderLoader(val_set, batch_size, train=False, **common)
    listing = _listing_checksum(root / "train") + _listing_checksum(root / "val")
    checksum = hashlib.sha256(listing.encode()).hexdigest()
    from ndlib.paths import portable_path

    source = DataSource(
        kind="imagefolder",
        location=portable_path(root),
        sha256=checksum,
        synthetic=False,
        description=(f"ImageNet-style folders: {len(train_set)} train / {len(val_set)} val images, "
                     f"{len(train_set.classes)} classes; sha256 over the sorted file list with sizes"),
    )
    return train, val, source
