"""Tests of ndlib.deconvolve: BN networks turned into ND networks, ours and torchvision's.

* Small hand-made models pin the rules (geometry, weights, which layers, options, errors).
* Our architectures: ``deconvolve(create(arch, "bn"), **deconvolve_options(arch))`` is
  ``create(arch, "nd")`` layer for layer (built on the ``meta`` device: shapes only, fast).
* torchvision models we did not write, with random weights: converted, trained one step and
  evaluated on 64x64 inputs with small whitening blocks (``block=16``: the same structure as
  the default 64, smaller Newton-Schulz matrices, for speed).
"""
from __future__ import annotations

import copy
import subprocess
import sys
import warnings

import pytest
import torch
import torchvision
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

import ndlib
from ndlib import models
from ndlib.convert import CONV_OPTIONS, RemovedNorm, deconvolve, deconvolve_options
from ndlib.layers import Delinear, FastDeconv

pytestmark = pytest.mark.usefixtures("one_thread")


#: Set by ``deconvolve`` on the layers it builds (their name in the model, and the opt-in to the
#: rank warning); a hand-built layer has the class defaults.  Labels, not structure.
DECONVOLVE_LABELS = {"qualified_name", "warn_rank_deficient"}


def public_attributes(module: nn.Module) -> dict:
    """A module's plain settings (channels, kernel, stride, padding, block, n_iter, freeze, ...)."""
    plain = (bool, int, float, str, tuple, type(None))
    return {k: v for k, v in vars(module).items()
            if not k.startswith("_") and k not in DECONVOLVE_LABELS and isinstance(v, plain)}


def shape(tensor: torch.Tensor):
    return None if isinstance(tensor, nn.parameter.UninitializedTensorMixin) else tuple(tensor.shape)


def structure(model: nn.Module) -> dict:
    """Per qualified name: module type, settings, and the shapes of its own parameters and buffers.

    ``deconvolve``'s ``RemovedNorm`` counts as the ``nn.Identity`` of our hand-built ND models:
    both compute the identity, the first returns a copy (user models may change a BN's output
    in place; ours do not, ``test_our_nd_models_need_no_copy_for_removed_norms``)."""
    return {
        name: (
            "Identity" if isinstance(m, RemovedNorm) else type(m).__name__,
            public_attributes(m),
            {k: (shape(p), p.requires_grad) for k, p in m.named_parameters(recurse=False)},
            {k: shape(b) for k, b in m.named_buffers(recurse=False)},
        )
        for name, m in model.named_modules()
    }


def small_cnn(bias: bool = False) -> nn.Sequential:
    """conv-BN-ReLU x2, pool, linear head: the smallest model with every convertible kind."""
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=bias), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, stride=2, padding=1, bias=bias), nn.BatchNorm2d(8), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4),
    )


# --------------------------------------------------------------------------------------
# The conversion rules
# --------------------------------------------------------------------------------------
def test_every_conv_keeps_its_geometry():
    """Stride, padding (ints, 'valid', symmetric 'same'), dilation and groups carry over: a fresh
    conversion (running mean 0, running whitening I) computes exactly the original conv stack."""
    torch.manual_seed(0)
    original = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=2, dilation=2),
        nn.Conv2d(8, 8, 3, stride=(2, 1), padding=1, groups=4, bias=False),
        nn.Conv2d(8, 8, 5, padding="same", dilation=2, groups=8),
        nn.Conv2d(8, 6, 1, padding="valid", bias=False),
        nn.Conv2d(6, 6, (3, 3), stride=2, padding=(0, 0)),
    ).eval()
    converted = deconvolve(original).eval()
    assert all(isinstance(m, FastDeconv) for m in converted)
    for old, new in zip(original, converted):
        assert (new.in_channels, new.out_channels, new.kernel_size, new.stride, new.dilation, new.groups) == (
            old.in_channels, old.out_channels, old.kernel_size, old.stride, old.dilation, old.groups)
        assert new.bias is not None
    assert converted[2].padding == (4, 4) and converted[3].padding == (0, 0)
    x = torch.randn(2, 3, 17, 15)
    with torch.no_grad():
        torch.testing.assert_close(converted(x), original(x))


