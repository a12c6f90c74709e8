"""ndlib.layers against the faithful re-implementation of the public algorithm (ndlib._reference).

For every configuration the same input goes through an ``ndlib`` layer and its reference copy
for a few training steps: outputs, the gradients of input / weight / bias, and the running
buffers must agree within 1e-5 relative (norm-wise) in float32 and 1e-10 in float64.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

from ndlib import _reference as ref
from ndlib import isqrt as nd_isqrt
from ndlib import layers as nd
from ndlib import patches

RTOL = {torch.float32: 1e-5, torch.float64: 1e-10}


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def assert_close(a, b, dtype, what):
    err = rel_err(a.detach(), b.detach())
    assert err <= RTOL[dtype], f"{what}: relative error {err:.3g} > {RTOL[dtype]:g}"


def run_pair(layer, reference, make_input, dtype, steps=3, train=True):
    """Run both layers ``steps`` times on the same inputs, comparing everything each time."""
    layer.train(train)
    reference.train(train)
    gen = torch.Generator().manual_seed(123)
    for step in range(steps):
        x = make_input(gen).to(dtype)
        x1 = x.clone().requires_grad_(True)
        x2 = x.clone().requires_grad_(True)
        y1, y2 = layer(x1), reference(x2)
        assert_close(y1, y2, dtype, f"output (step {step})")
        upstream = torch.randn(y1.shape, generator=gen, dtype=dtype)
        (y1 * upstream).sum().backward()
        (y2 * upstream).sum().backward()
        assert_close(x1.grad, x2.grad, dtype, f"input gradient (step {step})")
        assert_close(layer.weight.grad, reference.weight.grad, dtype, f"weight gradient (step {step})")
        if layer.bias is not None:
            assert_close(layer.bias.grad, reference.bias.grad, dtype, f"bias gradient (step {step})")
        assert_close(layer.running_mean, reference.running_mean, dtype, f"running_mean (step {step})")
        assert_close(layer.running_deconv, reference.running_deconv, dtype, f"running_deconv (step {step})")
        layer.zero_grad()
        reference.zero_grad()


CONV_CASES = {
    # name: (in, out, kernel, stride, padding, dilation, groups, bias, block, H)
    "3x3": (16, 8, 3, 1, 1, 1, 1, True, 64, 10),
    "3x3-stride2-blocks": (32, 12, 3, 2, 1, 1, 1, True, 8, 11),
    "3x3-gcd-block": (24, 6, 3, 1, 0, 1, 1, True, 16, 9),
    "5x5-pad2": (6, 4, 5, 1, 2, 1, 1, True, 64, 12),
    "dilation2": (8, 4, 3, 1, 2, 2, 1, True, 4, 12),
    "1x1": (32, 16, 1, 1, 0, 1, 1, True, 8, 8),
    "1x1-stride2": (16, 8, 1, 2, 0, 1, 1, True, 16, 9),
    "rgb-input": (3, 8, 3, 1, 1, 1, 1, True, 64, 16),
    "no-bias": (16, 8, 3, 1, 1, 1, 1, False, 4, 8),
    "grouped": (16, 8, 3, 1, 1, 1, 4, True, 64, 8),
    "depthwise": (12, 12, 3, 2, 1, 1, 12, True, 64, 9),
    "depthwise-no-bias": (8, 8, 3, 1, 1, 1, 8, False, 64, 7),
    # 7x7 kernels at sampling stride 3 take the strided-window route of stacked_patches
    "7x7-depthwise": (8, 8, 7, 1, 3, 1, 8, True, 64, 12),
    "7x7-channel-multiplier": (4, 8, 7, 1, 3, 1, 4, True, 64, 11),
    "7x7-blocks": (8, 6, 7, 1, 3, 1, 1, True, 4, 11),
    "7x7-dilation2-no-bias": (4, 4, 7, 1, 5, 2, 1, False, 64, 13),
}


def make_conv_pair(case, dtype, **options):
    cin, cout, k, stride, pad, dil, groups, bias, block, _ = CONV_CASES[case]
    torch.manual_seed(0)
    layer = nd.FastDeconv(cin, cout, k, stride, pad, dil, groups, bias, block=block, dtype=dtype, **options)
    with torch.no_grad():
        if layer.bias is not None:
            layer.bias.normal_()
    return layer, ref.to_reference(layer)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("case", sorted(CONV_CASES))
def test_fastdeconv_matches_reference(case, dtype):
    layer, reference = make_conv_pair(case, dtype)
    cin, H = CONV_CASES[case][0], CONV_CASES[case][-1]
    # correlated, non-centred input, so the whitening has something to do
    mix = torch.randn(cin, cin, generator=torch.Generator().manual_seed(1)) / cin**0.5 + torch.eye(cin)

    def make_input(gen):
        x = torch.randn(4, cin, H, H, generator=gen)
        return torch.einsum("dc,nchw->ndhw", mix, x) + 0.5

    run_pair(layer, reference, make_input, dtype)
    run_pair(layer, reference, make_input, dtype, steps=1, train=False)  # evaluation uses the buffers


def test_freezing_follows_the_public_counter():
    """freeze_iter=2: statistics for iterations 0..2, frozen 3..19, re-estimated at 20..22."""
    layer, reference = make_conv_pair("rgb-input", torch.float64, freeze=True, freeze_iter=2)
    gen = torch.Generator().manual_seed(5)
    changed = []
    for step in range(24):
        x = torch.randn(2, 3, 16, 16, generator=gen, dtype=torch.float64) * 2 + 1
        before = layer.running_mean.clone()
        assert_close(layer(x), reference(x), torch.float64, f"output at step {step}")
        assert_close(layer.running_deconv, reference.running_deconv, torch.float64, f"running_deconv at {step}")
        changed.append(not torch.equal(before, layer.running_mean))
    assert reference.counter == 24 % 20
    assert [i for i, c in enumerate(changed) if c] == [0, 1, 2, 20, 21, 22]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("in_features,block,bias", [(64, 16, True), (48, 512, True), (40, 16, False), (30, 8, True)])
def test_delinear_matches_reference(in_features, block, bias, dtype):
    torch.manual_seed(0)
    layer = nd.Delinear(in_features, 10, bias, block=block, dtype=dtype)
    reference = ref.to_reference(layer)
    assert isinstance(reference, ref.ReferenceDelinear) and reference.block == layer.block
    mix = torch.randn(in_features, in_features, generator=torch.Generator().manual_seed(2)) / in_features**0.5

    def make_input(gen):
        return (torch.randn(256, in_features, generator=gen) @ (mix + torch.eye(in_features))) + 1.0

    run_pair(layer, reference, make_input, dtype)
    run_pair(layer, reference, make_input, dtype, steps=1, train=False)


def test_newton_schulz_equals_textbook_loop():
    """ndlib's loop skips identity products and the unused last update: same numbers."""
    gen = torch.Generator().manual_seed(3)
    a = torch.randn(40, 27, generator=gen)
    cov = a.t() @ a / 40 + 1e-5 * torch.eye(27)
    for n_iter in (1, 2, 5, 15):
        ours = nd.isqrt_newton_schulz(cov, n_iter)
        theirs = ref.reference_isqrt_newton_schulz(cov, n_iter)
        assert rel_err(ours, theirs) <= 1e-6, n_iter
        batched = ref.reference_isqrt_newton_schulz_batch(torch.stack([cov, 2 * cov]), n_iter)
        assert rel_err(nd.isqrt_newton_schulz(torch.stack([cov, 2 * cov]), n_iter), batched) <= 1e-6


