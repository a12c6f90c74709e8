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

from ndlib.isqrt import SPECTRAL_MIN_SIZE
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
    out_ch = layer.out_channels
    W = layer.weight.reshape(out_ch, -1)
    if layer.groups == 1:
        out = white @ W.T
    else:
        Og = out_ch // layer.groups
        parts = [white[..., idx] @ W[g * Og:(g + 1) * Og].T for g, idx in enumerate(blocks)]
        out = torch.cat(parts, dim=-1)
    if layer.bias is not None:
        out = out + layer.bias
    pad, dil, ker, stride = layer.padding, layer.dilation, layer.kernel_size, layer.stride
    H_out = (x.shape[2] + 2 * pad[0] - dil[0] * (ker[0] - 1) - 1) // stride[0] + 1
    W_out = (x.shape[3] + 2 * pad[1] - dil[1] * (ker[1] - 1) - 1) // stride[1] + 1
    return out.permute(0, 2, 1).reshape(N, out_ch, H_out, W_out)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).detach().norm() / b.detach().norm())


# --------------------------------------------------------------------------------------
# 1. Newton-Schulz against eigh
# --------------------------------------------------------------------------------------
def test_newton_schulz_matches_eigh_and_converges():
    A = spd_with_spectrum(torch.logspace(0, -2, 12))  # condition number 100
    reference = eigh_isqrt(A)
    errors = [rel_err(isqrt_newton_schulz(A, n), reference) for n in (1, 2, 4, 8, 16, 24)]
    # each step shrinks the error until it reaches float64 round-off, where it can tick up by
    # an ulp depending on the matmul's reduction order (thread count): a CI run saw 1.94e-15 then 2.03e-15
    converged = 1e-13
    assert all(later < earlier or later < converged for earlier, later in zip(errors, errors[1:])), errors
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


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n_iter", [1, 2, 5])
def test_newton_schulz_skipped_products_are_exact(dtype, n_iter):
    """The shortcut loop gives bit for bit what the textbook loop with all products gives (it skips
    only products with the identity and the unused last Y): guards against a changed polynomial."""
    single = spd_with_spectrum(torch.logspace(0, -2, 10), seed=5)
    A = torch.stack([single, spd_with_spectrum(torch.logspace(0, -1, 10), seed=6)]).to(dtype)
    norm = torch.linalg.matrix_norm(A, keepdim=True)
    eye = torch.eye(A.shape[-1], dtype=dtype)
    Y, Z = A / norm, eye.expand_as(A)
    for _ in range(n_iter):
        T = 0.5 * (3.0 * eye - Z @ Y)
        Y = Y @ T
        Z = T @ Z
    textbook = Z / torch.sqrt(norm)
    assert torch.equal(isqrt_newton_schulz(A, n_iter), textbook)
    assert torch.equal(isqrt_newton_schulz(A[0], n_iter), textbook[0])


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
    "3x3-s1-p1-multiblock": dict(C=16, out_ch=8, k=3, stride=1, padding=1, groups=1, block=4),
    "3x3-s2-p1-oneblock": dict(C=6, out_ch=4, k=3, stride=2, padding=1, groups=1, block=64),
    "3x3-p0-contiguous": dict(C=8, out_ch=5, k=3, stride=1, padding=0, groups=1, block=4, grouping="contiguous"),
    "1x1-multiblock": dict(C=12, out_ch=6, k=1, stride=1, padding=0, groups=1, block=4),
    "1x1-s2": dict(C=8, out_ch=16, k=1, stride=2, padding=0, groups=1, block=64),
    "3x3-gcd-block": dict(C=10, out_ch=5, k=3, stride=1, padding=1, groups=1, block=4),
    "grouped": dict(C=8, out_ch=4, k=3, stride=1, padding=0, groups=2, block=64),
    "depthwise-s2": dict(C=8, out_ch=8, k=3, stride=2, padding=1, groups=8, block=64),
    "5x5-dilated": dict(C=4, out_ch=3, k=5, stride=1, padding=4, groups=1, block=2, dilation=2),
    "no-bias": dict(C=6, out_ch=4, k=3, stride=1, padding=1, groups=1, block=3, bias=False),
}