def test_batchnorms_become_identities_and_classifier_a_delinear():
    model = nn.Sequential(small_cnn(), nn.BatchNorm1d(4), nn.SyncBatchNorm(4))
    converted = deconvolve(model, block=4, block_fc=4)
    assert not any(isinstance(m, _BatchNorm) for m in converted.modules())
    assert [type(m).__name__ for m in converted[0]] == [
        "FastDeconv", "RemovedNorm", "ReLU", "FastDeconv", "RemovedNorm", "ReLU", "AdaptiveAvgPool2d", "Flatten",
        "Delinear"]
    assert isinstance(converted[1], nn.Identity) and isinstance(converted[2], nn.Identity)
    assert converted[0][8].requested_block == 4
    assert isinstance(deconvolve(model)[0][8], nn.Linear) and not isinstance(deconvolve(model)[0][8], Delinear)


def test_weights_are_the_originals_and_missing_biases_start_at_zero():
    torch.manual_seed(0)
    model = small_cnn(bias=False)
    model[3].bias = nn.Parameter(torch.randn(8))
    converted = deconvolve(model, block_fc=8)
    for i in (0, 3, 8):
        assert torch.equal(converted[i].weight, model[i].weight)
        assert converted[i].weight is not model[i].weight  # a copy: the original is untouched
    assert torch.equal(converted[0].bias, torch.zeros(8))
    assert torch.equal(converted[3].bias, model[3].bias)
    assert torch.equal(converted[8].bias, model[8].bias)
    assert isinstance(model[1], nn.BatchNorm2d) and type(model[0]) is nn.Conv2d

    same = deconvolve(model, inplace=True)
    assert same is model and model[0].weight is not None
    assert isinstance(model[0], FastDeconv) and isinstance(model[1], nn.Identity)


def test_inplace_keeps_the_parameter_objects():
    model = small_cnn(bias=True)
    weight, bias = model[0].weight, model[0].bias
    deconvolve(model, inplace=True)
    assert model[0].weight is weight and model[0].bias is bias


def test_parameter_count_drops_bn_affine_and_adds_missing_biases():
    model = small_cnn(bias=False)
    before = models.count_parameters(model)
    after = models.count_parameters(deconvolve(model, block_fc=8))
    assert after == before - 2 * (8 + 8) + (8 + 8)


def test_conversion_draws_no_random_numbers_and_keeps_device_and_dtype():
    model = small_cnn().double()
    state = torch.get_rng_state()
    converted = deconvolve(model, block_fc=8)
    assert torch.equal(torch.get_rng_state(), state)
    for m in (converted[0], converted[8]):
        assert m.weight.dtype == m.bias.dtype == m.running_mean.dtype == m.running_deconv.dtype == torch.float64
    with torch.device("meta"):
        meta = deconvolve(small_cnn(), block_fc=8)
    assert all(t.is_meta for t in meta.state_dict().values())


def test_training_mode_is_kept():
    model = small_cnn().eval()
    converted = deconvolve(model, block_fc=8)
    assert not converted.training and not converted[0].training and not converted[8].training


def test_first_layer_options_reach_the_first_registered_conv_only():
    model = small_cnn()
    converted = deconvolve(model, n_iter=4, first_layer={"n_iter": 15, "freeze": True},
                           overrides={"0": {"n_iter": 7, "eps": 1e-3}})
    first, second = converted[0], converted[3]
    assert (first.n_iter, first.freeze, first.freeze_iter, first.eps) == (15, True, 100, 1e-3)  # first_layer wins
    assert (second.n_iter, second.freeze) == (4, False)