class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nd.FastDeconv(3, 8, 3, padding=1, freeze=True, freeze_iter=3),
            nn.ReLU(),
            nn.Sequential(nd.FastDeconv(8, 8, 3, padding=1, groups=2, block=4), nn.ReLU()),
            nd.FastDeconv(8, 16, 1, block=4),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.head = nd.Delinear(16, 5, block=8)

    def forward(self, x):
        return self.head(self.body(x))


def test_swap_round_trip_keeps_weights_buffers_and_counter():
    torch.manual_seed(0)
    model = TinyNet()
    x = torch.randn(4, 3, 8, 8)
    for _ in range(5):
        model(x)
    swapped = ref.to_reference(model)
    assert ref.count_reference_layers(swapped) == 4
    assert ref.count_reference_layers(model) == 0  # not in place by default
    assert swapped.body[0].counter == 5
    torch.testing.assert_close(swapped(x), model(x), rtol=1e-5, atol=1e-6)
    back = ref.from_reference(swapped)
    assert ref.count_reference_layers(back) == 0
    assert int(back.body[0].num_batches_tracked) == 6 % 30
    assert back.body[0].sampling_stride == 3
    for (name, a), (_, b) in zip(sorted(back.state_dict().items()), sorted(model.state_dict().items())):
        if name.endswith("num_batches_tracked"):
            continue
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)


