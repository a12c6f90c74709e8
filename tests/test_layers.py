"""Tests of the deconvolution layers against independent references.

The references here are written without the layers' own reshaping helpers: feature blocks are
chosen with explicit index lists, the inverse square root comes from ``torch.linalg.eigh``, and
the whitened convolution is computed on the full patch matrix (``F.unfold``) and multiplied by
the *original* weight.
"""
from __future__ import annotations

import io
import math

import pytest
import torch
import torch.nn.functional as F

from ndlib.layers import (
    ChannelDeconv,
    Delinear,
    FastDeconv,
    effective_block,
    finite_checks,
    isqrt_newton_schulz,
)


# --------------------------------------------------------------------------------------
# Independent references
# --------------------------------------------------------------------------------------
def eigh_isqrt(A: torch.Tensor) -> torch.Tensor:
    """A^(-1/2) of an SPD matrix from its eigendecomposition (float64)."""
    evals, evecs = torch.linalg.eigh(A.double())
    return (evecs * evals.rsqrt()) @ evecs.T


def spd_with_spectrum(eigenvalues: torch.Tensor, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    n = eigenvalues.numel()
    Q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    return (Q * eigenvalues.double()) @ Q.T


def block_indices(layer: FastDeconv) -> list[torch.Tensor]:
    """Feature columns of each whitening block, written out explicitly.

    Features are ordered (channel, ky, kx) as F.unfold and conv weights order them.
    """
    total = layer.in_channels * layer.kernel_size[0] * layer.kernel_size[1]
    nf = layer.num_features
    if layer.groups > 1:  # one block per conv group: contiguous channels
        return [torch.arange(g * nf, (g + 1) * nf) for g in range(layer.groups)]
    G = total // nf
    if layer.grouping == "interleaved":
        return [torch.arange(g, total, G) for g in range(G)]
    return [torch.arange(g * nf, (g + 1) * nf) for g in range(G)]


def sampled_patch_rows(layer: FastDeconv, x: torch.Tensor) -> torch.Tensor:
    """The sampled patches, one row per patch: (rows, C*k*k)."""
    s = layer.sampling_stride * layer.stride[0]
    if layer.kernel_size == (1, 1):
        return x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])[:: s * s]
    cols = F.unfold(x, layer.kernel_size, dilation=layer.dilation, padding=layer.padding, stride=s)
    return cols.permute(0, 2, 1).reshape(-1, cols.shape[1])


def reference_statistics(layer: FastDeconv, x: torch.Tensor, n_iter: int | None = None):
    """Per-block (mean, D) with D from Newton-Schulz on the explicit covariance.

    groups == 1: all blocks are stacked into one matrix and share one (mean, D).
    """
    n_iter = layer.n_iter if n_iter is None else n_iter
    X = sampled_patch_rows(layer, x)
    blocks = block_indices(layer)
    stacks = [X[:, idx] for idx in blocks]
    if layer.groups == 1:
        stacks = [torch.cat(stacks, dim=0)]
    stats = []
    for S in stacks:
        mu = S.mean(0)
        Sc = S - mu
        cov = Sc.T @ Sc / S.shape[0] + layer.eps * torch.eye(S.shape[1], dtype=S.dtype)
        stats.append((mu, isqrt_newton_schulz(cov, n_iter)))
    if layer.groups == 1:
        stats = stats * len(blocks)
    return blocks, stats


