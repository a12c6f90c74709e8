"""``ndlib.deconvolve`` on the models researchers bring: no silent corruption, BN folding,
recalibration, the rank warning and the paper's preset.

Each silent defect found by converting torchvision models (issue 33) has a test here that
failed before its fix: in-place ops after a removed BatchNorm, BatchNorm subclasses,
``FrozenBatchNorm2d``, the skip advice, activation checkpointing, the grouping missing from the
state dict, and the TorchScript and meta-device messages.
"""
from __future__ import annotations

import warnings

import pytest
import torch
import torchvision
from torch import nn
from torch.utils.checkpoint import checkpoint
from torchvision.ops.misc import FrozenBatchNorm2d

import ndlib
from ndlib import models
from ndlib.convert import PRESETS, RemovedNorm, deconvolve
from ndlib.layers import Delinear, FastDeconv, RankDeficientWarning

pytestmark = pytest.mark.usefixtures("one_thread")


def randomise_batchnorms(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm statistics and an affine far from the defaults, as training would."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.randn(m.num_features, generator=generator))
                m.running_var.copy_(torch.rand(m.num_features, generator=generator) + 0.5)
                m.weight.copy_(torch.randn(m.num_features, generator=generator))
                m.bias.copy_(torch.randn(m.num_features, generator=generator))
    return model


# --------------------------------------------------------------------------------------
# 1. In-place ops after a removed BatchNorm
# --------------------------------------------------------------------------------------
class PreActivation(nn.Module):
    """BN -> ReLU(inplace) -> conv, plus the block's input: a pre-activation shortcut."""

    def __init__(self):
        super().__init__()
        self.bn, self.relu, self.conv = nn.BatchNorm2d(4), nn.ReLU(inplace=True), nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x):
        return self.conv(self.relu(self.bn(x))) + x


def test_an_inplace_op_after_a_removed_batchnorm_changes_neither_the_shortcut_nor_the_input():
    torch.manual_seed(0)
    original = PreActivation()
    converted = deconvolve(original).eval()
    x = torch.randn(2, 4, 8, 8)
    x0 = x.clone()
    with torch.no_grad():
        out = converted(x)
        without_bn = original.conv(torch.relu(x0)) + x0  # the original without its BatchNorm
    assert torch.equal(x, x0)
    torch.testing.assert_close(out, without_bn, rtol=0, atol=1e-6)
    assert isinstance(converted.bn, RemovedNorm) and isinstance(converted.bn, nn.Identity)


@pytest.mark.parametrize("arch", models.available(table=1))
def test_our_nd_models_need_no_copy_for_removed_norms(arch):
    """Our hand-built ND models use a plain ``nn.Identity`` for the removed norms (no copy): no
    in-place op of theirs follows a norm whose input is read elsewhere, so swapping in
    ``RemovedNorm`` changes nothing, and the input is never modified."""
    torch.manual_seed(0)
    nd = models.create(arch, norm="nd").eval()
    x = torch.randn(2, 3, 32, 32)
    x0 = x.clone()
    with torch.no_grad():
        plain = nd(x)
        for name, module in list(nd.named_modules()):
            if type(module) is nn.Identity and name:
                parent, _, attr = name.rpartition(".")
                setattr(nd.get_submodule(parent) if parent else nd, attr, RemovedNorm())
        copied = nd(x)
    assert torch.equal(x, x0)
    assert torch.equal(plain, copied)


# --------------------------------------------------------------------------------------
# 2-4. Which norms are removed, and what the errors advise
# --------------------------------------------------------------------------------------
class BatchNormAct(nn.BatchNorm2d):
    """A BatchNorm whose forward also applies an activation, as timm's ``BatchNormAct2d`` does."""

    def forward(self, x):
        return torch.relu(super().forward(x))