def test_swap_rejects_bad_input():
    with pytest.raises(TypeError, match="nn.Module"):
        ref.to_reference("not a model")
    with pytest.raises(ValueError, match="interleaved"):
        ref.to_reference(nd.FastDeconv(8, 4, 3, block=4, grouping="contiguous"))


def test_reference_is_not_public():
    import ndlib

    assert not hasattr(ndlib, "ReferenceFastDeconv")
    assert "_reference" not in getattr(ndlib, "__all__", [])


# --------------------------------------------------------------------------------------
# The optimized pieces of ndlib.layers (spectral Newton-Schulz, fused covariance, patches)
# --------------------------------------------------------------------------------------
def spd(n, seed=0, dtype=torch.float64, batch=()):
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(*batch, 3 * n, n, generator=gen, dtype=torch.float64)
    a[..., : n // 3] *= 1e-3  # a wide spectrum, as in real layers
    return (a.mT @ a / (3 * n) + 1e-5 * torch.eye(n, dtype=torch.float64)).to(dtype)


@pytest.mark.parametrize("n_iter", [1, 3, 5, 15])
def test_spectral_newton_schulz_equals_the_loop(n_iter):
    A = spd(40, seed=n_iter)
    assert rel_err(nd.isqrt_newton_schulz_spectral(A, n_iter), nd.isqrt_newton_schulz(A, n_iter)) <= 1e-9
    batch = spd(12, seed=1, batch=(3,))
    assert rel_err(nd.isqrt_newton_schulz_spectral(batch, n_iter), nd.isqrt_newton_schulz(batch, n_iter)) <= 1e-9


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_spectral_newton_schulz_gradient_equals_the_loops(dtype):
    """Same gradient as autograd through the textbook loop (incl. the norm's path)."""
    A = spd(96, seed=4, dtype=dtype)
    upstream = torch.randn(96, 96, generator=torch.Generator().manual_seed(5), dtype=dtype)
    grads = []
    for fn in (nd.isqrt_newton_schulz_spectral, ref.reference_isqrt_newton_schulz):
        leaf = A.clone().requires_grad_(True)
        grads.append(torch.autograd.grad(fn(leaf, 5), leaf, upstream)[0])
    assert rel_err(*grads) <= RTOL[dtype]


def test_spectral_newton_schulz_gradcheck_with_repeated_eigenvalues():
    A = spd(5, seed=6)
    A[3:, :] = 0
    A[:, 3:] = 0
    A[3, 3] = A[4, 4] = 0.5  # a double eigenvalue: divided differences become derivatives
    assert torch.autograd.gradcheck(lambda m: nd.isqrt_newton_schulz_spectral((m + m.mT) / 2, 4),
                                    (A.clone().requires_grad_(True),))


def test_centered_covariance_gradcheck_and_values():
    gen = torch.Generator().manual_seed(7)
    X = (torch.randn(2, 9, 4, generator=gen, dtype=torch.float64) + 3).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: nd.centered_covariance(t, 1e-3), (X,))
    mean, cov = nd.centered_covariance(X, 1e-3)
    Xc = X - X.mean(1, keepdim=True)
    torch.testing.assert_close(cov, Xc.mT @ Xc / 9 + 1e-3 * torch.eye(4, dtype=torch.float64))
    torch.testing.assert_close(mean, X.mean(1))