def test_layer_options_reach_every_layer_and_the_shared_ones_the_classifier():
    options = {"eps": 1e-3, "n_iter": 4, "momentum": 0.2, "sampling_stride": 2, "grouping": "contiguous",
               "isqrt_method": "matmul"}
    if "refresh_every" in CONV_OPTIONS:
        options["refresh_every"] = 3
    converted = deconvolve(small_cnn(), block=4, block_fc=8, **options)
    for conv in (converted[0], converted[3]):
        assert conv.requested_block == 4
        assert all(getattr(conv, k) == v for k, v in options.items()), public_attributes(conv)
    head = converted[8]
    assert head.requested_block == 8 and (head.eps, head.n_iter, head.momentum) == (1e-3, 4, 0.2)
    assert not hasattr(head, "sampling_stride")


def test_classifier_is_the_last_linear_and_its_sequential_siblings():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 1)
            self.mlp = nn.Linear(8, 8)  # channels-last MLP inside the body: not the classifier
            self.head = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Dropout(), nn.Linear(16, 4))

    converted = deconvolve(Net(), block_fc=8)
    assert type(converted.mlp) is nn.Linear
    assert isinstance(converted.head[0], Delinear) and isinstance(converted.head[3], Delinear)
    resnet = deconvolve(torchvision.models.resnet18(num_classes=3), block_fc=8)
    assert isinstance(resnet.fc, Delinear)


def test_skip_by_name_or_predicate_leaves_the_subtree_alone():
    model = nn.Sequential(small_cnn(), small_cnn())
    by_name = deconvolve(model, skip=["1"])
    assert isinstance(by_name[0][0], FastDeconv) and type(by_name[1][0]) is nn.Conv2d
    assert isinstance(by_name[1][1], nn.BatchNorm2d) and isinstance(by_name[0][1], nn.Identity)
    orphaned = r"BatchNorms beside them in \['0', '1'\] are removed.*skip the parent module"
    with pytest.warns(UserWarning, match=orphaned):
        by_predicate = deconvolve(model, skip=lambda name, m: isinstance(m, nn.Conv2d) and m.stride == (2, 2))
    assert isinstance(by_predicate[0][0], FastDeconv) and type(by_predicate[0][3]) is nn.Conv2d
    assert isinstance(by_predicate[0][4], nn.Identity)  # skipping a conv does not skip its BN (hence the warning)
    with pytest.warns(UserWarning, match=r"beside them in \['0'\]"):
        assert type(deconvolve(model, skip="0.0")[0][0]) is nn.Conv2d


def test_overrides_as_a_function():
    model = nn.Sequential(nn.Conv2d(8, 8, 3, groups=8), nn.Conv2d(8, 8, 3), nn.Flatten(), nn.Linear(8, 2))
    seen = []

    def rule(name, module):
        seen.append((name, type(module).__name__))
        return {"n_iter": 3} if module.groups > 1 else None

    converted = deconvolve(model, block_fc=8, overrides=rule)
    assert converted[0].n_iter == 3 and converted[1].n_iter == 5
    assert seen == [("0", "Conv2d"), ("1", "Conv2d")]  # convs only: the classifier takes block_fc


def test_a_module_used_twice_is_converted_once_everywhere():
    shared = nn.Conv2d(4, 4, 3, padding=1)
    model = nn.Sequential(shared, nn.ReLU(), shared)
    converted = deconvolve(model)
    assert isinstance(converted[0], FastDeconv) and converted[0] is converted[2]


def test_a_single_layer_converts():
    assert isinstance(deconvolve(nn.Conv2d(3, 4, 3)), FastDeconv)
    assert isinstance(deconvolve(nn.BatchNorm2d(4)), nn.Identity)


def test_other_norms_stay_with_one_warning():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.GroupNorm(2, 8), nn.Conv2d(8, 8, 1), nn.LayerNorm([8, 1, 1]))
    match = r"kept 2 norm layers that are not BatchNorm \(GroupNorm x1, LayerNorm x1\)"
    with pytest.warns(UserWarning, match=match) as caught:
        converted = deconvolve(model)
    assert len(caught) == 1
    assert isinstance(converted[1], nn.GroupNorm) and isinstance(converted[2], FastDeconv)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        deconvolve(model, skip=["1", "3"])  # skipped: no warning