def explicit_whitened_conv(layer: FastDeconv, x: torch.Tensor, blocks, stats) -> torch.Tensor:
    """unfold -> subtract mean -> multiply by D -> plain conv with the ORIGINAL weight."""
    N = x.shape[0]
    cols = F.unfold(x, layer.kernel_size, dilation=layer.dilation, padding=layer.padding, stride=layer.stride)
    P = cols.permute(0, 2, 1)  # (N, L, C*k*k)
    white = torch.empty_like(P)
    for idx, (mu, D) in zip(blocks, stats):
        white[..., idx] = (P[..., idx] - mu) @ D.T  # column form: D (p - mu)
    O = layer.out_channels
    W = layer.weight.reshape(O, -1)
    if layer.groups == 1:
        out = white @ W.T
    else:
        Og = O // layer.groups
        parts = [white[..., idx] @ W[g * Og:(g + 1) * Og].T for g, idx in enumerate(blocks)]
        out = torch.cat(parts, dim=-1)
    if layer.bias is not None:
        out = out + layer.bias
    H_out = (x.shape[2] + 2 * layer.padding[0] - layer.dilation[0] * (layer.kernel_size[0] - 1) - 1) // layer.stride[0] + 1
    W_out = (x.shape[3] + 2 * layer.padding[1] - layer.dilation[1] * (layer.kernel_size[1] - 1) - 1) // layer.stride[1] + 1
    return out.permute(0, 2, 1).reshape(N, O, H_out, W_out)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).detach().norm() / b.detach().norm())


# --------------------------------------------------------------------------------------
# 1. Newton-Schulz against eigh
# --------------------------------------------------------------------------------------
def test_newton_schulz_matches_eigh_and_converges():
    A = spd_with_spectrum(torch.logspace(0, -2, 12))  # condition number 100
    reference = eigh_isqrt(A)
    errors = [rel_err(isqrt_newton_schulz(A, n), reference) for n in (1, 2, 4, 8, 16, 24)]
    assert all(later < earlier for earlier, later in zip(errors, errors[1:])), errors
    assert errors[0] > 0.5  # one iteration is far off: the test can tell
    assert errors[-1] < 1e-10


@pytest.mark.parametrize("condition", [1e1, 1e3])
def test_newton_schulz_is_scale_invariant(condition):
    base = spd_with_spectrum(torch.logspace(0, -math.log10(condition), 9), seed=3)
    for scale in (1e-4, 1.0, 1e4):
        A = base * scale
        assert rel_err(isqrt_newton_schulz(A, 40), eigh_isqrt(A)) < 1e-8


def test_newton_schulz_batched_equals_per_matrix():
    As = torch.stack([spd_with_spectrum(torch.logspace(0, -1, 6), seed=s) for s in range(4)])
    batched = isqrt_newton_schulz(As, 7)
    for A, Z in zip(As, batched):
        torch.testing.assert_close(Z, isqrt_newton_schulz(A, 7), rtol=1e-12, atol=1e-12)


def test_newton_schulz_skipped_products_are_exact():
    """The shortcut loop gives exactly what the textbook loop with all products gives."""
    A = spd_with_spectrum(torch.logspace(0, -2, 10), seed=5).float()
    n = A.shape[0]
    norm = A.norm()
    Y, Z, eye = A / norm, torch.eye(n), torch.eye(n)
    for _ in range(5):
        T = 0.5 * (3.0 * eye - Z @ Y)
        Y = Y @ T
        Z = T @ Z
    textbook = Z / norm.sqrt()
    torch.testing.assert_close(isqrt_newton_schulz(A, 5), textbook, rtol=1e-6, atol=0)


def test_newton_schulz_rejects_bad_input():
    with pytest.raises(ValueError, match="square"):
        isqrt_newton_schulz(torch.ones(3, 4), 5)
    with pytest.raises(ValueError, match="n_iter"):
        isqrt_newton_schulz(torch.eye(3), 0)
    with pytest.raises(TypeError, match="n_iter"):
        isqrt_newton_schulz(torch.eye(3), 2.5)


# --------------------------------------------------------------------------------------
# Block-size rules
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "channels, block, groups, expected",
    [(3, 64, 1, 3), (64, 64, 1, 64), (128, 64, 1, 64), (96, 64, 1, 32), (48, 64, 1, 48),
     (100, 64, 1, 4), (32, 64, 32, 1), (128, 64, 4, 32), (256, 16, 1, 16)],
)
def test_effective_block_rules(channels, block, groups, expected):
    assert effective_block(channels, block, groups) == expected