@pytest.mark.parametrize("case", sorted(CONV_CASES))
@pytest.mark.parametrize("grouping", patches.GROUPINGS)
def test_stacked_patches_equal_the_plain_pipeline(case, grouping):
    cin, cout, k, stride, pad, dil, groups, bias, block, H = CONV_CASES[case]
    if groups > 1 and grouping == "contiguous":
        pytest.skip("grouping applies to groups == 1")
    layer = nd.FastDeconv(cin, cout, k, stride, pad, dil, groups, bias, block=block, grouping=grouping)
    x = torch.randn(3, cin, H, H)
    X = patches.sample_patches(x, layer.kernel_size, layer.padding, layer.dilation, layer.statistics_stride)
    if groups == 1:
        expected = patches.group_features(X, layer.num_blocks, grouping).reshape(-1, layer.num_features)
    else:
        expected = X.reshape(-1, groups, layer.num_features).transpose(0, 1)
    assert torch.equal(patches.stacked_patches(layer, x), expected)


ONE_BY_ONE = {
    # name: FastDeconv keyword arguments (1x1 kernels: the pixel-picking route)
    "one-block": dict(in_channels=8, out_channels=4, kernel_size=1, block=64),
    "interleaved-blocks": dict(in_channels=8, out_channels=6, kernel_size=1, block=2),
    "contiguous-blocks": dict(in_channels=8, out_channels=6, kernel_size=1, block=2, grouping="contiguous"),
    "grouped-stride2": dict(in_channels=6, out_channels=9, kernel_size=1, stride=2, groups=3),
}


def _same_training_step(layers, x, x_cl, gen, rtol):
    """One training forward + backward of ``layers[0]`` on ``x`` and ``layers[1]`` on its
    channels-last copy ``x_cl`` (float64): the same outputs, gradients and buffers (to ``rtol``);
    returns the two inputs, whose ``.grad`` the caller may inspect further."""
    inputs = [x.clone().requires_grad_(True), x_cl.clone().requires_grad_(True)]
    outputs = [layer(inp) for layer, inp in zip(layers, inputs)]
    upstream = torch.randn(outputs[0].shape, generator=gen, dtype=torch.float64)
    for out in outputs:
        (out * upstream).sum().backward()
    torch.testing.assert_close(outputs[1], outputs[0], rtol=rtol, atol=1e-12)
    torch.testing.assert_close(inputs[1].grad, inputs[0].grad, rtol=rtol, atol=1e-12)
    torch.testing.assert_close(layers[1].weight.grad, layers[0].weight.grad, rtol=rtol, atol=1e-12)
    torch.testing.assert_close(layers[1].running_mean, layers[0].running_mean, rtol=rtol, atol=1e-12)
    torch.testing.assert_close(layers[1].running_deconv, layers[0].running_deconv, rtol=rtol, atol=1e-12)
    return inputs


@pytest.mark.parametrize("case", sorted(ONE_BY_ONE))
def test_channels_last_input_takes_the_view_route_with_the_same_result(case):
    """A 1x1 layer picks its pixels from a channels-last input as a strided view of its memory:
    the same patch matrix, output, gradients and buffers as from the contiguous input (float64),
    an input gradient that keeps the channels-last layout, and the input itself untouched."""
    layers = [nd.FastDeconv(**ONE_BY_ONE[case]).double().train() for _ in range(2)]
    layers[1].load_state_dict(layers[0].state_dict())
    gen = torch.Generator().manual_seed(14)
    x = torch.randn(3, layers[0].in_channels, 7, 8, generator=gen, dtype=torch.float64) + 0.5
    x_cl = x.contiguous(memory_format=torch.channels_last)
    assert patches._is_channels_last(x_cl) and not patches._is_channels_last(x)
    X = patches.stacked_patches(layers[1], x_cl)
    assert torch.equal(X, patches.stacked_patches(layers[0], x))
    if layers[0].num_blocks == 1 and layers[0].groups == 1:  # no copy at all: a view of the input
        assert X.untyped_storage().data_ptr() == x_cl.untyped_storage().data_ptr()
        assert not nd._owned_by_layer(X, x_cl)  # so it is centred out of place
    inputs = _same_training_step(layers, x, x_cl, gen, rtol=1e-12)
    assert patches._is_channels_last(inputs[1].grad)
    assert torch.equal(inputs[1].detach(), x_cl)