def test_batchnorm_subclasses_are_refused_by_name_and_can_be_skipped():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), BatchNormAct(8), nn.Conv2d(8, 8, 3), nn.BatchNorm2d(8))
    match = r"1 layer\(s\) cannot be converted: 1 \(BatchNormAct: a subclass of BatchNorm2d"
    with pytest.raises(ValueError, match=match):
        deconvolve(model)
    converted = deconvolve(model, skip=["1"])
    assert type(converted[1]) is BatchNormAct and isinstance(converted[3], RemovedNorm)


def test_frozen_batchnorms_are_removed_like_batchnorms():
    model = torchvision.models.resnet18(num_classes=10, norm_layer=FrozenBatchNorm2d)
    converted = deconvolve(model, block=16)
    assert not any(isinstance(m, FrozenBatchNorm2d) for m in converted.modules())
    assert sum(isinstance(m, RemovedNorm) for m in converted.modules()) == 20


class BasicConv(nn.Module):
    """Inception's conv + BN unit."""

    def __init__(self, cin, cout, kernel, padding):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x):
        return torch.relu(self.bn(self.conv(x)))


def inception_like() -> nn.Sequential:
    return nn.Sequential(BasicConv(3, 8, 3, 1), BasicConv(8, 8, (1, 7), (0, 3)), BasicConv(8, 8, (7, 1), (3, 0)))


def test_the_skip_advice_names_the_parents_that_keep_conv_and_batchnorm_together():
    with pytest.raises(ValueError) as raised:
        deconvolve(inception_like())
    message = str(raised.value)
    assert "1.conv (Conv2d: kernel (1, 7): FastDeconv needs a square kernel)" in message
    assert "skip=['1', '2']" in message and "BatchNorms included" in message
    converted = deconvolve(inception_like(), skip=["1", "2"])  # the advice works
    assert isinstance(converted[0].conv, FastDeconv) and isinstance(converted[0].bn, RemovedNorm)
    assert type(converted[1].conv) is nn.Conv2d and type(converted[1].bn) is nn.BatchNorm2d


def test_skipping_a_conv_but_not_its_batchnorm_warns():
    with pytest.warns(UserWarning, match=r"BatchNorms beside them in \['1', '2'\] are removed"):
        converted = deconvolve(inception_like(), skip=["1.conv", "2.conv"])
    assert type(converted[1].conv) is nn.Conv2d and isinstance(converted[1].bn, RemovedNorm)


# --------------------------------------------------------------------------------------
# 5. Activation checkpointing
# --------------------------------------------------------------------------------------
def small_densenet(memory_efficient: bool) -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.DenseNet(growth_rate=8, block_config=(2, 2), num_init_features=16, bn_size=2,
                                       num_classes=5, memory_efficient=memory_efficient)


@pytest.mark.parametrize("options", [{}, {"refresh_every": 2}, {"refresh_every": 2, "refresh_stats": "last"},
                                     {"freeze": True, "freeze_iter": 1}])