def make_layer(C, out_ch, k, stride, padding, groups, block, dtype, **extra) -> FastDeconv:
    torch.manual_seed(0)
    layer = FastDeconv(C, out_ch, k, stride=stride, padding=padding, groups=groups, block=block, **extra)
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


@pytest.mark.parametrize("case", list(FOLD_CASES), ids=list(FOLD_CASES))
def test_float32_training_output_keeps_eps_on_small_variance_input(case):
    """float32 guard against a covariance without eps: at unit variance eps = 1e-5 moves the output
    by about 1e-5 (inside float32 tolerances), at variance ~1e-4 by percents."""
    layer = make_layer(dtype=torch.float32, **FOLD_CASES[case])
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, layer.in_channels, 11, 11, generator=g, dtype=torch.float64)
    x = F.avg_pool2d(x, 3, stride=1, padding=1) + 0.3 * x.mean(1, keepdim=True)
    x = (0.01 * (2.0 * x + 0.5)).float()
    blocks, stats = reference_statistics(layer, x)  # Cov + eps I
    assert rel_err(layer.train()(x), explicit_whitened_conv(layer, x, blocks, stats)) < 1e-5  # without eps: > 5e-2


def test_float32_delinear_keeps_eps_on_small_variance_input():
    """float32 Delinear: its covariance must include eps (small-variance input, where eps matters)."""
    torch.manual_seed(0)
    layer = Delinear(12, 5, block=4).train()
    g = torch.Generator().manual_seed(3)
    x = 0.01 * torch.randn(32, 12, generator=g) @ torch.randn(12, 12, generator=g) / 12 ** 0.5
    stacked = torch.cat([x[:, i * 4:(i + 1) * 4] for i in range(3)]).double()
    mu = stacked.mean(0)
    cov = (stacked - mu).T @ (stacked - mu) / stacked.shape[0] + 1e-5 * torch.eye(4, dtype=torch.float64)
    D = isqrt_newton_schulz(cov, 5)
    white = torch.cat([(x[:, i * 4:(i + 1) * 4].double() - mu) @ D.T for i in range(3)], dim=1)
    expected = white @ layer.weight.double().T + layer.bias.double()
    assert rel_err(layer(x).double(), expected) < 1e-5


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


