"""Data: offline .npz archives, the missing-data message, synthetic data, device-side augmentation, ImageNet folders."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from ndlib.data import (
    DATASETS,
    ImageArrays,
    TensorLoader,
    arrays_checksum,
    augment_batch,
    imagenet_loaders,
    load_cifar,
    synthetic_arrays,
)


def _write_npz(folder, name, n_train=20, n_test=10, seed=0):
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, count in (("train", n_train), ("test", n_test)):
        x = rng.integers(0, 256, size=(count, 32, 32, 3), dtype=np.uint8)
        y = rng.integers(0, 10, size=count).astype(np.int64)
        np.savez(folder / f"{name}_{split}.npz", x=x, y=y)
        arrays[split] = (x, y)
    return arrays


def test_offline_npz_archives_load_with_checksum(tmp_path):
    arrays = _write_npz(tmp_path, "cifar10")
    train, test, source = load_cifar("cifar10", tmp_path, check_counts=False)
    x, y = arrays["train"]
    assert train.x.shape == (20, 3, 32, 32) and train.x.dtype == torch.uint8
    assert torch.equal(train.x, torch.from_numpy(x).permute(0, 3, 1, 2)) and torch.equal(train.y, torch.from_numpy(y))
    assert len(test) == 10
    assert source.kind == "npz" and source.synthetic is False
    expected = hashlib.sha256((arrays_checksum(*arrays["train"]) + arrays_checksum(*arrays["test"])).encode())
    assert source.sha256 == expected.hexdigest()


def test_arrays_checksum_matches_the_unpack_script_definition():
    x = np.arange(2 * 32 * 32 * 3, dtype=np.uint8).reshape(2, 32, 32, 3)
    y = np.array([3, 7])
    assert arrays_checksum(x, y) == hashlib.sha256(x.tobytes() + y.astype(np.int64).tobytes()).hexdigest()


def test_partial_archive_is_refused_by_default(tmp_path):
    _write_npz(tmp_path, "cifar10")
    with pytest.raises(ValueError, match="expected 50000 images"):
        load_cifar("cifar10", tmp_path)


def test_archive_without_arrays_is_a_clear_error(tmp_path):
    np.savez(tmp_path / "cifar10_train.npz", images=np.zeros(3))
    np.savez(tmp_path / "cifar10_test.npz", images=np.zeros(3))
    with pytest.raises(ValueError, match="missing arrays"):
        load_cifar("cifar10", tmp_path)


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_missing_data_names_both_fixes(tmp_path, name):
    with pytest.raises(FileNotFoundError) as info:
        load_cifar(name, tmp_path / "nothing-here")
    message = str(info.value)
    assert "unpack.py" in message and f"--dataset {name}" in message  # offline fix
    assert "--download" in message  # online fix


def test_unknown_dataset_lists_valid_names(tmp_path):
    with pytest.raises(ValueError, match="valid"):
        load_cifar("mnist", tmp_path)


def test_synthetic_data_is_deterministic_and_labelled():
    first = synthetic_arrays(32, 16, 5, 8, seed=3)
    second = synthetic_arrays(32, 16, 5, 8, seed=3)
    other = synthetic_arrays(32, 16, 5, 8, seed=4)
    assert torch.equal(first[0].x, second[0].x) and first[2].sha256 == second[2].sha256
    assert first[2].sha256 != other[2].sha256
    train, test, source = first
    assert train.x.shape == (32, 3, 8, 8) and test.x.shape == (16, 3, 8, 8)
    assert int(train.y.max()) < 5 and source.synthetic and "SYNTHETIC" in source.description
    with pytest.raises(ValueError, match="num_classes"):
        synthetic_arrays(4, 4, 0, 8)


def test_image_arrays_validate_dtype_and_shape():
    with pytest.raises(TypeError, match="uint8"):
        ImageArrays(torch.zeros(2, 3, 4, 4), torch.zeros(2, dtype=torch.int64))
    with pytest.raises(TypeError, match="int64"):
        ImageArrays(torch.zeros(2, 3, 4, 4, dtype=torch.uint8), torch.zeros(3, dtype=torch.int64))


def test_augmentation_is_a_padded_crop_possibly_flipped():
    generator = torch.Generator().manual_seed(0)
    x = torch.randint(1, 256, (6, 3, 8, 8), dtype=torch.uint8)  # no zeros, so padding is visible
    out = augment_batch(x, 2, generator)
    assert out.shape == x.shape and out.dtype == torch.uint8
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for image, result in zip(padded, out):
        candidates = [image[:, i:i + 8, j:j + 8] for i in range(5) for j in range(5)]
        candidates += [c.flip(2) for c in candidates]
        assert any(torch.equal(result, c) for c in candidates)


def test_augmentation_varies_offsets_and_flips():
    generator = torch.Generator().manual_seed(0)
    x = torch.randint(1, 256, (1, 3, 8, 8), dtype=torch.uint8).repeat(200, 1, 1, 1)
    out = augment_batch(x, 4, generator)
    distinct = {out[i].numpy().tobytes() for i in range(200)}
    assert len(distinct) > 50  # 81 offsets x 2 flips
    unpadded_flips = augment_batch(x[:100], 0, generator)
    same = sum(torch.equal(unpadded_flips[i], x[0]) for i in range(100))
    assert 25 < same < 75  # about half flipped


def _loader(arrays, **kwargs):
    info = DATASETS["cifar10"]
    return TensorLoader(arrays, kwargs.pop("batch_size", 8), info.mean, info.std, **kwargs)


def test_train_loader_covers_the_split_once_per_epoch_and_is_seeded():
    train, _, _ = synthetic_arrays(50, 4, 10, 8)
    loader = _loader(train, train=True, seed=1)
    assert len(loader) == 7 and loader.num_samples == 50
    batches = list(loader)
    assert [len(y) for _, y in batches] == [8] * 6 + [2]
    assert sorted(torch.cat([y for _, y in batches]).tolist()) == sorted(train.y.tolist())
    assert batches[0][0].dtype == torch.float32 and batches[0][0].shape == (8, 3, 8, 8)
    again = list(_loader(train, train=True, seed=1))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(batches, again))
    loader.set_epoch(1)
    next_epoch = list(loader)
    assert not torch.equal(batches[0][0], next_epoch[0][0])


def test_eval_loader_normalises_in_order_without_augmentation():
    _, test, _ = synthetic_arrays(4, 10, 10, 8)
    info = DATASETS["cifar10"]
    x, y = next(iter(_loader(test, train=False, batch_size=10)))
    mean, std = torch.tensor(info.mean).view(1, 3, 1, 1), torch.tensor(info.std).view(1, 3, 1, 1)
    torch.testing.assert_close(x, (test.x.float() / 255 - mean) / std)
    assert torch.equal(y, test.y)


def test_ranks_take_disjoint_shards_of_the_same_permutation():
    train, _, _ = synthetic_arrays(30, 4, 10, 8)
    train = ImageArrays(train.x, torch.arange(30))  # labels = indices, to see which images each rank gets
    seen = []
    for rank in range(2):
        loader = _loader(train, train=True, seed=5, rank=rank, world_size=2, batch_size=4)
        seen.append(torch.cat([y for _, y in loader]).tolist())
    assert len(seen[0]) == len(seen[1]) == 15 and set(seen[0]).isdisjoint(seen[1])
    assert sorted(seen[0] + seen[1]) == list(range(30))


def test_channels_last_batches():
    train, _, _ = synthetic_arrays(8, 4, 10, 8)
    x, _ = next(iter(_loader(train, train=True, channels_last=True)))
    assert x.is_contiguous(memory_format=torch.channels_last)


def _fake_imagenet(root, classes=("n01", "n02"), per_class=3):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for name in classes:
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(per_class):
                pixels = rng.integers(0, 256, size=(40, 48, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")


def test_imagenet_class_folders_load_with_standard_transforms(tmp_path):
    _fake_imagenet(tmp_path)
    train, val, source = imagenet_loaders(tmp_path, 4, seed=0, device="cpu", num_workers=0, image_size=32)
    x, y = next(iter(train))
    assert x.shape == (4, 3, 32, 32) and x.dtype == torch.float32 and set(y.tolist()) <= {0, 1}
    assert len(train) == 2 and train.num_samples == 6
    xv, yv = next(iter(val))
    assert xv.shape == (4, 3, 32, 32)
    assert source.kind == "imagefolder" and not source.synthetic and len(source.sha256) == 64


def test_imagenet_missing_split_is_a_clear_error(tmp_path):
    (tmp_path / "train").mkdir()
    with pytest.raises(FileNotFoundError, match="class-folder layout"):
        imagenet_loaders(tmp_path, 4, seed=0, device="cpu", num_workers=0)