# --------------------------------------------------------------------------------------
# 2. Folding into the weight is exact
# --------------------------------------------------------------------------------------
FOLD_CASES = {
    "3x3-s1-p1-multiblock": dict(C=16, O=8, k=3, stride=1, padding=1, groups=1, block=4),
    "3x3-s2-p1-oneblock": dict(C=6, O=4, k=3, stride=2, padding=1, groups=1, block=64),
    "3x3-p0-contiguous": dict(C=8, O=5, k=3, stride=1, padding=0, groups=1, block=4, grouping="contiguous"),
    "1x1-multiblock": dict(C=12, O=6, k=1, stride=1, padding=0, groups=1, block=4),
    "1x1-s2": dict(C=8, O=16, k=1, stride=2, padding=0, groups=1, block=64),
    "3x3-gcd-block": dict(C=10, O=5, k=3, stride=1, padding=1, groups=1, block=4),
    "grouped": dict(C=8, O=4, k=3, stride=1, padding=0, groups=2, block=64),
    "depthwise-s2": dict(C=8, O=8, k=3, stride=2, padding=1, groups=8, block=64),
    "5x5-dilated": dict(C=4, O=3, k=5, stride=1, padding=4, groups=1, block=2, dilation=2),
    "no-bias": dict(C=6, O=4, k=3, stride=1, padding=1, groups=1, block=3, bias=False),
}


def make_layer(C, O, k, stride, padding, groups, block, dtype, **extra) -> FastDeconv:
    torch.manual_seed(0)
    layer = FastDeconv(C, O, k, stride=stride, padding=padding, groups=groups, block=block, **extra)
    if layer.bias is not None:
        with torch.no_grad():
            layer.bias.normal_()
    return layer.to(dtype)


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.float64, 1e-10)], ids=["f32", "f64"])
@pytest.mark.parametrize("case", list(FOLD_CASES), ids=list(FOLD_CASES))
def test_training_output_equals_explicit_pipeline(case, dtype, tol):
    layer = make_layer(dtype=dtype, **FOLD_CASES[case])
    g = torch.Generator().manual_seed(1)
    # correlated input: a smoothed random field plus a channel mix, so D is far from identity
    x = torch.randn(3, layer.in_channels, 11, 11, generator=g, dtype=torch.float64)
    x = F.avg_pool2d(x, 3, stride=1, padding=1) + 0.3 * x.mean(1, keepdim=True)
    x = (2.0 * x + 0.5).to(dtype)
    blocks, stats = reference_statistics(layer, x)
    expected = explicit_whitened_conv(layer, x, blocks, stats)
    out = layer.train()(x)
    assert out.shape == expected.shape
    assert rel_err(out, expected) < tol


def test_fold_changes_the_output():
    """Guard: whitening is not a no-op on correlated input (so the equality test can fail)."""
    layer = make_layer(dtype=torch.float64, **FOLD_CASES["3x3-s1-p1-multiblock"])
    x = F.avg_pool2d(torch.randn(3, 16, 11, 11, dtype=torch.float64), 3, stride=1, padding=1)
    plain = F.conv2d(x, layer.weight, layer.bias, layer.stride, layer.padding)
    assert rel_err(layer.train()(x), plain) > 0.2


# --------------------------------------------------------------------------------------
# 3. Whitening works on real photographs
# --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def photo_batch() -> torch.Tensor:
    skimage_data = pytest.importorskip("skimage.data")
    images = [skimage_data.astronaut(), skimage_data.chelsea(), skimage_data.coffee()]
    crops = [torch.from_numpy(im[:256, :256].copy()).permute(2, 0, 1).double() / 255.0 for im in images]
    x = torch.stack(crops)
    return (x - x.mean(dim=(0, 2, 3), keepdim=True)) / x.std(dim=(0, 2, 3), keepdim=True)


