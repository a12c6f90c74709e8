"""Tests of ndlib.whitening: the helpers and the cost model behind the book's chapter 2."""
from __future__ import annotations

import inspect
import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ndlib.layers import Delinear, FastDeconv, isqrt_newton_schulz
from ndlib.patches import sample_patches
from ndlib.whitening import (
    bf16_whitening_errors,
    block_assignment,
    channel_correlation,
    deconv_flops,
    deconv_kernel,
    inverse_sqrt_eigh,
    load_photographs,
    model_deconv_flops,
    newton_schulz_gain,
    newton_schulz_matmuls,
    patch_covariance,
    relative_error,
    shift_correlation,
    spd_with_condition,
    whiteness_error,
)

# The FLOP model counts the matmul route of Newton-Schulz; layers that can also evaluate it
# spectrally (an eigendecomposition, which torch's counter does not see) are pinned to it.
MATMUL = {"isqrt_method": "matmul"} if "isqrt_method" in inspect.signature(FastDeconv.__init__).parameters else {}


def _random_spd(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(n, n + 3, generator=g, dtype=torch.float64)
    return A @ A.T / n + 0.1 * torch.eye(n, dtype=torch.float64)


# ------------------------------------------------------------------ photographs, correlation
def test_load_photographs_shape_range_and_bad_names():
    photos = load_photographs(("coffee", "chelsea"), size=24)
    assert photos.shape == (2, 3, 24, 24) and photos.dtype == torch.float64
    assert float(photos.min()) >= 0.0 and float(photos.max()) <= 1.0
    assert float(photos.std()) > 0.05  # a real picture, not a constant
    with pytest.raises(ValueError, match="unknown photograph"):
        load_photographs(("not_a_photo",))
    with pytest.raises(ValueError):
        load_photographs(size=0)


def test_shift_correlation_matches_numpy_and_detects_smoothness():
    g = torch.Generator().manual_seed(1)
    noise = torch.rand(2, 3, 16, 40, generator=g, dtype=torch.float64)
    rho = shift_correlation(noise, 3)
    assert rho.shape == (4, 3)
    assert torch.allclose(rho[0], torch.ones(3, dtype=torch.float64))
    a = noise[:, 1, :, :-2].reshape(-1).numpy()
    b = noise[:, 1, :, 2:].reshape(-1).numpy()
    assert rho[2, 1].item() == pytest.approx(np.corrcoef(a, b)[0, 1], abs=1e-12)
    assert float(rho[1:].abs().max()) < 0.15  # white noise is uncorrelated
    smooth = torch.cumsum(noise, dim=-1)  # a random walk along the rows is strongly correlated
    assert float(shift_correlation(smooth, 1)[1].min()) > 0.5
    with pytest.raises(ValueError, match="smaller than the image width"):
        shift_correlation(noise, 40)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        shift_correlation(noise[0], 1)


def test_channel_correlation_is_a_correlation_matrix():
    g = torch.Generator().manual_seed(2)
    x = torch.rand(2, 1, 8, 8, generator=g, dtype=torch.float64)
    images = torch.cat([x, 2 * x + 1, -x], dim=1)
    R = channel_correlation(images)
    expected = torch.tensor([[1, 1, -1], [1, 1, -1], [-1, -1, 1]], dtype=torch.float64)
    assert torch.allclose(R, expected, atol=1e-12)


# ------------------------------------------------------------------ covariance and inverse roots
def test_patch_covariance_matches_explicit_loop():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 2, 5, 6, generator=g, dtype=torch.float64)
    mean, cov = patch_covariance(x, 3, sampling_stride=2, eps=0.5)
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1))
    rows = [
        padded[n, :, i : i + 3, j : j + 3].reshape(-1) for n in range(2) for i in range(0, 5, 2) for j in range(0, 6, 2)
    ]
    X = torch.stack(rows)
    assert torch.allclose(mean, X.mean(0))
    expected = torch.from_numpy(np.cov(X.numpy().T, bias=True)) + 0.5 * torch.eye(18, dtype=torch.float64)
    assert torch.allclose(cov, expected, atol=1e-12)


def test_inverse_sqrt_eigh_is_the_symmetric_inverse_root():
    C = _random_spd(7)
    D = inverse_sqrt_eigh(C)
    assert torch.allclose(D, D.T, atol=1e-12)
    assert torch.allclose(D @ C @ D, torch.eye(7, dtype=torch.float64), atol=1e-10)
    assert whiteness_error(D, C) < 1e-10
    singular = torch.diag(torch.tensor([1.0, 0.0], dtype=torch.float64))
    with pytest.raises(ValueError, match="positive definite"):
        inverse_sqrt_eigh(singular)
    with pytest.raises(ValueError, match="square"):
        inverse_sqrt_eigh(torch.ones(2, 3))