# --------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"block": 0}, ValueError, "block must be a positive int"),
        ({"block": 2.5}, TypeError, "block must be a positive int"),
        ({"block": True}, TypeError, "block must be a positive int"),
        ({"block_fc": -1}, ValueError, "block_fc must be a positive int"),
        ({"inplace": "yes"}, TypeError, "inplace must be True or False"),
        ({"n_iters": 3}, TypeError, r"unknown option\(s\) \['n_iters'\].*valid options: block, eps, n_iter"),
        ({"first_layer": 15}, TypeError, "first_layer must be a dict"),
        ({"first_layer": {"iters": 15}}, TypeError, r"unknown option\(s\) \['iters'\] in first_layer"),
        ({"skip": ["3.weight"]}, ValueError, "skip names '3.weight'.*not a module"),
        ({"skip": ["03"]}, ValueError, "skip names '03'.*Did you mean .*'3'"),
        ({"skip": 3}, TypeError, "skip must be a module name"),
        ({"skip": [""]}, TypeError, "skip names must be non-empty str"),
        ({"overrides": {"9": {"n_iter": 1}}}, ValueError, "overrides names '9'"),
        ({"overrides": {"1": {"n_iter": 1}}}, ValueError, r"overrides names \['1'\], which are not convs converted"),
        ({"overrides": {"0": 3}}, TypeError, r"overrides\['0'\] must be a dict"),
        ({"overrides": lambda n, m: 3}, TypeError, "returned int"),
        ({"overrides": [1]}, TypeError, "overrides must be a dict"),
        ({"eps": -1.0}, ValueError, "cannot build the FastDeconv for '0'.*eps must be a positive"),
        (
            {"block_fc": 4, "overrides": {"8": {"block": 2}}},
            ValueError,
            r"overrides names \['8'\], which are not convs",
        ),
        ({"overrides": {"3": {"iters": 2}}}, TypeError, r"unknown option\(s\) \['iters'\] in overrides for '3'"),
    ],
)
def test_bad_arguments_name_the_problem(kwargs, error, message):
    with pytest.raises(error, match=message):
        deconvolve(small_cnn(), **kwargs)


def test_not_a_module():
    with pytest.raises(TypeError, match="expects a torch.nn.Module"):
        deconvolve("resnet18")


def test_nothing_to_convert():
    with pytest.raises(ValueError, match="has no nn.Conv2d and no BatchNorm layer to convert"):
        deconvolve(nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2)), block_fc=4)
    with pytest.raises(ValueError, match="outside the 9 skipped modules"):
        deconvolve(small_cnn(), skip=lambda name, m: True)
    with pytest.raises(ValueError, match="already holds 2 FastDeconv layers"):
        deconvolve(deconvolve(small_cnn()))


@pytest.mark.parametrize(
    "layer, message",
    [
        (nn.ConvTranspose2d(8, 8, 3), "ConvTranspose2d: FastDeconv replaces nn.Conv2d only"),
        (nn.Conv1d(8, 8, 3), "Conv1d: FastDeconv replaces nn.Conv2d only"),
        (nn.Conv3d(8, 8, 3), "Conv3d"),
        (nn.LazyConv2d(8, 3), "lazy module.*run one forward pass"),
        (nn.LazyBatchNorm2d(), "lazy module"),
        (nn.Conv2d(8, 8, 3, padding=1, padding_mode="reflect"), "padding_mode='reflect'"),
        (nn.Conv2d(8, 8, (1, 3)), r"kernel \(1, 3\): FastDeconv needs a square kernel"),
        (nn.Conv2d(8, 8, 4, padding="same"), "padding='same' with an even kernel extent"),
        (type("MyConv", (nn.Conv2d,), {})(8, 8, 3), r"subclass of nn.Conv2d \(MyConv\)"),
        (nn.utils.parametrizations.weight_norm(nn.Conv2d(8, 8, 3)), "subclass of nn.Conv2d"),
    ],
)
def test_unconvertible_layers_are_named_with_the_skip_option(layer, message):
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Sequential(nn.ReLU(), layer))
    before = structure(model)
    with pytest.raises(ValueError, match=f"cannot be converted: 2.1 .*{message}.*skip="):
        deconvolve(model, inplace=True)
    assert structure(model) == before, "a failed conversion must change nothing"
    converted = deconvolve(model, skip=["2.1"], inplace=True)
    assert isinstance(converted[0], FastDeconv) and converted[2][1] is layer