ONE_BLOCK_KXK = {
    # name: (FastDeconv keyword arguments, input height, input width): one block, ungrouped k x k
    "3x3": (dict(in_channels=5, out_channels=4, kernel_size=3, padding=1), 8, 7),
    "stem-3ch-stride2": (dict(in_channels=3, out_channels=6, kernel_size=3, padding=1, stride=2), 9, 9),
    "5x5-dilated-no-pad": (dict(in_channels=4, out_channels=3, kernel_size=5, dilation=2, sampling_stride=3), 13, 12),
    "3x3-pad-2x1-stride2": (dict(in_channels=6, out_channels=2, kernel_size=3, padding=(2, 1), stride=2), 6, 9),
}


@pytest.mark.parametrize("case", sorted(ONE_BLOCK_KXK))
def test_channels_last_input_of_a_one_block_layer_gives_the_same_statistics_output_and_gradients(case):
    """A one-block k x k layer fed a channels-last input builds its patch matrix with the features
    in (ky, kx, channel) order and permutes mean and Cov^(-1/2) back: the same patch matrix in
    standard order, statistics, output, gradients and buffers as from the contiguous input (float64)."""
    kwargs, height, width = ONE_BLOCK_KXK[case]
    layers = [nd.FastDeconv(**kwargs).double().train() for _ in range(2)]
    layers[1].load_state_dict(layers[0].state_dict())
    assert layers[0].num_blocks == 1 and layers[0].groups == 1
    gen = torch.Generator().manual_seed(15)
    x = torch.randn(4, layers[0].in_channels, height, width, generator=gen, dtype=torch.float64) + 0.5
    x_cl = x.contiguous(memory_format=torch.channels_last)
    assert patches._layer_patches(layers[0], x)[2] is None and patches._layer_patches(layers[1], x_cl)[2] is not None
    assert torch.equal(patches.stacked_patches(layers[1], x_cl), patches.stacked_patches(layers[0], x))
    stats = [layer.batch_statistics(inp) for layer, inp in ((layers[0], x), (layers[1], x_cl))]
    for ours, reference in zip(stats[1], stats[0]):
        torch.testing.assert_close(ours, reference, rtol=1e-10, atol=1e-12)
    inputs = _same_training_step(layers, x, x_cl, gen, rtol=1e-10)
    assert torch.equal(inputs[1].detach(), x_cl)  # the input untouched (the matrix is the layer's own copy)
    for layer in layers:  # evaluation: the running statistics, in the standard order on both
        layer.eval()
    torch.testing.assert_close(layers[1](x_cl), layers[0](x), rtol=1e-10, atol=1e-12)


def test_channels_last_order_puts_ky_kx_channel_features_in_channel_ky_kx_order():
    C, T = 3, 4
    permuted = torch.tensor([[t * 10 + c for t in range(T) for c in range(C)]])  # features (t, c): value t*10+c
    standard = permuted[:, patches._channels_last_order(C, T, torch.device("cpu"))]
    assert standard.tolist() == [[t * 10 + c for c in range(C) for t in range(T)]]  # features (c, t)


WINDOW_GEOMETRIES = {
    # name: (FastDeconv keyword arguments, input height, input width)
    "7x7-pad3": (dict(in_channels=6, out_channels=4, kernel_size=7, padding=3, block=64), 13, 14),
    "7x7-blocks-interleaved": (dict(in_channels=8, out_channels=4, kernel_size=7, padding=3, block=2), 12, 12),
    "7x7-blocks-contiguous": (dict(in_channels=8, out_channels=4, kernel_size=7, padding=3, block=2,
                                   grouping="contiguous"), 12, 12),
    "7x7-depthwise": (dict(in_channels=6, out_channels=6, kernel_size=7, padding=3, groups=6), 16, 15),
    "7x7-grouped-multiplier": (dict(in_channels=6, out_channels=12, kernel_size=7, padding=3, groups=3), 11, 11),
    "7x7-asymmetric-pad-dilation": (dict(in_channels=4, out_channels=4, kernel_size=7, padding=(5, 2),
                                         dilation=(2, 1), block=2), 15, 12),
    "9x9-no-pad": (dict(in_channels=3, out_channels=4, kernel_size=9, block=64), 14, 16),
    "7x7-no-pad-one-window": (dict(in_channels=2, out_channels=4, kernel_size=7, block=64), 7, 7),
}