def whitened_covariance(layer: FastDeconv, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    X = sampled_patch_rows(layer, x)
    Xc = X - X.mean(0)
    cov = Xc.T @ Xc / X.shape[0]
    mean, D = layer.batch_statistics(x)
    W = Xc @ D.T
    return cov, W.T @ W / W.shape[0]


def test_whitening_real_photographs(photo_batch):
    eye = torch.eye(27, dtype=torch.float64)
    exact = FastDeconv(3, 4, 3, padding=1, n_iter=40).double()
    cov, white = whitened_covariance(exact, photo_batch)
    assert torch.linalg.cond(cov) > 1e3  # natural images: strongly correlated patches
    assert rel_err(white, eye) < 0.02

    paper = FastDeconv(3, 4, 3, padding=1, n_iter=5).double()
    _, white5 = whitened_covariance(paper, photo_batch)
    cov_unit = cov / cov.diagonal().mean()  # same overall scale as the identity
    assert rel_err(white5, eye) < 0.5 * rel_err(cov_unit, eye)
    assert torch.linalg.cond(white5) < torch.linalg.cond(cov) / 10


# --------------------------------------------------------------------------------------
# 4. Running statistics and evaluation mode
# --------------------------------------------------------------------------------------
def test_running_average_follows_spec():
    layer = make_layer(dtype=torch.float64, **FOLD_CASES["3x3-s1-p1-multiblock"])
    g = torch.Generator().manual_seed(2)
    batches = [torch.randn(2, 16, 9, 9, generator=g, dtype=torch.float64) for _ in range(2)]
    mean_ref = torch.zeros(layer.num_features, dtype=torch.float64)
    deconv_ref = torch.eye(layer.num_features, dtype=torch.float64)
    layer.train()
    for x in batches:
        _, stats = reference_statistics(layer, x)
        mu, D = stats[0]
        mean_ref = 0.9 * mean_ref + 0.1 * mu
        deconv_ref = 0.9 * deconv_ref + 0.1 * D  # the matrix D is averaged, not the covariance
        layer(x)
    torch.testing.assert_close(layer.running_mean, mean_ref, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(layer.running_deconv, deconv_ref, rtol=1e-10, atol=1e-12)
    assert int(layer.num_batches_tracked) == 2


@pytest.mark.parametrize("case", ["3x3-s1-p1-multiblock", "grouped", "1x1-multiblock"])
def test_eval_uses_only_running_buffers(case):
    layer = make_layer(dtype=torch.float64, **FOLD_CASES[case])
    g = torch.Generator().manual_seed(3)
    for _ in range(3):
        layer.train()(torch.randn(4, layer.in_channels, 9, 9, generator=g, dtype=torch.float64))
    buffers = {k: v.clone() for k, v in layer.named_buffers()}
    layer.eval()
    x = torch.randn(5, layer.in_channels, 9, 9, generator=g, dtype=torch.float64)
    together = layer(x)
    alone = torch.cat([layer(x[i:i + 1]) for i in range(5)])
    torch.testing.assert_close(together, alone, rtol=1e-12, atol=1e-12)  # no batch dependence
    for k, v in layer.named_buffers():
        assert torch.equal(v, buffers[k]), f"eval mode changed buffer {k}"
    blocks = block_indices(layer)
    if layer.groups == 1:
        stats = [(layer.running_mean, layer.running_deconv)] * len(blocks)
    else:
        nf = layer.num_features
        stats = [(layer.running_mean[i * nf:(i + 1) * nf], layer.running_deconv[i]) for i in range(layer.groups)]
    torch.testing.assert_close(together, explicit_whitened_conv(layer, x, blocks, stats), rtol=1e-10, atol=1e-10)


def test_freeze_follows_public_code_counter():
    """freeze=True: statistics for counts 0..freeze_iter, frozen after, re-estimated every 10*freeze_iter."""
    layer = FastDeconv(3, 4, 3, padding=1, freeze=True, freeze_iter=2).double().train()
    g = torch.Generator().manual_seed(4)
    updated = []
    for _ in range(23):
        before = layer.running_deconv.clone()
        layer(torch.randn(2, 3, 8, 8, generator=g, dtype=torch.float64))
        updated.append(not torch.equal(before, layer.running_deconv))
    expected = [count % 20 <= 2 for count in range(23)]
    assert updated == expected
    # while frozen, training mode computes exactly what evaluation mode computes
    layer.num_batches_tracked.fill_(5)
    assert layer.is_frozen()
    x = torch.randn(2, 3, 8, 8, generator=g, dtype=torch.float64)
    train_out = layer.train()(x)
    torch.testing.assert_close(train_out, layer.eval()(x), rtol=0, atol=0)


def test_no_grad_training_step_updates_buffers():
    layer = FastDeconv(4, 4, 3, padding=1).train()
    with torch.no_grad():
        out = layer(torch.randn(2, 4, 8, 8))
    assert not out.requires_grad
    assert int(layer.num_batches_tracked) == 1
    assert not torch.equal(layer.running_deconv, torch.eye(layer.num_features))


# --------------------------------------------------------------------------------------
# 5. Gradients and state
# --------------------------------------------------------------------------------------
def _gradcheck_module(module, x):
    names = [n for n, _ in module.named_parameters()]

    def fn(inp, *params):
        return torch.func.functional_call(module, dict(zip(names, params)), (inp,))

    params = [p.detach().clone().requires_grad_(True) for p in module.parameters()]
    assert torch.autograd.gradcheck(fn, (x.requires_grad_(True), *params), eps=1e-6, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize(
    "build, shape",
    [
        (lambda: FastDeconv(4, 3, 3, padding=1, block=2, n_iter=3), (2, 4, 5, 5)),
        (lambda: FastDeconv(4, 4, 3, padding=1, groups=2, n_iter=3, sampling_stride=1), (2, 4, 4, 4)),
        (lambda: FastDeconv(4, 2, 1, block=2, n_iter=3, sampling_stride=1), (2, 4, 4, 4)),
        (lambda: Delinear(6, 3, block=3, n_iter=3), (8, 6)),
        (lambda: ChannelDeconv(3, n_iter=3), (2, 5, 4, 4)),
    ],
    ids=["fastdeconv", "grouped", "1x1", "delinear", "channeldeconv"],
)
def test_gradcheck_float64(build, shape):
    torch.manual_seed(0)
    module = build().double().train()
    x = torch.randn(*shape, dtype=torch.float64)
    _gradcheck_module(module, x)


@pytest.mark.parametrize(
    "build, shape",
    [
        (lambda: FastDeconv(6, 4, 3, padding=1, block=3, freeze=True, freeze_iter=3), (3, 6, 7, 7)),
        (lambda: FastDeconv(6, 6, 3, padding=1, groups=3), (3, 6, 7, 7)),
        (lambda: Delinear(8, 3, block=4), (16, 8)),
        (lambda: ChannelDeconv(2), (4, 5, 3, 3)),
    ],
    ids=["fastdeconv", "grouped", "delinear", "channeldeconv"],
)
def test_state_dict_round_trip(build, shape):
    torch.manual_seed(0)
    a = build().train()
    for _ in range(3):
        a(torch.randn(*shape))
    buffer = io.BytesIO()
    torch.save(a.state_dict(), buffer)
    buffer.seek(0)
    b = build()
    b.load_state_dict(torch.load(buffer, weights_only=True))
    assert set(a.state_dict()) == set(b.state_dict())
    assert "num_batches_tracked" in b.state_dict()
    x = torch.randn(*shape)
    torch.testing.assert_close(a.eval()(x), b.eval()(x), rtol=0, atol=0)
    torch.testing.assert_close(a.train()(x), b.train()(x), rtol=0, atol=0)


def test_to_dtype_moves_buffers_and_is_deterministic():
    layer = FastDeconv(4, 4, 3, padding=1).to(torch.float64)
    assert layer.running_deconv.dtype == torch.float64
    assert layer.num_batches_tracked.dtype == torch.long
    x = torch.randn(2, 4, 8, 8, dtype=torch.float64)
    twin = FastDeconv(4, 4, 3, padding=1).to(torch.float64)
    twin.load_state_dict(layer.state_dict())
    torch.testing.assert_close(layer.train()(x), twin.train()(x), rtol=0, atol=0)


def test_delinear_matches_explicit_whitening():
    torch.manual_seed(0)
    layer = Delinear(12, 5, block=4).double().train()
    x = torch.randn(32, 12, dtype=torch.float64) @ torch.randn(12, 12, dtype=torch.float64)
    stacked = torch.cat([x[:, i * 4:(i + 1) * 4] for i in range(3)])  # contiguous blocks
    mu = stacked.mean(0)
    cov = (stacked - mu).T @ (stacked - mu) / stacked.shape[0] + 1e-5 * torch.eye(4, dtype=torch.float64)
    D = isqrt_newton_schulz(cov, 5)
    white = torch.cat([(x[:, i * 4:(i + 1) * 4] - mu) @ D.T for i in range(3)], dim=1)
    expected = white @ layer.weight.T + layer.bias
    assert rel_err(layer(x), expected) < 1e-10


def test_channel_deconv_whitens_channels():
    torch.manual_seed(0)
    mix = torch.randn(4, 4, dtype=torch.float64)
    x = torch.einsum("ij,njhw->nihw", mix, torch.randn(64, 4, 6, 6, dtype=torch.float64))
    layer = ChannelDeconv(4, n_iter=30, eps=1e-8, sampling_stride=1).double().train()
    y = layer(x)
    flat = y.permute(1, 0, 2, 3).reshape(4, -1)
    cov = torch.cov(flat, correction=0)
    assert rel_err(cov, torch.eye(4, dtype=torch.float64)) < 1e-3


# --------------------------------------------------------------------------------------
# 6. Bad input fails loudly
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(block=0), ValueError, "block"),
        (dict(block=-2), ValueError, "block"),
        (dict(n_iter=0), ValueError, "n_iter"),
        (dict(sampling_stride=0), ValueError, "sampling_stride"),
        (dict(sampling_stride=1.5), TypeError, "sampling_stride"),
        (dict(eps=0.0), ValueError, "eps"),
        (dict(momentum=1.5), ValueError, "momentum"),
        (dict(grouping="random"), ValueError, "grouping"),
        (dict(padding_mode="reflect"), ValueError, "padding_mode"),
        (dict(padding="same"), ValueError, "padding"),
    ],
)
def test_fastdeconv_rejects_bad_options(kwargs, error, match):
    with pytest.raises(error, match=match):
        FastDeconv(4, 4, 3, **kwargs)