@pytest.mark.parametrize("build, shape", [
    (lambda **kw: FastDeconv(4, 3, 3, padding=1, block=4, **kw), (4, 4, 9, 9)),  # 36 features
    (lambda **kw: Delinear(12, 5, block=4, **kw), (32, 12)),
], ids=["conv", "linear"])
def test_auto_below_the_spectral_size_agrees_with_spectral(build, shape):
    """Below SPECTRAL_MIN_SIZE features "auto" takes the matmul loop, so comparing it with "spectral"
    compares two routes (at 144 features both are spectral and cannot disagree)."""
    torch.manual_seed(0)
    auto = build().double().train()
    spectral = build(isqrt_method="spectral").double().train()
    spectral.load_state_dict(auto.state_dict())
    assert auto.isqrt_method == "auto" and auto.running_deconv.shape[-1] < SPECTRAL_MIN_SIZE
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    x = x + 0.5 * x.roll(1, dims=1)
    torch.testing.assert_close(auto(x), spectral(x), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(auto.running_deconv, spectral.running_deconv, rtol=1e-10, atol=1e-12)


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


@pytest.mark.parametrize("build", [lambda **kw: FastDeconv(8, 4, 3, **kw), lambda **kw: Delinear(8, 4, **kw)])
def test_extra_repr_names_a_schedule_only_where_it_differs_from_the_paper(build):
    assert "refresh" not in repr(build()) and "covariance_grad" not in repr(build())
    text = repr(build(refresh_every=4, refresh_warmup=2, covariance_grad="input"))
    for needle in ("refresh_every=4", "refresh_stats='running'", "refresh_warmup=2", "covariance_grad='input'"):
        assert needle in text


# --------------------------------------------------------------------------------------
# 7. Periodic refresh (refresh_every, opt-in)
# --------------------------------------------------------------------------------------
REFRESH_BUILDS = {
    "conv": (lambda **kw: FastDeconv(4, 3, 3, padding=1, block=2, n_iter=3, **kw), (2, 4, 7, 7)),
    "conv-grouped-s2": (lambda **kw: FastDeconv(4, 4, 3, stride=2, padding=1, groups=2, n_iter=3, **kw), (2, 4, 8, 8)),
    "conv-1x1": (lambda **kw: FastDeconv(6, 4, 1, block=3, n_iter=3, sampling_stride=1, **kw), (2, 6, 5, 5)),
    "conv-freeze": (lambda **kw: FastDeconv(3, 4, 3, padding=1, n_iter=4, freeze=True, freeze_iter=1, **kw),
                    (2, 3, 7, 7)),
    "linear": (lambda **kw: Delinear(6, 3, block=3, n_iter=3, **kw), (8, 6)),
}


def refresh_trace(build, shape, steps: int, seed: int = 7, **options):
    """Train ``steps`` steps with random upstream gradients; per step the output, the gradients
    (input, weight, bias), the buffers, whether the running D changed, and the eval-mode output
    with the running values of just before the step."""
    torch.manual_seed(0)
    layer = build(**options).double().train()
    g = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(steps):
        x = torch.randn(*shape, generator=g, dtype=torch.float64)
        x = (x + 0.5 * x.roll(1, dims=1)).requires_grad_(True)
        with torch.no_grad():
            eval_out = layer.eval()(x)
        layer.train()
        before = layer.running_deconv.clone()
        out = layer(x)
        up = torch.randn(out.shape, generator=g, dtype=torch.float64)
        layer.zero_grad(set_to_none=True)
        (out * up).sum().backward()
        rows.append({
            "out": out.detach(), "eval_out": eval_out, "x_grad": x.grad, "w_grad": layer.weight.grad,
            "b_grad": layer.bias.grad, "updated": not torch.equal(before, layer.running_deconv),
            "buffers": {k: v.clone() for k, v in layer.named_buffers()},
        })
    return layer, rows


@pytest.mark.parametrize("case", list(REFRESH_BUILDS))
def test_refresh_every_one_is_bit_identical_to_an_all_warmup_refresh_layer(case):
    """The default (refresh_every=1) layer and a k=4 layer whose 5 steps are all warm-up refresh
    steps take different code paths but must agree bit for bit: guards against the k > 1
    machinery (step cache, refresh test) perturbing a refresh step, or k = 1 skipping one."""
    build, shape = REFRESH_BUILDS[case]
    assert build().refresh_every == 1
    _, default = refresh_trace(build, shape, steps=5)
    _, explicit = refresh_trace(build, shape, steps=5, refresh_every=4, refresh_warmup=5)
    for a, b in zip(default, explicit):
        for key in ("out", "eval_out", "x_grad", "w_grad", "b_grad"):
            assert torch.equal(a[key], b[key]), key
        assert a["buffers"].keys() == b["buffers"].keys()
        assert all(torch.equal(a["buffers"][k], b["buffers"][k]) for k in a["buffers"])
    assert all(row["updated"] for row in default if case != "conv-freeze")


# Computed with the layers of commit abecf55 (before refresh_every existed), same script as
# refresh_trace: per step out.sum, out.norm, |x.grad|, |W.grad|, |b.grad|, sum(running_mean),
# |running_deconv|.  Pins the default layer's numbers, not only its agreement with itself.
REFRESH_SAVED_EXPECTATION = {
    "conv": [
        [4.2019040641892715, 13.45002516510375, 11.47913250541065, 137.91391427376936, 11.425257194688374,
         0.021893499262771444, 4.321951173897911],
        [-32.02757729429629, 11.804297392022566, 8.467456784258983, 94.36892730940843, 3.667735906270293,
         0.013463934008208799, 4.358851017997925],
        [10.485927055892727, 11.847329777038022, 12.402605531001972, 122.410607209814, 25.839362364444412,
         0.022469827467045518, 4.464895631038184],
        [-37.32763189393722, 13.46534128011146, 12.61157469295005, 129.0576450560026, 17.676707659282783,
         0.1436761299379128, 4.553319051391485],
    ],
    "conv-freeze": [
        [-51.167909857722755, 18.108280675856687, 15.591559194542246, 121.04930853845757, 20.47063605904903,
         0.15524894695520153, 5.4046175150540146],
        [-26.771584106926504, 18.061229258594626, 15.81320567638857, 118.74127921369917, 12.149320584925297,
         0.18317893041270936, 5.6407220130951705],
        [-10.058902489206831, 11.730661488292164, 10.615096360714515, 95.99124171028382, 33.55358515342976,
         0.18317893041270936, 5.6407220130951705],
        [-6.742969594997867, 13.209149592938932, 10.64975216215561, 116.89652362613928, 16.786121826433632,
         0.18317893041270936, 5.6407220130951705],
    ],
    "linear": [
        [-2.4676519409686453, 2.9105678393632264, 2.159472077294877, 14.026501195818073, 0.7978001693523408,
         0.09384603903440095, 1.7302647637451118],
        [-2.590377852591591, 3.0823994864734354, 3.4660879309832406, 9.625704175746481, 6.100672515131857,
         0.08056476606734703, 1.77342153271083],
        [-3.480332663780347, 2.612664306937531, 2.2018671386446975, 11.268142894013602, 2.232364756331032,
         0.13804038454515752, 1.783756024325112],
        [-2.5566959083738157, 2.258486509558227, 2.0624456208644766, 11.953153479309906, 2.866167409969433,
         0.24661154992173484, 1.792855991889657],
    ],
}


@pytest.mark.parametrize("case", list(REFRESH_SAVED_EXPECTATION))
def test_refresh_every_one_matches_the_saved_expectation(case):
    build, shape = REFRESH_BUILDS[case]
    _, rows = refresh_trace(build, shape, steps=4, refresh_every=1)
    got = [[float(r["out"].sum()), float(r["out"].norm()), float(r["x_grad"].norm()), float(r["w_grad"].norm()),
            float(r["b_grad"].norm()), float(r["buffers"]["running_mean"].sum()),
            float(r["buffers"]["running_deconv"].norm())] for r in rows]
    # float64 reductions may differ in the last bits between BLAS builds / thread counts
    for step, (row, expected) in enumerate(zip(got, REFRESH_SAVED_EXPECTATION[case], strict=True)):
        assert row == pytest.approx(expected, rel=1e-11, abs=1e-13), step


@pytest.mark.parametrize("case", ["conv", "conv-grouped-s2", "conv-1x1", "linear"])
def test_refresh_every_k_estimates_on_multiples_of_k_only(case):
    build, shape = REFRESH_BUILDS[case]
    k, steps = 3, 10
    layer, rows = refresh_trace(build, shape, steps=steps, refresh_every=k)
    assert [row["updated"] for row in rows] == [t % k == 0 for t in range(steps)]
    assert int(layer.num_batches_tracked) == steps
    for t, row in enumerate(rows):
        if t % k:
            # the running values as constants: exactly what evaluation mode computes
            torch.testing.assert_close(row["out"], row["eval_out"], rtol=0, atol=0)
            assert torch.equal(row["buffers"]["running_mean"], rows[t - 1]["buffers"]["running_mean"])
        else:
            assert rel_err(row["out"], row["eval_out"]) > 1e-3  # batch statistics (the test can tell)
        # the weight learns on every step; the input gets a gradient on every step
        for key in ("w_grad", "b_grad", "x_grad"):
            assert torch.isfinite(row[key]).all() and row[key].abs().sum() > 0, (t, key)


def test_refresh_steps_use_the_batch_statistics_with_their_gradient():
    """A refresh step is the paper's step (same output and gradients as a k=1 layer in the same state)."""
    build, shape = REFRESH_BUILDS["conv"]
    _, every = refresh_trace(build, shape, steps=1)
    _, refreshed = refresh_trace(build, shape, steps=1, refresh_every=4)
    for key in ("out", "x_grad", "w_grad", "b_grad"):
        assert torch.equal(every[0][key], refreshed[0][key]), key
    # a later refresh step, from a loaded state, against the explicit pipeline
    layer = build(refresh_every=4).double().train()
    layer.num_batches_tracked.fill_(8)
    x = torch.randn(*shape, dtype=torch.float64)
    blocks, stats = reference_statistics(layer, x)
    assert rel_err(layer(x), explicit_whitened_conv(layer, x, blocks, stats)) < 1e-10


@pytest.mark.parametrize("case", ["conv", "conv-grouped-s2", "conv-1x1", "linear"])
def test_refresh_stats_last_whitens_with_the_last_refresh_estimate(case):
    """Between refreshes: the estimate of step k*(t//k) (a constant), not the running values;
    the running values still move on refresh steps only, exactly as with "running"."""
    build, shape = REFRESH_BUILDS[case]
    k, steps = 3, 8
    layer, rows = refresh_trace(build, shape, steps=steps, refresh_every=k, refresh_stats="last")
    _, running = refresh_trace(build, shape, steps=steps, refresh_every=k)
    assert [row["updated"] for row in rows] == [t % k == 0 for t in range(steps)]
    for t, (row, other) in enumerate(zip(rows, running)):
        for name in ("running_mean", "running_deconv", "num_batches_tracked"):
            assert torch.equal(row["buffers"][name], other["buffers"][name]), (t, name)
        refresh = rows[k * (t // k)]["buffers"]
        # the last-estimate buffers hold the batch estimate of the last refresh step:
        # running_t = lerp(running_{t-1}, estimate, m)  =>  estimate recovered from the buffers
        previous = rows[k * (t // k) - 1]["buffers"] if t >= k else {
            "running_mean": torch.zeros_like(refresh["running_mean"]),
            "running_deconv": build().double().running_deconv}
        m = layer.momentum
        for name, last in (("running_mean", "last_mean"), ("running_deconv", "last_deconv")):
            recovered = (refresh[name] - (1 - m) * previous[name]) / m
            torch.testing.assert_close(row["buffers"][last], recovered, rtol=1e-9, atol=1e-12)
        if t % k:
            assert torch.equal(row["buffers"]["last_deconv"], rows[t - 1]["buffers"]["last_deconv"])
            # not the running values (what evaluation mode, and "running", would use)
            assert rel_err(row["out"], row["eval_out"]) > 1e-3
        else:  # a refresh step is the same step in both modes
            for key in ("out", "x_grad", "w_grad", "b_grad"):
                assert torch.equal(row[key], other[key]), (t, key)


def test_refresh_stats_last_output_is_the_fold_of_the_last_estimate():
    layer = FastDeconv(4, 3, 3, padding=1, block=2, n_iter=3, refresh_every=4, refresh_stats="last").double().train()
    g = torch.Generator().manual_seed(3)
    first = torch.randn(2, 4, 7, 7, generator=g, dtype=torch.float64)
    layer(first)  # step 0: refresh
    mean, deconv = layer.batch_statistics(first)
    later = torch.randn(2, 4, 7, 7, generator=g, dtype=torch.float64)
    w, b = layer.folded_weight_and_bias(mean, deconv)
    expected = torch.nn.functional.conv2d(later, w, b, padding=1)
    assert rel_err(layer(later), expected) < 1e-12  # step 1 whitens `later` with step 0's estimate
    assert not layer.last_deconv.requires_grad and not layer.last_mean.requires_grad


def test_refresh_stats_last_buffers_exist_for_k_above_one_only_and_resume_exactly():
    assert "last_deconv" not in FastDeconv(4, 4, 3, refresh_stats="last").state_dict()  # k=1: the paper's layer
    assert "last_deconv" not in Delinear(6, 3, block=3, refresh_every=4).state_dict()  # "running": no new key
    build, shape = REFRESH_BUILDS["linear"]
    a = build(refresh_every=4, refresh_stats="last").double().train()
    g = torch.Generator().manual_seed(4)
    for _ in range(5):
        a(torch.randn(*shape, generator=g, dtype=torch.float64))
    b = build(refresh_every=4, refresh_stats="last").double().train()
    b.load_state_dict(a.state_dict(), strict=True)
    for _ in range(4):  # steps 5, 6, 7 between refreshes, 8 refreshes
        x = torch.randn(*shape, generator=g, dtype=torch.float64)
        torch.testing.assert_close(a(x), b(x), rtol=0, atol=0)
    with pytest.raises(ValueError, match="refresh_stats must be one of"):
        FastDeconv(4, 4, 3, refresh_every=2, refresh_stats="ema")
    assert "refresh_stats='last'" in repr(Delinear(8, 2, refresh_every=4, refresh_stats="last"))


@pytest.mark.parametrize("layer", ["conv", "linear"])
def test_refresh_warmup_estimates_on_every_warmup_step_then_every_kth(layer):
    build, shape = REFRESH_BUILDS[layer]
    _, rows = refresh_trace(build, shape, steps=14, refresh_every=4, refresh_warmup=6, refresh_stats="last")
    assert [r["updated"] for r in rows] == [t < 6 or t % 4 == 0 for t in range(14)]
    _, plain = refresh_trace(build, shape, steps=6)
    for a, b in zip(rows[:6], plain):  # the warm-up is the paper's layer, step for step
        assert torch.equal(a["out"], b["out"]) and torch.equal(a["w_grad"], b["w_grad"])
    with pytest.raises(ValueError, match="refresh_warmup must be a non-negative int"):
        build(refresh_every=4, refresh_warmup=-1)
    with pytest.raises(TypeError, match="refresh_warmup must be a non-negative int"):
        build(refresh_every=4, refresh_warmup=2.5)
    assert "refresh_warmup=6" in repr(build(refresh_every=4, refresh_warmup=6))


def test_refresh_stats_last_frozen_steps_still_use_the_running_values():
    layer = FastDeconv(3, 4, 3, padding=1, freeze=True, freeze_iter=2, refresh_every=2, refresh_stats="last").double()
    g = torch.Generator().manual_seed(5)
    for _ in range(3):  # steps 0..2: estimation window (t % 20 <= 2)
        layer.train()(torch.randn(2, 3, 8, 8, generator=g, dtype=torch.float64))
    assert layer.is_frozen()  # step 3 is frozen: the running values, whatever refresh_stats says
    x = torch.randn(2, 3, 8, 8, generator=g, dtype=torch.float64)
    expected = layer.eval()(x)
    torch.testing.assert_close(layer.train()(x), expected, rtol=0, atol=0)


def test_refresh_with_freeze_freezing_takes_precedence():
    """freeze=True, freeze_iter=4, refresh_every=3: estimate iff t % 40 <= 4 and t % 3 == 0."""
    layer = FastDeconv(3, 4, 3, padding=1, freeze=True, freeze_iter=4, refresh_every=3).double().train()
    g = torch.Generator().manual_seed(5)
    updated = []
    for _ in range(46):
        before = layer.running_deconv.clone()
        layer(torch.randn(2, 3, 8, 8, generator=g, dtype=torch.float64))
        updated.append(not torch.equal(before, layer.running_deconv))
    assert updated == [t % 40 <= 4 and t % 3 == 0 for t in range(46)]
    assert [t for t, u in enumerate(updated) if u] == [0, 3, 42]


def test_refresh_counter_is_the_state_dict_counter_and_old_state_dicts_load():
    build, shape = REFRESH_BUILDS["conv"]
    torch.manual_seed(0)
    old = build().double().train()  # a layer as checkpoints before refresh_every hold it
    g = torch.Generator().manual_seed(6)
    for _ in range(5):
        old(torch.randn(*shape, generator=g, dtype=torch.float64))
    state = old.state_dict()
    assert set(state) == set(build(refresh_every=4).state_dict())  # no new key
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    a = build(refresh_every=4).double()
    a.load_state_dict(torch.load(buffer, weights_only=True), strict=True)
    assert a.training_step() == 5 and not a.estimates_statistics()
    # resumed: steps 5, 6, 7 use the running values, step 8 refreshes
    b = build(refresh_every=4).double()
    b.load_state_dict(a.state_dict())
    updated = []
    for _ in range(5):
        x = torch.randn(*shape, generator=g, dtype=torch.float64)
        before = a.running_deconv.clone()
        out_a, out_b = a.train()(x), b.train()(x)
        torch.testing.assert_close(out_a, out_b, rtol=0, atol=0)
        updated.append(not torch.equal(before, a.running_deconv))
    assert updated == [False, False, False, True, False]
    # and a k=4 layer's state loads into the paper's layer
    build().double().load_state_dict(a.state_dict(), strict=True)


def test_refresh_step_cache_follows_external_changes():
    """The host-side counter notices fill_, load_state_dict and .to() (no stale decisions)."""
    layer = Delinear(6, 3, block=3, refresh_every=4).train()
    for _ in range(3):
        layer(torch.randn(8, 6))
    assert layer.training_step() == 3
    layer.num_batches_tracked.fill_(8)
    assert layer.training_step() == 8 and layer.estimates_statistics()
    twin = Delinear(6, 3, block=3, refresh_every=4)
    twin.num_batches_tracked.fill_(13)
    layer.load_state_dict(twin.state_dict())
    assert layer.training_step() == 13 and not layer.estimates_statistics()
    layer = layer.double()
    layer(torch.randn(8, 6, dtype=torch.float64))
    assert layer.training_step() == int(layer.num_batches_tracked) == 14
    layer.eval()(torch.randn(8, 6, dtype=torch.float64))  # eval does not count
    assert layer.training_step() == 14


@pytest.mark.parametrize("layer", [FastDeconv, Delinear])
@pytest.mark.parametrize("value, error", [(0, ValueError), (-2, ValueError), (1.5, TypeError), (True, TypeError),
                                          ("4", TypeError), (None, TypeError)])
def test_refresh_every_is_validated(layer, value, error):
    args = (4, 4, 3) if layer is FastDeconv else (4, 4)
    with pytest.raises(error, match="refresh_every must be a positive int"):
        layer(*args, refresh_every=value)


def test_refresh_every_in_repr_and_models():
    assert "refresh_every=4" in repr(FastDeconv(4, 4, 3, refresh_every=4))
    assert "refresh_every=4" in repr(Delinear(8, 2, refresh_every=4))
    assert "refresh_every" not in repr(FastDeconv(4, 4, 3))
    from ndlib import models

    with torch.device("meta"):
        net = models.create("vgg16", norm="nd", refresh_every=4)
        paper = models.create("vgg16", norm="nd")
    layers = [m for m in net.modules() if isinstance(m, (FastDeconv, Delinear))]
    assert sum(isinstance(m, Delinear) for m in layers) >= 1 and len(layers) > 10
    assert all(m.refresh_every == 4 for m in layers)
    # the frozen first layer gets it too; freezing takes precedence inside the layer
    first = next(m for m in layers if isinstance(m, FastDeconv) and m.freeze)
    assert first.in_channels == 3 and first.n_iter == 15
    assert all(m.refresh_every == 1 for m in paper.modules() if isinstance(m, (FastDeconv, Delinear)))
    with pytest.raises(ValueError, match="norm"):
        models.create("vgg16", norm="bn", refresh_every=4)


# --------------------------------------------------------------------------------------
# 8. Mixed precision: statistics and fold in the buffers' dtype under autocast
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", ["conv", "conv-grouped-s2", "linear"])
@pytest.mark.parametrize("refresh_every", [1, 2])
def test_autocast_bfloat16_keeps_statistics_in_float32(case, refresh_every):
    build, shape = REFRESH_BUILDS[case]
    torch.manual_seed(0)
    plain = build(refresh_every=refresh_every).train()
    mixed = build(refresh_every=refresh_every).train()
    mixed.load_state_dict(plain.state_dict())
    g = torch.Generator().manual_seed(8)
    for _ in range(3):
        x = torch.randn(*shape, generator=g)
        expected = plain(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = mixed(x)
        assert out.dtype == torch.bfloat16
        out.float().square().sum().backward()
        assert mixed.weight.grad.dtype == torch.float32 and torch.isfinite(mixed.weight.grad).all()
        assert rel_err(out.float(), expected) < 3e-2  # only the conv / linear map ran in bfloat16
        for name, buffer in plain.named_buffers():  # statistics from the same float32 patches
            assert torch.equal(buffer, dict(mixed.named_buffers())[name]), name
    # a bfloat16 input (the output of an earlier autocast layer): float32 statistics all the same
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed(torch.randn(*shape, generator=g).bfloat16())
    assert mixed.running_deconv.dtype == torch.float32 and torch.isfinite(mixed.running_deconv).all()


# covariance_grad="input": the covariance's backward product in the input's dtype (opt-in)
COVARIANCE_GRAD_BUILDS = {
    **{case: REFRESH_BUILDS[case] for case in ("conv", "conv-grouped-s2", "linear")},
    # one block of 16 channels x 3x3 from channels-last memory (ndlib.patches' channels-last route)
    "conv-channels-last": (lambda **kw: FastDeconv(16, 8, 3, padding=1, block=16, n_iter=3, **kw), (4, 16, 9, 9)),
}


def _covariance_grad_step(layer, x: torch.Tensor, upstream: torch.Tensor):
    """One bf16-autocast training step of ``layer`` on the bf16 input ``x``: output, input and weight gradients."""
    x = x.clone().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = layer(x)
    (out.float() * upstream).sum().backward()
    return out.detach(), x.grad, layer.weight.grad.clone()


@pytest.mark.parametrize("case", list(COVARIANCE_GRAD_BUILDS))
def test_covariance_grad_input_changes_only_the_input_gradient_under_autocast(case):
    """Under autocast the option rounds one product of the backward: the forward, the statistics
    and the weight gradient stay bit for bit; the input gradient moves by bf16 rounding, no more."""
    build, shape = COVARIANCE_GRAD_BUILDS[case]
    torch.manual_seed(0)
    default, low = build().train(), build(covariance_grad="input").train()
    low.load_state_dict(default.state_dict())
    g = torch.Generator().manual_seed(3)
    x = torch.randn(*shape, generator=g).bfloat16()  # the bf16 output of an earlier autocast layer
    if case == "conv-channels-last":
        x = x.contiguous(memory_format=torch.channels_last)
    upstream = torch.randn(default(x.float()).shape, generator=g)
    default.load_state_dict(low.state_dict())  # undo that forward's buffer update
    out_a, dx_a, dw_a = _covariance_grad_step(default, x, upstream)
    out_b, dx_b, dw_b = _covariance_grad_step(low, x, upstream)
    assert torch.equal(out_a, out_b) and torch.equal(dw_a, dw_b)
    for name, buffer in default.named_buffers():
        assert torch.equal(buffer, dict(low.named_buffers())[name]), name
    assert dx_a.dtype == dx_b.dtype == torch.bfloat16
    assert not torch.equal(dx_a, dx_b)  # the product did run in bf16
    assert rel_err(dx_b.float(), dx_a.float()) < 2e-2


@pytest.mark.parametrize("case", ["conv", "linear"])
def test_covariance_grad_input_is_the_default_without_autocast(case):
    """A float32 input is in the statistics' dtype already: the option changes nothing, bit for bit."""
    build, shape = COVARIANCE_GRAD_BUILDS[case]
    torch.manual_seed(0)
    default, low = build().train(), build(covariance_grad="input").train()
    low.load_state_dict(default.state_dict())
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(4))
    grads = []
    for layer in (default, low):
        xi = x.clone().requires_grad_(True)
        layer(xi).square().sum().backward()
        grads.append((xi.grad, layer.weight.grad))
    assert all(torch.equal(a, b) for a, b in zip(*grads))


def test_covariance_backward_in_bf16_against_float64():
    """``centered_covariance(..., grad_dtype=bfloat16)``: the gradient of a loss on the mean and the
    covariance, within bf16 rounding of the float64 one, returned in the input's dtype."""
    from ndlib.layers import centered_covariance

    g = torch.Generator().manual_seed(5)
    X = (torch.randn(300, 24, generator=g) + 0.5).requires_grad_(True)
    G_cov, G_mean = torch.randn(24, 24, generator=g), torch.randn(24, generator=g)
    grads = {}
    for name, data, grad_dtype in (("f64", X.detach().double(), None), ("f32", X.detach(), None),
                                   ("bf16", X.detach(), torch.bfloat16)):
        data = data.clone().requires_grad_(True)
        mean, cov = centered_covariance(data, 1e-2, grad_dtype)
        ((cov * G_cov.to(cov.dtype)).sum() + (mean * G_mean.to(mean.dtype)).sum()).backward()
        grads[name] = data.grad
    assert grads["bf16"].dtype == torch.float32
    assert rel_err(grads["f32"], grads["f64"].float()) < 1e-5
    assert 1e-4 < rel_err(grads["bf16"], grads["f64"].float()) < 1e-2


def test_covariance_grad_option_is_checked_and_reaches_every_layer():
    from ndlib import models

    with pytest.raises(ValueError, match="covariance_grad"):
        FastDeconv(4, 4, 3, covariance_grad="bf16")
    with pytest.raises(ValueError, match="covariance_grad"):
        Delinear(4, 4, covariance_grad="float32")
    with torch.device("meta"):
        net = models.create("resnet18", norm="nd", covariance_grad="input")
    layers = [m for m in net.modules() if isinstance(m, (FastDeconv, Delinear))]
    assert layers and all(m.covariance_grad == "input" for m in layers)
    assert "covariance_grad='input'" in repr(layers[0])