@pytest.mark.parametrize("case", sorted(WINDOW_GEOMETRIES))
def test_window_patches_equal_unfold_with_gradient(case):
    """Kernels >= 2x the sampling stride: the strided-window route gives the same matrix as
    F.unfold + grouping, and the same input gradient (float64)."""
    kwargs, H, W = WINDOW_GEOMETRIES[case]
    layer = nd.FastDeconv(**kwargs)
    assert layer.kernel_size[0] >= 2 * layer.statistics_stride  # the route under test
    gen = torch.Generator().manual_seed(11)
    x = torch.randn(3, layer.in_channels, H, W, generator=gen, dtype=torch.float64)
    x1, x2 = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    ours = patches.stacked_patches(layer, x1)
    X = patches.sample_patches(x2, layer.kernel_size, layer.padding, layer.dilation, layer.statistics_stride)
    if layer.groups == 1:
        plain = patches.group_features(X, layer.num_blocks, layer.grouping).reshape(-1, layer.num_features)
    else:
        plain = X.reshape(-1, layer.groups, layer.num_features).transpose(0, 1)
    assert torch.equal(ours, plain)
    upstream = torch.randn(ours.shape, generator=gen, dtype=torch.float64)
    (ours * upstream).sum().backward()
    (plain * upstream).sum().backward()
    torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_in_place_centering_is_bit_identical(dtype):
    """The layer centres its own patch matrix in place: same mean, covariance and gradient bit for bit."""
    layer = nd.FastDeconv(8, 4, 3, padding=1, block=4).to(dtype)
    gen = torch.Generator().manual_seed(12)
    x = torch.randn(3, 8, 10, 10, generator=gen, dtype=dtype) + 0.5
    results = []
    for in_place in (False, True):
        xr = x.clone().requires_grad_(True)
        X = patches.stacked_patches(layer, xr)
        assert nd._owned_by_layer(X, xr)
        out = nd._CenteredCovariance.apply(X, 1e-3, in_place)
        mean, cov = out[-2:]
        up_mean = torch.randn(mean.shape, generator=torch.Generator().manual_seed(1), dtype=dtype)
        up_cov = torch.randn(cov.shape, generator=torch.Generator().manual_seed(2), dtype=dtype)
        (grad,) = torch.autograd.grad([mean, cov], [xr], [up_mean, up_cov])
        results.append((mean, cov, grad))
    for a, b in zip(*results):
        assert torch.equal(a, b)


@pytest.mark.parametrize("in_place", [False, True])
def test_feature_major_covariance_equals_row_major(in_place):
    """Grouped k x k convs compute from the transposed (feature-major) patch matrix: same mean,
    covariance and input gradient as the row-major matrix (float64), and gradcheck passes."""
    layer = nd.FastDeconv(6, 6, 3, padding=1, groups=3, stride=2).double()
    gen = torch.Generator().manual_seed(13)
    x = torch.randn(3, 6, 9, 8, generator=gen, dtype=torch.float64) + 0.5
    Xt, features_first = patches._patch_matrix(layer, x)
    assert features_first and Xt.is_contiguous() and Xt.shape == (3, 18, 3 * 2 * 2)  # stride 2 * 3: 2x2 patches
    assert torch.equal(Xt.mT, patches.stacked_patches(layer, x))
    x1, x2 = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    Xt1 = patches._patch_matrix(layer, x1)[0]
    assert nd._owned_by_layer(Xt1, x1)
    out = nd._CenteredCovariance.apply(Xt1, 1e-3, in_place, True)
    ours = out[-2:]
    plain = nd.centered_covariance(patches.sample_patches(x2, layer.kernel_size, layer.padding, layer.dilation,
                                                     layer.statistics_stride).reshape(-1, 3, 18).transpose(0, 1), 1e-3)
    for a, b in zip(ours, plain):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    ups = [torch.randn(t.shape, generator=gen, dtype=torch.float64) for t in plain]
    (g1,) = torch.autograd.grad(ours, x1, ups)
    (g2,) = torch.autograd.grad(plain, x2, ups)
    torch.testing.assert_close(g1, g2, rtol=1e-12, atol=1e-12)
    Xt = Xt.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: nd._CenteredCovariance.apply(t, 1e-3, False, True), (Xt,))