def test_a_model_that_cannot_be_copied_asks_for_inplace():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.LazyBatchNorm2d())
    with pytest.raises(ValueError, match="cannot copy the model.*pass inplace=True"):
        deconvolve(model, skip=["1"])


def test_hooked_layers_are_refused():
    model = small_cnn()
    model[3].register_forward_hook(lambda m, i, o: o)
    with pytest.raises(ValueError, match="3 .*it has hooks"):
        deconvolve(model)


def test_first_layer_needs_a_converted_first_conv():
    with pytest.raises(ValueError, match="first conv '0' is not converted.*drop first_layer"):
        deconvolve(small_cnn(), skip=["0"], first_layer={"n_iter": 15})
    with pytest.raises(ValueError, match="first_layer was given but the model has no nn.Conv2d"):
        deconvolve(nn.Sequential(nn.BatchNorm1d(4)), first_layer={"n_iter": 15})


def test_block_fc_needs_a_classifier():
    with pytest.raises(ValueError, match="block_fc was given but the model has no nn.Linear"):
        deconvolve(nn.Sequential(nn.Conv2d(3, 4, 1)), block_fc=4)
    with pytest.raises(ValueError, match=r"block_fc was given but its classifier \['8'\] is skipped"):
        deconvolve(small_cnn(), block_fc=4, skip=["8"])


def test_import_is_cheap_and_exported():
    assert "deconvolve" in ndlib.__all__ and ndlib.deconvolve is deconvolve
    subprocess.run([sys.executable, "-c", "import sys, ndlib; assert 'torch' not in sys.modules"], check=True)


# --------------------------------------------------------------------------------------
# Our architectures: BN model + deconvolve == the hand-built ND model
# --------------------------------------------------------------------------------------
ARCHS = models.available(extras=True)  # Table 1 (+ our extra EfficientNet variant) and Table 2


@pytest.mark.parametrize("arch", ARCHS)
def test_deconvolve_of_the_bn_model_is_the_nd_model(arch):
    """Same module types at the same names, same settings (first layer, per-layer n_iter and
    block, classifier block), same parameter and buffer shapes, same parameter count."""
    with torch.device("meta"):
        bn = models.create(arch, norm="bn")
        nd = models.create(arch, norm="nd")
        converted = deconvolve(bn, **deconvolve_options(arch))
    assert structure(converted) == structure(nd)
    assert models.count_parameters(converted) == models.count_parameters(nd)


@pytest.mark.parametrize("arch", ["mobilenetv2", "resnext29", "efficientnetb0", "vgg16"])
def test_deconvolve_options_take_create_options(arch):
    options = {"block": 8, "block_fc": 16, "n_iter": 4, "eps": 1e-3, "sampling_stride": 2}
    with torch.device("meta"):
        converted = deconvolve(models.create(arch, norm="bn"), **deconvolve_options(arch, **options))
        nd = models.create(arch, norm="nd", **options)
    assert structure(converted) == structure(nd)