def test_activation_checkpointing_updates_the_statistics_once_per_step(options):
    """torchvision's memory-efficient DenseNet recomputes each bottleneck in the backward pass:
    same gradients, buffers and counters as without recomputation (before the fix the
    counters advanced twice per step, and ``refresh_every=2`` failed in backward)."""
    plain = deconvolve(small_densenet(False), block=8, rank_warning=False, **options)
    recomputed = deconvolve(small_densenet(True), block=8, rank_warning=False, **options)
    x = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 1, 2, 3])
    for _ in range(4):
        for model in (plain, recomputed):
            model.zero_grad()
            nn.functional.cross_entropy(model.train()(x), y).backward()
        for (name, a), (_, b) in zip(plain.named_parameters(), recomputed.named_parameters()):
            torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-6, msg=name)
    for (name, a), (_, b) in zip(plain.state_dict().items(), recomputed.state_dict().items()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
    assert {int(m.num_batches_tracked) for m in recomputed.modules() if isinstance(m, FastDeconv)} == {4}


def test_reentrant_checkpointing_updates_the_statistics_once_per_step():
    layer = FastDeconv(4, 4, 3, padding=1, block=4, refresh_every=2)
    x = torch.randn(2, 4, 8, 8, requires_grad=True)
    for _ in range(3):
        checkpoint(layer, x, use_reentrant=True).sum().backward()
    assert int(layer.num_batches_tracked) == 3


# --------------------------------------------------------------------------------------
# 6. The grouping is stored with the statistics it shapes
# --------------------------------------------------------------------------------------
def test_statistics_saved_under_one_grouping_do_not_load_into_the_other():
    torch.manual_seed(0)
    interleaved = deconvolve(nn.Sequential(nn.Conv2d(32, 8, 3)), block=8, grouping="interleaved")
    contiguous = deconvolve(nn.Sequential(nn.Conv2d(32, 8, 3)), block=8, grouping="contiguous")
    interleaved.train()(torch.randn(8, 32, 9, 9))
    match = r"saved with grouping='interleaved' but this layer uses grouping='contiguous'"
    with pytest.raises(RuntimeError, match=match):
        contiguous.load_state_dict(interleaved.state_dict())
    same = deconvolve(nn.Sequential(nn.Conv2d(32, 8, 3)), block=8, grouping="interleaved")
    same.load_state_dict(interleaved.state_dict())
    assert torch.equal(same[0].running_deconv, interleaved[0].running_deconv)


def test_a_state_dict_from_before_the_grouping_was_stored_still_loads():
    """Checkpoints of runs in flight have no ``grouping_code``: they load strictly, unchanged."""
    layer = FastDeconv(32, 8, 3, block=8)
    legacy = {k: v for k, v in layer.state_dict().items() if k != "grouping_code"}
    assert FastDeconv(32, 8, 3, block=8).load_state_dict(legacy, strict=True).missing_keys == []
    assert "grouping_code" not in FastDeconv(8, 8, 3, block=8).state_dict()  # one block: nothing to tell apart


# --------------------------------------------------------------------------------------
# 7. Messages for TorchScript and meta-device models
# --------------------------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")
def test_a_torchscript_model_is_refused_with_what_to_pass_instead():
    scripted = torch.jit.script(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)))
    with pytest.raises(TypeError, match="TorchScript modules are not supported.*pass the eager nn.Module"):
        deconvolve(scripted)


def test_a_meta_model_converts_and_its_training_forward_says_to_materialise_it():
    with torch.device("meta"):
        model = deconvolve(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)))
        assert model.eval()(torch.empty(1, 3, 8, 8)).shape == (1, 4, 6, 6)  # shapes work in eval mode
        with pytest.raises(RuntimeError, match=r"FastDeconv '0'.*meta device.*to_empty"):
            model.train()(torch.empty(1, 3, 8, 8))


# --------------------------------------------------------------------------------------
# fold_bn
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2"])
def test_fold_bn_keeps_a_trained_models_eval_function(name):
    torch.manual_seed(0)
    original = randomise_batchnorms(getattr(torchvision.models, name)(num_classes=10)).eval()
    converted = deconvolve(original, preset="paper", fold_bn=True).eval()
    assert not any(isinstance(m, RemovedNorm) for m in converted.modules())  # every BN followed a conv
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(converted(x), original(x), rtol=1e-4, atol=1e-4)


class PreActBlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(4), nn.Conv2d(4, 4, 3, padding=1, bias=False)
        self.bn2, self.conv2 = nn.BatchNorm2d(4), nn.Conv2d(4, 4, 3, padding=1, bias=False)

    def forward(self, x):
        out = self.conv1(torch.relu(self.bn1(x)))
        return self.conv2(torch.relu(self.bn2(out))) + x


def test_fold_bn_folds_by_the_forward_pass_and_warns_about_the_rest():
    """``bn2`` follows ``conv1`` in the forward pass and is folded; ``bn1`` acts on the input,
    follows no conv, and is removed without folding, with a warning that names it."""
    torch.manual_seed(0)
    original = randomise_batchnorms(PreActBlock()).eval()
    with pytest.warns(UserWarning, match=r"fold_bn folded 1 BatchNorms; 1 do not directly follow a conv \(bn1\)"):
        converted = deconvolve(original, fold_bn=True).eval()
    assert type(converted.bn2) is nn.Identity and isinstance(converted.bn1, RemovedNorm)
    x = torch.randn(2, 4, 8, 8)
    with torch.no_grad():
        expected = original.conv2(torch.relu(original.bn2(original.conv1(torch.relu(x))))) + x
        torch.testing.assert_close(converted(x), expected, rtol=1e-5, atol=1e-5)