def test_in_place_centering_never_touches_the_input():
    """A patch matrix that is a view of the input (one 7x7 window, no padding) is centred out of place."""
    layer = nd.FastDeconv(2, 4, 7, block=64).double().train()
    x = torch.randn(1, 2, 7, 7, dtype=torch.float64) + 3
    X = patches.stacked_patches(layer, x)
    assert X.untyped_storage().data_ptr() == x.untyped_storage().data_ptr()  # the case under test
    assert not nd._owned_by_layer(X, x)
    before = x.clone()
    x.requires_grad_(True)
    layer(x).sum().backward()
    assert torch.equal(x.detach(), before)
    linear = nd.Delinear(8, 3, block=4).train()
    v = torch.randn(16, 8) + 1
    kept = v.clone()
    linear(v)
    assert torch.equal(v, kept)


def test_auto_isqrt_method_choice():
    """auto: spectral on the CPU from SPECTRAL_MIN_SIZE features on, except n_iter == 1 (a linear
    polynomial, no matmul to save), where the loop is used; same function either way."""
    big, small = spd(nd_isqrt.SPECTRAL_MIN_SIZE), spd(nd_isqrt.SPECTRAL_MIN_SIZE - 1)
    assert nd_isqrt._auto_isqrt_method(big, 5) == "spectral"
    assert nd_isqrt._auto_isqrt_method(big, 2) == "spectral"
    assert nd_isqrt._auto_isqrt_method(big, 1) == "matmul"
    assert nd_isqrt._auto_isqrt_method(small, 5) == "matmul"
    assert nd_isqrt._auto_isqrt_method(spd(8, batch=(3,)), 5) == "matmul"
    assert nd_isqrt._auto_isqrt_method(spd(96, batch=(2,)), 3) == "spectral"
    # n_iter == 1 is the loop exactly, and the spectral route agrees with it
    assert torch.equal(nd_isqrt.isqrt_by_method(big, 1, "auto"), nd.isqrt_newton_schulz(big, 1))
    assert rel_err(nd.isqrt_newton_schulz_spectral(big, 1), nd.isqrt_newton_schulz(big, 1)) <= 1e-9
    # and its gradient matches the reference's (the eigh reference of the tests: the loop via autograd)
    leaf = big.clone().requires_grad_(True)
    upstream = torch.randn(big.shape, generator=torch.Generator().manual_seed(4), dtype=big.dtype)
    (ours,) = torch.autograd.grad(nd_isqrt.isqrt_by_method(leaf, 1, "auto"), leaf, upstream)
    leaf2 = big.clone().requires_grad_(True)
    (theirs,) = torch.autograd.grad(ref.reference_isqrt_newton_schulz(leaf2, 1), leaf2, upstream)
    assert rel_err(ours, theirs) <= 1e-10


def test_isqrt_methods_agree_in_a_layer():
    """At 144 features "auto" takes the spectral route on CPU, so it is compared with the matmul loop
    (comparing it with "spectral" would run one path twice; tests/test_layers.py covers "auto"
    below the spectral size)."""
    torch.manual_seed(0)
    auto = nd.FastDeconv(16, 8, 3, padding=1, block=16).double()  # 144 features: "auto" is spectral on CPU
    other = nd.FastDeconv(16, 8, 3, padding=1, block=16, isqrt_method="matmul").double()
    other.load_state_dict(auto.state_dict())
    x = torch.randn(4, 16, 9, 9, dtype=torch.float64) + 1
    torch.testing.assert_close(auto.train()(x), other.train()(x), rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="isqrt_method"):
        nd.FastDeconv(4, 4, 3, isqrt_method="eig")
    with pytest.raises(ValueError, match="isqrt_method"):
        nd.Delinear(4, 4, isqrt_method="cholesky")