def test_deconvolve_options_name_each_exception_once():
    assert set(deconvolve_options("resnet18")) == {"block", "block_fc", "first_layer"}
    assert deconvolve_options("vgg16")["first_layer"] == dict(models.FIRST_LAYER_DECONV)
    assert deconvolve_options("efficientnetb0")["skip"] == ["blocks"]
    assert "skip" not in deconvolve_options("efficientnetb0_allnd")
    mobilenet = deconvolve_options("mobilenetv2")["overrides"]
    assert mobilenet["blocks.0.depthwise.0"] == {"n_iter": 1}
    assert mobilenet["blocks.1.project.0"] == {"block": 16, "n_iter": 1}
    resnext = deconvolve_options("resnext29")["overrides"]
    assert len(resnext) == 9 and all(options == {"n_iter": 3} for options in resnext.values())  # the grouped convs
    assert deconvolve_options("resnet18_imagenet")["block_fc"] == 64
    with pytest.raises(ValueError, match="unknown model"):
        deconvolve_options("resnet19")
    with pytest.raises(TypeError, match=r"unknown option\(s\) \['blok'\]"):
        deconvolve_options("vgg16", blok=8)


def test_converted_and_hand_built_nd_models_compute_the_same():
    """pnasneta with real tensors: the hand-built ND model loads the converted one's state dict
    (strict: same keys and shapes) and then gives the same training-mode outputs."""
    torch.manual_seed(0)
    options = {"block": 8, "block_fc": 16}
    converted = deconvolve(models.create("pnasneta", norm="bn"), **deconvolve_options("pnasneta", **options))
    nd = models.create("pnasneta", norm="nd", **options)
    nd.load_state_dict(converted.state_dict())
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(converted(x), nd(x), rtol=0, atol=0)


def replay_initialisation(model: nn.Module, rng_state: torch.Tensor) -> nn.Module:
    """Draw ``model``'s initial weights again from ``rng_state``: every layer's
    ``reset_parameters()`` in module registration order (our constructors build the layers in
    that order).  The conclusion in ndlib/models/README.md rests on this."""
    torch.set_rng_state(rng_state)
    for m in model.modules():
        if hasattr(m, "reset_parameters") and next(m.parameters(recurse=False), None) is not None:
            m.reset_parameters()
    return model


REPLAY_FAST = {"pnasneta", "efficientnetb0", "mobilenetv2"}  # the others: seconds of CPU init each, slow


@pytest.mark.parametrize("arch", [a if a in REPLAY_FAST else pytest.param(a, marks=pytest.mark.slow)
                                  for a in models.available(table=1, extras=True)])
def test_initial_weights_of_the_nd_models_need_a_replay(arch):
    """A hand-built ND model draws weight, bias, weight, bias, ...; the BN model weight, weight,
    ... So converting the BN model built from a seed does NOT give the ND model's initial
    weights; replaying the draws in module order after the conversion does, bit for bit, and
    leaves the RNG where the direct construction leaves it.  (Table 1 models; the ImageNet ones
    also need their post-construction init replayed, see ndlib/models/README.md.)"""
    torch.manual_seed(5)
    start = torch.get_rng_state()
    nd = models.create(arch, norm="nd")
    end = torch.get_rng_state()
    torch.set_rng_state(start)
    converted = deconvolve(models.create(arch, norm="bn"), **deconvolve_options(arch))
    nd_state, converted_state = nd.state_dict(), converted.state_dict()
    assert any(not torch.equal(nd_state[k], converted_state[k]) for k in nd_state)
    replay_initialisation(converted, start)
    assert all(torch.equal(nd_state[k], v) for k, v in converted.state_dict().items())
    assert torch.equal(torch.get_rng_state(), end)


# --------------------------------------------------------------------------------------
# Models we did not write: torchvision, random weights
# --------------------------------------------------------------------------------------
TORCHVISION = ["resnet50", "resnext50_32x4d", "densenet121", "vgg11_bn", "mobilenet_v3_small",
               "efficientnet_b0", "regnet_y_400mf", "convnext_tiny",
               "shufflenet_v2_x0_5", "mnasnet0_5", "mobilenet_v2", "regnet_x_400mf"]