def test_fold_bn_on_a_model_fx_cannot_trace_names_the_alternative():
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)

        def forward(self, x):
            if x.sum() > 0:  # data-dependent control flow: fx cannot trace it
                x = -x
            return self.bn(self.conv(x))

    with pytest.raises(ValueError, match="fold_bn needs to trace the model with torch.fx.*fuse_conv_bn_eval"):
        deconvolve(Branchy(), fold_bn=True)
    assert isinstance(deconvolve(Branchy()).conv, FastDeconv)  # without fold_bn: converts


def test_fold_bn_changes_nothing_on_error_even_in_place():
    model = randomise_batchnorms(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(TypeError, match="unknown option"):
        deconvolve(model, fold_bn=True, inplace=True, overrides={"0": {"n_iters": 3}})
    assert type(model[0]) is nn.Conv2d
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


# --------------------------------------------------------------------------------------
# recalibrate
# --------------------------------------------------------------------------------------
def trained_a_few_steps(steps: int = 3) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = deconvolve(torchvision.models.resnet18(num_classes=10), preset="paper", block=16, rank_warning=False)
    x = torch.randn(16, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    y = torch.randint(0, 10, (16,), generator=torch.Generator().manual_seed(2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for _ in range(steps):
        loss = nn.functional.cross_entropy(model.train()(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model, x, y


def test_recalibrate_on_one_batch_makes_eval_compute_the_training_forward():
    """With one batch the running statistics become that batch's estimate, so eval mode then
    gives the training-mode output on it; parameters, counters and modes do not change."""
    model, x, _ = trained_a_few_steps()
    model.eval()
    parameters = {k: v.clone() for k, v in model.named_parameters()}
    counters = {
        n: int(m.num_batches_tracked) for n, m in model.named_modules() if isinstance(m, (FastDeconv, Delinear))
    }
    with torch.no_grad():
        stale = model(x)
        ndlib.recalibrate(model, [(x, None)])
        assert not model.training and not any(m.training for m in model.modules())
        recalibrated = model(x)
        model.train()
        first_layer = model.conv1
        first_layer.freeze = False  # so the training forward estimates too, as recalibrate's pass did
        trained = model(x)
    torch.testing.assert_close(recalibrated, trained, rtol=1e-3, atol=1e-3)
    assert (stale - trained).abs().max() > 10 * (recalibrated - trained).abs().max()
    assert all(torch.equal(parameters[k], v) for k, v in model.named_parameters())
    assert counters == {n: int(m.num_batches_tracked) - 1 for n, m in model.named_modules()
                        if isinstance(m, (FastDeconv, Delinear))}  # only the training forward above moved them


def test_recalibrate_averages_the_batches_and_leaves_the_schedule_alone():
    layer = FastDeconv(3, 4, 3, block=3, freeze=True, freeze_iter=1, refresh_every=2)
    layer.num_batches_tracked.fill_(7)  # a frozen step of its schedule: recalibrate estimates anyway
    batches = [torch.randn(4, 3, 9, 9, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    ndlib.recalibrate(layer, batches, steps=2)
    estimates = [layer.batch_statistics(b) for b in batches[:2]]
    torch.testing.assert_close(layer.running_mean, (estimates[0][0] + estimates[1][0]) / 2)
    torch.testing.assert_close(layer.running_deconv, (estimates[0][1] + estimates[1][1]) / 2)
    assert int(layer.num_batches_tracked) == 7 and layer.freeze and layer.refresh_every == 2 and layer.momentum == 0.1


def test_recalibrate_errors():
    with pytest.raises(ValueError, match="no FastDeconv or Delinear layer"):
        ndlib.recalibrate(nn.Conv2d(3, 4, 3), [torch.randn(1, 3, 8, 8)])
    with pytest.raises(ValueError, match="batches gave no batch"):
        ndlib.recalibrate(FastDeconv(3, 4, 3, block=3), [])
    with pytest.raises(ValueError, match="steps must be a positive int"):
        ndlib.recalibrate(FastDeconv(3, 4, 3, block=3), [torch.randn(1, 3, 8, 8)], steps=0)


# --------------------------------------------------------------------------------------
# The rank warning
# --------------------------------------------------------------------------------------
def test_rank_deficient_layers_warn_once_with_their_name_and_the_batch_they_need():
    model = deconvolve(nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.Conv2d(16, 16, 3, padding=1)), block=16)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(2):
            model.train()(torch.randn(2, 3, 12, 12))
    messages = [str(w.message) for w in caught if issubclass(w.category, RankDeficientWarning)]
    # 4x4 patches sampled per 12x12 image at stride 3: layer '0' has 32 rows for 27 features (fine), layer '1'
    # 32 rows for 144 features, and needs 9 images
    assert messages == ["FastDeconv '1': 32 sampled rows per covariance for 144 features at batch 2: the statistics "
                        "are rank-deficient (eps alone fills the missing directions). A batch of at least 9 would "
                        "fill them; or use a smaller block for this layer."]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fresh = deconvolve(nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.Conv2d(16, 16, 3, padding=1)), block=16)
        fresh.train()(torch.randn(9, 3, 12, 12))  # enough rows: silent
        quiet = deconvolve(nn.Sequential(nn.Conv2d(16, 16, 3, padding=1)), block=16, rank_warning=False)
        quiet.train()(torch.randn(2, 16, 6, 6))
        models.create("resnet18", norm="nd", block=16).train()(torch.randn(2, 3, 8, 8))  # hand-built: no opt-in


def test_the_classifiers_rank_warning_counts_features():
    model = deconvolve(nn.Sequential(nn.Conv2d(3, 4, 1), nn.Flatten(), nn.Linear(64, 2)), block_fc=64)
    match = r"Delinear '2': 8 sampled rows per covariance for 64 features at batch 8.*at least 64"
    with pytest.warns(RankDeficientWarning, match=match):
        model.train()(torch.randn(8, 3, 4, 4))


# --------------------------------------------------------------------------------------
# The paper's preset
# --------------------------------------------------------------------------------------
def test_the_paper_preset_in_one_word():
    converted = deconvolve(torchvision.models.resnet18(num_classes=10), preset="paper")
    first, fc = converted.conv1, converted.fc
    assert isinstance(fc, Delinear) and fc.requested_block == 512
    assert (first.n_iter, first.freeze, first.freeze_iter) == (15, True, 100)
    assert all(m.requested_block == 64 for m in converted.modules() if isinstance(m, FastDeconv))
    assert all(
        m.n_iter == 5 and not m.freeze for m in converted.modules() if isinstance(m, FastDeconv) and m is not first
    )
    assert deconvolve(torchvision.models.resnet18(), preset="paper-imagenet").fc.requested_block == 64
    explicit = deconvolve(torchvision.models.resnet18(), preset="paper", block_fc=128, first_layer={"n_iter": 3})
    assert explicit.fc.requested_block == 128 and explicit.conv1.n_iter == 3 and not explicit.conv1.freeze
    no_classifier = deconvolve(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)), preset="paper")
    assert no_classifier[0].n_iter == 15  # the preset's classifier setting applies where there is one
    assert set(PRESETS) == {"paper", "paper-imagenet"}
    with pytest.raises(ValueError, match="unknown preset 'papers'; presets: paper, paper-imagenet"):
        deconvolve(nn.Conv2d(3, 4, 3), preset="papers")


def test_the_first_docstring_line_says_what_deconvolution_means_here():
    doc = deconvolve.__doc__
    assert doc.splitlines()[0] == (
        "Network deconvolution in place of batch normalization: whitened conv inputs, no BatchNorm."
    )
    assert "not the transposed convolution" in doc