def test_fastdeconv_rejects_bad_tensors():
    layer = FastDeconv(4, 4, 3, padding=1)
    with pytest.raises(ValueError, match="4-D"):
        layer(torch.randn(4, 8, 8))
    with pytest.raises(ValueError, match="input channels"):
        layer(torch.randn(2, 3, 8, 8))
    with pytest.raises(TypeError, match="torch.Tensor"):
        layer([[1.0]])
    bad = torch.randn(2, 4, 8, 8)
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="not finite"):
        layer.train()(bad)
    with finite_checks(False):
        assert torch.isnan(layer.train()(bad)).any()


def test_delinear_and_channel_deconv_reject_bad_input():
    layer = Delinear(8, 2, block=4)
    with pytest.raises(ValueError, match="2-D"):
        layer(torch.randn(2, 8, 1))
    with pytest.raises(ValueError, match="input features"):
        layer(torch.randn(2, 6))
    with pytest.raises(ValueError, match="block"):
        Delinear(8, 2, block=0)
    inf = torch.randn(4, 8)
    inf[1, 1] = float("inf")
    with pytest.raises(ValueError, match="not finite"):
        layer.train()(inf)
    with pytest.raises(ValueError, match="shape"):
        ChannelDeconv(2)(torch.randn(2, 3, 4))
    with pytest.raises(ValueError, match="block"):
        ChannelDeconv(8)(torch.randn(2, 3, 4, 4))


def test_extra_repr_names_the_options():
    text = repr(FastDeconv(128, 64, 3, padding=1, freeze=True, n_iter=15))
    for needle in ("block=64", "n_iter=15", "sampling_stride=3", "freeze=True", "grouping=interleaved"):
        assert needle in text
    assert "block=512" in repr(Delinear(512, 10))