def test_newton_schulz_gain_predicts_the_layer_iteration():
    """The scalar recursion p <- p(3-p)^2/4 reproduces D C D^T's spectrum for the real iteration."""
    C = spd_with_condition(12, 1e4, seed=4)
    norm = float(torch.linalg.matrix_norm(C))
    eigenvalues = torch.linalg.eigvalsh(C)
    for n_iter in (1, 3, 5, 9):
        D = isqrt_newton_schulz(C, n_iter)
        whitened = torch.linalg.eigvalsh(D @ C @ D.T)
        predicted = newton_schulz_gain(eigenvalues / norm, n_iter)
        assert torch.allclose(whitened.sort().values, predicted.sort().values, rtol=1e-8, atol=1e-12)
    # floats and numpy work too; 1 is a fixed point; small values grow by 9/4 per step
    assert newton_schulz_gain(1.0, 5) == pytest.approx(1.0)
    assert newton_schulz_gain(np.array([1e-8]), 3)[0] == pytest.approx(1e-8 * (9 / 4) ** 3, rel=1e-6)
    with pytest.raises(ValueError):
        newton_schulz_gain(0.5, 0)


def test_newton_schulz_converges_slower_for_worse_conditioning():
    errors = []
    for condition in (1e1, 1e3, 1e5):
        C = spd_with_condition(16, condition, seed=5)
        errors.append(relative_error(isqrt_newton_schulz(C, 5), inverse_sqrt_eigh(C)))
    assert errors[0] < 0.05 < 0.5 < errors[1] < errors[2]


def test_spd_with_condition_has_the_requested_spectrum():
    C = spd_with_condition(10, 1e3, seed=6)
    eigenvalues = torch.linalg.eigvalsh(C)
    assert torch.allclose(C, C.T)
    assert eigenvalues.max().item() == pytest.approx(1.0, rel=1e-10)
    assert (eigenvalues.max() / eigenvalues.min()).item() == pytest.approx(1e3, rel=1e-8)
    with pytest.raises(ValueError, match=">= 1"):
        spd_with_condition(3, 0.5)


def test_relative_and_whiteness_error_values():
    eye = torch.eye(4, dtype=torch.float64)
    assert relative_error(2 * eye, eye) == pytest.approx(1.0)
    assert whiteness_error(torch.zeros(4, 4, dtype=torch.float64), eye) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="shapes differ"):
        relative_error(eye, torch.eye(3))


def test_newton_schulz_matmuls_counts_the_products():
    assert [newton_schulz_matmuls(n) for n in (1, 2, 5)] == [0, 3, 12]
    A = _random_spd(5).float()
    for n in (1, 2, 5):
        with FlopCounterMode(display=False) as counter:
            isqrt_newton_schulz(A, n)
        assert counter.get_total_flops() == newton_schulz_matmuls(n) * 2 * 5**3


# ------------------------------------------------------------------ pictures
def test_deconv_kernel_applied_as_conv_whitens_the_centre_pixels():
    g = torch.Generator().manual_seed(7)
    x = torch.cumsum(torch.randn(3, 2, 10, 10, generator=g, dtype=torch.float64), dim=-1)
    mean, cov = patch_covariance(x, 3, eps=1e-6)
    D = inverse_sqrt_eigh(cov)
    kernel = deconv_kernel(D, 2, 3)
    assert kernel.shape == (2, 2, 3, 3)
    bias = -(kernel.reshape(2, -1) @ mean)
    out = torch.nn.functional.conv2d(x, kernel, bias, padding=1)
    patches = sample_patches(x, (3, 3), (1, 1), (1, 1), 1)
    whitened = (patches - mean) @ D.T
    centre = whitened[:, [4, 13]]  # channel 0 and 1 centre features
    assert torch.allclose(out.permute(0, 2, 3, 1).reshape(-1, 2), centre, atol=1e-10)
    with pytest.raises(ValueError, match="channels"):
        deconv_kernel(D, 3, 3)


def test_block_assignment_interleaved_and_contiguous():
    interleaved = block_assignment(4, 1, 2, "interleaved")
    contiguous = block_assignment(4, 1, 2, "contiguous")
    assert interleaved.flatten().tolist() == [0, 1, 0, 1]
    assert contiguous.flatten().tolist() == [0, 0, 1, 1]
    owners = block_assignment(8, 3, 4)  # G = 2 blocks of 36 features
    assert owners.shape == (8, 9) and torch.bincount(owners.flatten()).tolist() == [36, 36]
    assert block_assignment(6, 3, 4).max().item() == 2  # gcd rule: block 2, 3 blocks
    with pytest.raises(ValueError, match="grouping"):
        block_assignment(4, 1, 2, "diagonal")