SLOW_TORCHVISION = {"resnext50_32x4d", "vgg11_bn"}  # 5-10 s each on one busy core
TV_PARAMS = [pytest.param(n, marks=pytest.mark.slow) if n in SLOW_TORCHVISION else n for n in TORCHVISION]
#: Small blocks, and one Newton-Schulz iteration for depthwise convs (the paper's MobileNetV2
#: setting): ConvNeXt's 7x7 depthwise convs otherwise spend seconds in batched 49x49 products.
TV_OPTIONS = {"block": 16, "block_fc": 16, "first_layer": {"n_iter": 15, "freeze": True},
              "overrides": lambda name, m: {"n_iter": 1} if m.groups == m.in_channels > 1 else None}


def torchvision_model(name: str) -> nn.Module:
    return getattr(torchvision.models, name)(weights=None, num_classes=10)


@pytest.mark.parametrize("name", TV_PARAMS)
@pytest.mark.filterwarnings("ignore::ndlib.layers.RankDeficientWarning")  # batch 2 on purpose: small and fast
def test_torchvision_models_train_and_evaluate_after_conversion(name):
    torch.manual_seed(0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = deconvolve(torchvision_model(name), inplace=True, **TV_OPTIONS)
    other_norms = name == "convnext_tiny"  # LayerNorm: kept, with one warning
    assert [str(w.message).split(" (")[0] for w in caught] == (
        ["deconvolve: kept 23 norm layers that are not BatchNorm"] if other_norms else [])
    assert not any(isinstance(m, _BatchNorm) for m in model.modules())
    assert all(isinstance(m, FastDeconv) for m in model.modules() if isinstance(m, nn.Conv2d))
    first = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    assert first.in_channels == 3 and first.n_iter == 15 and first.freeze

    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    model.train()
    logits = model(x)
    assert logits.shape == (2, 10) and torch.isfinite(logits).all()
    nn.functional.cross_entropy(logits, torch.tensor([0, 3])).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"parameters without a gradient: {missing[:5]}"
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())

    model.eval()  # running statistics only: a sample's output cannot depend on the rest of the batch
    # In float64: in float32 the CPU may pick other convolution kernels for batch 1 than for batch 2
    # (RegNet's logits differed by 4e-4 on an AMD EPYC with AVX-512), which says nothing about ND.
    probe, x64 = copy.deepcopy(model).double(), x.double()
    with torch.no_grad():
        batch64 = probe(x64)
        for i in range(len(x)):
            torch.testing.assert_close(probe(x64[i : i + 1]), batch64[i : i + 1], rtol=1e-9, atol=1e-9)
        batch = model(x)

    with warnings.catch_warnings():  # a state_dict round trip into a fresh conversion: same eval function
        warnings.simplefilter("ignore")
        fresh = deconvolve(torchvision_model(name), **TV_OPTIONS)
    fresh.load_state_dict(model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(fresh.eval()(x), batch, rtol=0, atol=0)


def expected_parameter_count(model: nn.Module) -> int:
    """The original's count minus BN's affine (ND has no affine after the conv: the conv's own
    weight and bias can absorb any per-channel scale and shift) plus one bias per bias-free conv
    (a deconvolution layer folds the whitening's mean shift into its bias, and the paper's ND
    layers learn one)."""
    bn_affine = sum(
        p.numel() for m in model.modules() if isinstance(m, _BatchNorm) for p in m.parameters(recurse=False)
    )
    new_biases = sum(m.out_channels for m in model.modules() if type(m) is nn.Conv2d and m.bias is None)
    return models.count_parameters(model) - bn_affine + new_biases


def test_torchvision_parameter_counts():
    rows = {}
    for name in TORCHVISION:
        # meta: shapes only (regnet computes its widths from tensor data, so it is built on the CPU)
        with torch.device("cpu" if name.startswith("regnet") else "meta"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            original = torchvision_model(name)
            expected = expected_parameter_count(original)
            converted = deconvolve(original, **TV_OPTIONS)
        rows[name] = (models.count_parameters(original), models.count_parameters(converted), expected)
    assert all(got == expected for _, got, expected in rows.values()), rows
    # 53 BNs and 53 bias-free convs, 26,560 channels
    assert rows["resnet50"][1] == rows["resnet50"][0] - 2 * 26560 + 26560