# ------------------------------------------------------------------ cost model
@pytest.mark.parametrize(
    "C_in, C_out, k, H, batch, block, sampling_stride, n_iter, conv_stride, groups",
    [
        (16, 32, 3, 12, 4, 4, 3, 5, 1, 1),  # several interleaved blocks
        (8, 8, 3, 10, 2, 64, 2, 5, 2, 1),  # block > channels, strided conv
        (12, 12, 3, 9, 2, 64, 3, 4, 1, 4),  # grouped conv: one covariance per group
        (6, 10, 1, 7, 3, 2, 3, 2, 1, 1),  # 1x1 conv: pixel vectors
        (16, 16, 3, 8, 2, 16, 3, 1, 1, 1),  # one iteration: no products
    ],
)
def test_deconv_flops_matches_torch_flop_counter(
    C_in, C_out, k, H, batch, block, sampling_stride, n_iter, conv_stride, groups
):
    """torch's counter sees every product of a real FastDeconv forward; the model must agree.

    The counter does not count matrix-vector products, which ``W' mu`` is when groups == 1.
    """
    torch.manual_seed(0)
    layer = FastDeconv(C_in, C_out, k, stride=conv_stride, padding=k // 2, groups=groups, block=block,
                       sampling_stride=sampling_stride, n_iter=n_iter, **MATMUL)
    with FlopCounterMode(display=False) as counter:
        layer(torch.randn(batch, C_in, H, H))
    model = deconv_flops(C_in, C_out, k, H, H, batch, block, sampling_stride, n_iter, conv_stride, groups)
    counted_by_torch = model["conv"] + model["covariance"] + model["newton_schulz"] + model["fold"]
    if groups > 1:
        counted_by_torch += model["bias_shift"]
    assert counter.get_total_flops() == counted_by_torch
    assert model["overhead_ratio"] == pytest.approx(model["overhead"] / model["conv"])


def test_deconv_flops_scaling_and_errors():
    base = deconv_flops(64, 64, 3, 32, 32, 128)
    double_batch = deconv_flops(64, 64, 3, 32, 32, 256)
    assert double_batch["conv"] == 2 * base["conv"]
    assert double_batch["covariance"] == 2 * base["covariance"]
    assert double_batch["newton_schulz"] == base["newton_schulz"]  # independent of the batch
    dense = deconv_flops(64, 64, 3, 32, 32, 128, sampling_stride=1)
    assert dense["covariance"] / base["covariance"] == pytest.approx((32 * 32) / (11 * 11))
    assert base["newton_schulz"] == 2 * 12 * 576**3
    assert base["conv"] == 2 * 128 * 32 * 32 * 64 * 64 * 9
    with pytest.raises(ValueError, match="divisible by groups"):
        deconv_flops(6, 8, 3, 8, 8, 2, groups=4)
    with pytest.raises(TypeError):
        deconv_flops(6.0, 8, 3, 8, 8, 2)
    with pytest.raises(ValueError):
        deconv_flops(6, 8, 3, 8, 8, 0)


def test_model_deconv_flops_reads_layer_sizes_with_hooks():
    model = nn.Sequential(
        FastDeconv(3, 8, 3, padding=1, n_iter=15, freeze=True),
        nn.ReLU(),
        nn.MaxPool2d(2),
        FastDeconv(8, 16, 3, padding=1, block=4),
        nn.ReLU(),
        FastDeconv(16, 16, 1),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        Delinear(16, 5, block=8),
    )
    before = [b.clone() for b in model.buffers()]
    table = model_deconv_flops(model, (2, 3, 16, 16))
    assert list(table["layer"]) == ["0", "3", "5"]
    assert list(table["H"]) == [16, 8, 8]
    assert table.loc[1, "conv"] == deconv_flops(8, 16, 3, 8, 8, 2, block=4)["conv"]
    assert table.loc[0, "newton_schulz"] == 2 * (3 * 15 - 3) * 27**3
    assert all(torch.equal(a, b) for a, b in zip(before, model.buffers()))  # no statistics touched
    assert model.training
    with_linear = model_deconv_flops(model, (2, 3, 16, 16), include_linear=True)
    assert list(with_linear["kind"]) == ["conv", "conv", "conv", "linear"]
    linear = with_linear.iloc[-1]
    assert linear["conv"] == 2 * 2 * 16 * 5 and linear["newton_schulz"] == 2 * 12 * 8**3
    with pytest.raises(ValueError, match="no FastDeconv"):
        model_deconv_flops(nn.Sequential(nn.Conv2d(3, 3, 3)), (1, 3, 8, 8))
    assert math.isfinite(table["overhead_ratio"].sum())


def test_linear_case_matches_torch_flop_counter():
    """A Delinear layer is deconv_flops' k = 1, H = W = 1 case with every row sampled."""
    layer = Delinear(24, 7, block=8, **MATMUL)
    with FlopCounterMode(display=False) as counter:
        layer(torch.randn(6, 24))
    model = deconv_flops(24, 7, 1, 1, 1, 6, block=8, sampling_stride=1)
    # W' mu is a batched matrix-vector product that the counter skips, as for the conv
    assert counter.get_total_flops() == model["conv"] + model["covariance"] + model["newton_schulz"] + model["fold"]


def test_bf16_whitening_errors_are_far_smaller_with_float32_statistics():
    """ndlib keeps its statistics in float32 under autocast; the public algorithm's run in bf16."""
    errors = bf16_whitening_errors(batch_size=4, channels=16, size=12)
    assert set(errors) == {"public", "ndlib"}
    assert 0 < errors["ndlib"] < errors["public"] / 5 and errors["public"] < 0.1  # bf16 rounding, not garbage
    with pytest.raises(ValueError, match="batch_size"):
        bf16_whitening_errors(batch_size=0)
