"""Tests of ndlib.models: every registered architecture in every variant.

Speed: CIFAR models run on 32x32 inputs, the ImageNet models on 64x64 (they pool
adaptively, so the architecture is unchanged; 224x224 runs in the slow test).  The ND
variants in the per-model tests use small whitening blocks (``ND_TEST_OPTIONS``): the
structure is the same, the Newton-Schulz matrices are 8x smaller per side; the default
blocks are exercised by ``test_nd_default_options_forward`` (VGG-16) and the slow tests.
"""
from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from ndlib import models, published
from ndlib.layers import Delinear, FastDeconv
from ndlib.models.factory import DECONV_OPTIONS, LayerFactory
from ndlib.models.mobilenetv2 import DEPTHWISE_DECONV
from ndlib.models.params import NET_SIZE_NOTES, NET_SIZE_TOLERANCE_M
from ndlib.models.resnext import GROUPED_CONV_DECONV

CIFAR = ["vgg16", "resnet18", "preact18", "densenet121", "resnext29", "mobilenetv2", "dpn92", "pnasneta", "senet18",
         "efficientnetb0"]
IMAGENET = ["vgg11_imagenet", "resnet18_imagenet", "densenet121_imagenet"]
EXTRAS = ["efficientnetb0_allnd"]  # our variants, not cells of the paper's tables
VARIANTS = [(name, norm) for name in CIFAR + EXTRAS + IMAGENET for norm in models.get_spec(name).norms]
VARIANT_IDS = [f"{name}-{norm}" for name, norm in VARIANTS]

#: Small whitening blocks for the per-model ND tests (speed); see the module docstring.
ND_TEST_OPTIONS = {"block": 8, "block_fc": 16}
NUM_CLASSES = 7  # not the default 10, so the head is really sized by num_classes

#: Our parameter counts, 10-class heads (pinned: a change here is a change of architecture).
EXPECTED_PARAMS = {
    ("vgg16", "bn"): 14724042,
    ("vgg16", "nd"): 14719818,
    ("resnet18", "bn"): 11173962,
    ("resnet18", "nd"): 11169162,
    ("preact18", "bn"): 11171146,
    ("preact18", "nd"): 11169162,
    ("densenet121", "bn"): 6956298,
    ("densenet121", "nd"): 6883018,
    ("resnext29", "bn"): 4774218,
    ("resnext29", "nd"): 4761610,
    ("mobilenetv2", "bn"): 2296922,
    ("mobilenetv2", "nd"): 2279378,
    ("dpn92", "bn"): 34236634,
    ("dpn92", "nd"): 34179970,
    ("pnasneta", "bn"): 130646,
    ("pnasneta", "nd"): 128226,
    ("senet18", "bn"): 11260354,
    ("senet18", "nd"): 11258242,
    ("efficientnetb0", "bn"): 2912089,
    ("efficientnetb0", "nd"): 2912057,
    ("efficientnetb0_allnd", "bn"): 2912089,
    ("efficientnetb0_allnd", "nd"): 2892193,
    ("vgg11_imagenet", "none"): 128807306,
    ("vgg11_imagenet", "bn"): 128810058,
    ("vgg11_imagenet", "nd"): 128807306,
    ("resnet18_imagenet", "bn"): 11181642,
    ("resnet18_imagenet", "nd"): 11176842,
    ("densenet121_imagenet", "bn"): 6964106,
    ("densenet121_imagenet", "nd"): 6890698,
}


def build(name: str, norm: str, num_classes: int = NUM_CLASSES, **options) -> nn.Module:
    if norm == "nd" and not options:
        options = ND_TEST_OPTIONS
    return models.create(name, num_classes=num_classes, norm=norm, **options)


def batch_for(name: str, size: int | None = None) -> torch.Tensor:
    side = size or models.get_spec(name).test_input_size
    return torch.randn(2, 3, side, side, generator=torch.Generator().manual_seed(1))


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def table() -> "pd.DataFrame":  # noqa: F821
    return models.parameter_table()


# --------------------------------------------------------------------------------------
# Registry and API
# --------------------------------------------------------------------------------------
def test_available_lists_both_tables_in_paper_order():
    assert models.available(table=1) == CIFAR
    assert models.available(table=2) == IMAGENET
    assert models.available() == CIFAR + IMAGENET


def test_extra_variants_are_listed_only_on_request():
    assert models.available(table=1, extras=True) == CIFAR + EXTRAS
    assert models.available(extras=True) == CIFAR + EXTRAS + IMAGENET
    assert all(models.get_spec(name).extra for name in EXTRAS)
    assert not any(models.get_spec(name).extra for name in CIFAR + IMAGENET)


def test_cifar_names_match_published_arch_column():
    published_archs = list(dict.fromkeys(published.paper_table1()["arch"]))
    assert published_archs == models.available(table=1)


def test_available_rejects_unknown_table():
    with pytest.raises(ValueError, match="table"):
        models.available(table=3)


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match="unknown model 'resnet19'.*vgg16.*densenet121_imagenet"):
        models.create("resnet19")


@pytest.mark.parametrize("norm", ["gn", "BN", "none", None])
def test_unknown_or_unavailable_norm_lists_valid_norms(norm):
    with pytest.raises(ValueError, match=r"valid norms for it: \('bn', 'nd'\)"):
        models.create("resnet18", norm=norm)


def test_none_norm_only_for_vgg11_imagenet():
    names = [name for name in models.available() if "none" in models.get_spec(name).norms]
    assert names == ["vgg11_imagenet"]


@pytest.mark.parametrize("norm", ["bn", "none"])
def test_deconv_options_with_non_nd_norm_are_an_error(norm):
    name = "vgg11_imagenet"
    with pytest.raises(ValueError, match=r"\['block'\].*only norm='nd'"):
        models.create(name, norm=norm, block=16)
    with pytest.raises(ValueError, match="block_fc.*only norm='nd'"):
        models.create(name, norm=norm, block_fc=64)


def test_unknown_deconv_option_names_it():
    with pytest.raises(TypeError, match=r"unknown deconvolution option\(s\) \['blok', 'iters'\]"):
        models.create("vgg16", norm="nd", blok=8, iters=3)


@pytest.mark.parametrize(
    "options, message",
    [({"block": 0}, "block"), ({"eps": -1.0}, "eps"), ({"block_fc": 0}, "block_fc"),
     ({"grouping": "random"}, "grouping")],
)
def test_bad_deconv_option_values_raise(options, message):
    with pytest.raises(ValueError, match=message):
        models.create("pnasneta", norm="nd", **options)


@pytest.mark.parametrize("num_classes", [0, -3, 2.5, True])
def test_bad_num_classes_raise(num_classes):
    with pytest.raises(ValueError, match="num_classes"):
        models.create("pnasneta", num_classes=num_classes)


def test_factory_rejects_unknown_kind():
    with pytest.raises(ValueError, match="norm must be one of"):
        LayerFactory("group")


# --------------------------------------------------------------------------------------
# Every model, every variant
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, norm", VARIANTS, ids=VARIANT_IDS)
def test_forward_backward_eval(name, norm):
    torch.manual_seed(0)
    model = build(name, norm)
    x = batch_for(name)

    model.train()
    logits = model(x)
    assert logits.shape == (2, NUM_CLASSES)
    assert torch.isfinite(logits).all()
    loss = nn.functional.cross_entropy(logits, torch.tensor([0, 3]))
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"parameters without a gradient (unused modules?): {missing[:5]}"
    bad = [n for n, p in model.named_parameters() if not torch.isfinite(p.grad).all()]
    assert not bad, f"non-finite gradients in {bad[:5]}"

    buffers = {n: b.clone() for n, b in model.named_buffers()}
    model.eval()
    with torch.no_grad():
        first = model(x)
        second = model(x)
    assert first.shape == (2, NUM_CLASSES)
    assert torch.isfinite(first).all()
    assert torch.equal(first, second), "eval mode must be deterministic"
    changed = [n for n, b in model.named_buffers() if not torch.equal(b, buffers[n])]
    assert not changed, f"eval mode changed buffers {changed[:5]}"


@pytest.mark.parametrize("name, norm", VARIANTS, ids=VARIANT_IDS)
def test_layer_types_match_the_variant(name, norm):
    with torch.device("meta"):
        model = models.create(name, norm=norm)
    mods = list(model.modules())
    convs = [m for m in mods if isinstance(m, nn.Conv2d)]
    linears = [m for m in mods if isinstance(m, nn.Linear)]
    batchnorms = [m for m in mods if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    deconvs = [m for m in mods if isinstance(m, (FastDeconv, Delinear))]
    assert convs and linears
    if (name, norm) == ("efficientnetb0", "nd"):  # the paper's: BN blocks (test_efficientnet_nd_is_the_papers_network)
        assert isinstance(model.stem[0], FastDeconv) and isinstance(model.classifier, Delinear)
    elif norm == "nd":
        assert not batchnorms, "an ND model must contain no BatchNorm"
        assert all(isinstance(m, FastDeconv) for m in convs), "every conv of an ND model must be a FastDeconv"
        assert all(isinstance(m, Delinear) for m in linears), "every linear of an ND model must be a Delinear"
        assert all(m.bias is not None for m in convs + linears), "deconvolution layers carry a bias"
    else:
        assert not deconvs, f"a {norm} model must contain no deconvolution layers"
        assert bool(batchnorms) == (norm == "bn")
    # exactly one conv reads the RGB input: the stem
    assert sum(m.in_channels == 3 for m in convs) == 1


def test_nd_default_options_forward():
    """The ND path with the paper's default blocks (64, block_fc 512) on a real 32x32 batch."""
    torch.manual_seed(0)
    model = models.create("vgg16", norm="nd")
    logits = model(batch_for("vgg16"))
    assert logits.shape == (2, 10) and torch.isfinite(logits).all()
    assert model.features[3].block == 64 and model.classifier.block == 512


def test_same_seed_same_weights():
    torch.manual_seed(3)
    a = models.create("pnasneta", norm="nd")
    torch.manual_seed(3)
    b = models.create("pnasneta", norm="nd")
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(p, q), name


# --------------------------------------------------------------------------------------
# Deconvolution options, first layer, per-layer settings
# --------------------------------------------------------------------------------------
def _stem(model: nn.Module) -> FastDeconv:
    return next(m for m in model.modules() if isinstance(m, FastDeconv) and m.in_channels == 3)


def test_deconv_options_reach_every_layer():
    options = {"block": 16, "eps": 1e-3, "n_iter": 4, "momentum": 0.2, "sampling_stride": 2, "grouping": "contiguous"}
    with torch.device("meta"):
        model = models.create("resnet18", norm="nd", block_fc=128, **options)
    deconvs = [m for m in model.modules() if isinstance(m, FastDeconv)]
    assert len(deconvs) == 20  # 17 3x3 convs + 3 projection shortcuts
    for m in deconvs:
        assert m.requested_block == 16 and m.eps == 1e-3 and m.n_iter == 4
        assert m.momentum == 0.2 and m.sampling_stride == 2 and m.grouping == "contiguous"
    head = model.classifier
    assert isinstance(head, Delinear)
    assert head.requested_block == 128 and head.eps == 1e-3 and head.n_iter == 4 and head.momentum == 0.2


def test_deconv_option_names_come_from_the_layers():
    """Every keyword option of FastDeconv (except construction details) passes through create."""
    import inspect

    keyword_only = [
        p.name for p in inspect.signature(FastDeconv.__init__).parameters.values() if p.kind is p.KEYWORD_ONLY
    ]
    assert set(DECONV_OPTIONS) == set(keyword_only) - {"padding_mode", "device", "dtype"}
    if "isqrt_method" in DECONV_OPTIONS:  # newer ndlib.layers: the option reaches convs and classifier
        with torch.device("meta"):
            model = models.create("pnasneta", norm="nd", isqrt_method="matmul")
        layers = [m for m in model.modules() if isinstance(m, (FastDeconv, Delinear))]
        assert layers and all(m.isqrt_method == "matmul" for m in layers)


@pytest.mark.parametrize("name", CIFAR + IMAGENET)
def test_first_layer_settings_follow_the_registry(name):
    spec = models.get_spec(name)
    with torch.device("meta"):
        stem = _stem(models.create(name, norm="nd", n_iter=6))
    if spec.first_layer is None:
        assert stem.n_iter == 6 and not stem.freeze
    else:
        assert stem.n_iter == spec.first_layer["n_iter"]
        assert stem.freeze is True and stem.freeze_iter == spec.first_layer["freeze_iter"]


def test_first_layer_constants_match_the_public_code():
    """Where the paper's code makes the RGB conv special (see ndlib.models.factory)."""
    special_15 = {"vgg16", "senet18", "vgg11_imagenet", "resnet18_imagenet", "densenet121_imagenet"}
    special_10 = {"preact18", "resnext29", "mobilenetv2", "dpn92", "pnasneta", "efficientnetb0"}
    plain = {"resnet18", "densenet121"}
    for name in models.available():
        first = models.get_spec(name).first_layer
        expected = (
            dict(models.FIRST_LAYER_DECONV) if name in special_15
            else dict(models.FIRST_LAYER_DECONV_10) if name in special_10
            else None
        )
        assert (None if first is None else dict(first)) == expected, name
    assert special_15 | special_10 | plain == set(models.available())
    assert dict(models.FIRST_LAYER_DECONV) == {"n_iter": 15, "freeze": True, "freeze_iter": 100}


def test_per_layer_public_code_settings():
    with torch.device("meta"):
        resnext = models.create("resnext29", norm="nd", n_iter=5)
        mobilenet = models.create("mobilenetv2", norm="nd", n_iter=5)
    grouped = [m for m in resnext.modules() if isinstance(m, FastDeconv) and m.groups > 1]
    assert len(grouped) == 9 and all(m.n_iter == GROUPED_CONV_DECONV["n_iter"] for m in grouped)
    depthwise = [m for m in mobilenet.modules() if isinstance(m, FastDeconv) and m.groups > 1]
    assert len(depthwise) == 17 and all(m.n_iter == DEPTHWISE_DECONV["n_iter"] for m in depthwise)
    projections = [b.project[0] for b in mobilenet.blocks]
    assert all(p.n_iter == 1 and p.requested_block == b.expand[0].in_channels
               for p, b in zip(projections, mobilenet.blocks))


@pytest.mark.parametrize("name, new_first", [("densenet121", True), ("densenet121_imagenet", False)])
def test_densenet_concatenation_order_follows_the_public_code(name, new_first):
    """Public CIFAR DenseNet: ``cat(new, x)``; public ImageNet DenseNet: ``cat(x, new)``.  The order
    decides which channels a deconvolution layer whitens together, so it must match."""
    from ndlib.models.densenet import DenseLayer

    torch.manual_seed(0)
    model = models.create(name, norm="bn").eval()
    layer = next(m for m in model.modules() if isinstance(m, DenseLayer))
    x = torch.randn(2, layer.conv1.in_channels, 4, 4)
    with torch.no_grad():
        out = layer(x)
    kept = out[:, -x.shape[1]:] if new_first else out[:, : x.shape[1]]
    assert torch.equal(kept, x)


@pytest.mark.parametrize("name, block_fc", [("vgg16", 512), ("resnet18_imagenet", 64)])
def test_default_block_fc_by_table(name, block_fc):
    with torch.device("meta"):
        model = models.create(name, norm="nd")
    heads = [m for m in model.modules() if isinstance(m, Delinear)]
    assert heads and all(m.requested_block == block_fc for m in heads)


def test_factory_options_are_read_only():
    factory = LayerFactory("nd", {"block": 8})
    with pytest.raises(TypeError):
        factory.deconv_options["block"] = 4  # type: ignore[index]
    assert set(DECONV_OPTIONS) >= {"block", "eps", "n_iter", "momentum", "sampling_stride", "freeze", "freeze_iter"}


# --------------------------------------------------------------------------------------
# Parameter counts
# --------------------------------------------------------------------------------------
def test_parameter_counts_are_pinned(table):
    ours = {(row.arch, row.norm): row.params for row in table.itertuples()}
    assert ours == EXPECTED_PARAMS


def test_count_parameters_excludes_buffers():
    model = models.create("pnasneta", norm="bn")
    assert models.count_parameters(model) == sum(p.numel() for p in model.parameters())
    assert sum(b.numel() for b in model.buffers()) > 0
    with pytest.raises(TypeError):
        models.count_parameters("pnasneta")


def test_nd_counts_match_the_papers_net_size(table):
    nd = table[(table.table == 1) & (table.norm == "nd") & ~table.arch.isin(EXTRAS)].set_index("arch")
    sizes = published.net_sizes()
    assert set(nd.index) == set(sizes)
    for arch, row in nd.iterrows():
        diff = row.params / 1e6 - sizes[arch]
        if arch in NET_SIZE_NOTES:
            assert abs(diff) > NET_SIZE_TOLERANCE_M and row.note == NET_SIZE_NOTES[arch]
        else:
            assert abs(diff) <= NET_SIZE_TOLERANCE_M, f"{arch}: ours {row.params} vs paper {sizes[arch]}M"
            assert row.within_tolerance and row.note == ""
    assert NET_SIZE_NOTES == {}


def test_efficientnet_nd_is_the_papers_network(table):
    """The public code's ND EfficientNet: a deconvolved stem (10 iterations, frozen) and a
    Delinear classifier around the BN model's blocks; 2,912,057 = BN - 2*32 (stem BN) + 32
    (stem bias) = the paper's 2.91M."""
    bn = int(table[(table.arch == "efficientnetb0") & (table.norm == "bn")].params.iloc[0])
    assert bn - 2 * 32 + 32 == EXPECTED_PARAMS["efficientnetb0", "nd"] == 2_912_057
    with torch.device("meta"):
        paper = models.create("efficientnetb0", norm="nd")
        ours = models.create("efficientnetb0_allnd", norm="nd")
    deconvs = [name for name, m in paper.named_modules() if isinstance(m, FastDeconv)]
    assert deconvs == ["stem.0"]
    assert paper.stem[0].n_iter == 10 and paper.stem[0].freeze
    assert isinstance(paper.stem[1], nn.Identity) and isinstance(paper.classifier, Delinear)
    block_norms = [m for m in paper.blocks.modules() if isinstance(m, nn.BatchNorm2d)]
    bn_blocks = models.create("efficientnetb0").blocks
    assert len(block_norms) == sum(isinstance(m, nn.BatchNorm2d) for m in bn_blocks.modules())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in ours.modules())
    assert all(isinstance(m, (FastDeconv, Delinear)) or not isinstance(m, (nn.Conv2d, nn.Linear))
               for m in ours.modules())


def test_efficientnet_stride2_block_adds_its_ungated_output():
    """Public-code wiring: a stride-2 block returns ``h * s + h``; stride 1 ``h * s + shortcut(x)``."""
    from ndlib.models.efficientnet import STRIDE2_ADDS_UNGATED, MBConvSE

    assert STRIDE2_ADDS_UNGATED
    torch.manual_seed(0)
    block = MBConvSE(LayerFactory("bn"), 16, 24, 6, stride=2).eval()
    x = torch.randn(2, 16, 8, 8)
    with torch.no_grad():
        h = block.project(block.depthwise(block.expand(x)))
        torch.testing.assert_close(block(x), block.gate(h) + h)
        one = MBConvSE(LayerFactory("bn"), 16, 24, 6, stride=1).eval()
        h1 = one.project(one.depthwise(one.expand(x)))
        torch.testing.assert_close(one(x), one.gate(h1) + one.shortcut(x))


def test_mobilenetv2_and_efficientnet_share_one_inverted_residual_block():
    """One block (``ndlib.models.blocks``): MobileNetV2's without a gate, EfficientNet's with one."""
    from ndlib.models.blocks import InvertedResidual
    from ndlib.models.efficientnet import MBConvSE

    with torch.device("meta"):
        mobile, efficient = models.create("mobilenetv2"), models.create("efficientnetb0")
    assert all(type(block) is InvertedResidual and block.gate is None for block in mobile.blocks)
    assert all(isinstance(block, MBConvSE) and isinstance(block, InvertedResidual) and block.gate is not None
               for block in efficient.blocks)
    torch.manual_seed(0)
    x = torch.randn(2, 16, 8, 8)
    for stride in (1, 2):  # no gate: h + shortcut(x) at stride 1, h at stride 2
        block = InvertedResidual(LayerFactory("bn"), 16, 24, 6, stride).eval()
        with torch.no_grad():
            h = block.project(block.depthwise(block.expand(x)))
            torch.testing.assert_close(block(x), h + block.shortcut(x) if stride == 1 else h)


def test_bn_counts_are_slightly_larger_as_the_paper_says(table):
    by = table.set_index(["arch", "norm"]).params
    assert round(by["densenet121", "bn"] / 1e6, 2) == 6.96  # "about 6.96M with BN"
    assert round(by["mobilenetv2", "bn"] / 1e6, 2) == 2.30  # "about 2.30M"
    for name in CIFAR + EXTRAS + IMAGENET:
        assert by[name, "bn"] > by[name, "nd"]


def test_parameter_table_columns(table):
    for column in ["arch", "norm", "num_classes", "params", "params_m", "paper_net_size_m", "diff_m", "note"]:
        assert column in table.columns
    assert len(table) == len(VARIANTS)
    assert table.paper_net_size_m.notna().sum() == len(CIFAR)


@pytest.mark.parametrize(
    "name, norm, reference, offset",
    [
        ("resnet18_imagenet", "bn", torchvision.models.resnet18, 0),
        ("densenet121_imagenet", "bn", torchvision.models.densenet121, 0),
        ("vgg11_imagenet", "none", torchvision.models.vgg11, 0),
        ("vgg11_imagenet", "bn", torchvision.models.vgg11_bn, -2752),  # no conv bias in front of BN
    ],
)
def test_imagenet_models_have_torchvision_shapes(name, norm, reference, offset):
    with torch.device("meta"):
        ours = models.count_parameters(models.create(name, num_classes=1000, norm=norm))
        theirs = models.count_parameters(reference())
    assert ours == theirs + offset


# --------------------------------------------------------------------------------------
# Slow: full-size inputs and default whitening blocks everywhere
# --------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("name", IMAGENET)
def test_imagenet_models_at_224(name):
    torch.manual_seed(0)
    for norm in models.get_spec(name).norms:
        model = models.create(name, num_classes=1000, norm=norm)
        logits = model(batch_for(name, 224))
        assert logits.shape == (2, 1000) and torch.isfinite(logits).all()


@pytest.mark.slow
@pytest.mark.parametrize("name", CIFAR)
def test_cifar_nd_with_default_blocks(name):
    torch.manual_seed(0)
    model = models.create(name, norm="nd")
    logits = model(batch_for(name))
    logits.sum().backward()
    assert logits.shape == (2, 10) and torch.isfinite(logits).all()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


# --------------------------------------------------------------------------------------
# Trainability and checkpoints (small model, synthetic data)
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("norm", ["bn", "nd"])
def test_a_few_sgd_steps_reduce_the_loss_on_a_fixed_batch(norm):
    """SYNTHETIC data: 8 random 16x16 images with fixed labels; 8 SGD steps must lower the loss."""
    torch.manual_seed(0)
    model = models.create("resnet18", num_classes=4, norm=norm, **(ND_TEST_OPTIONS if norm == "nd" else {}))
    images = torch.randn(8, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    labels = torch.arange(8) % 4
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for _ in range(8):
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(images), labels)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert min(losses[-3:]) < 0.5 * losses[0], losses


@pytest.mark.parametrize("norm", ["bn", "nd"])
def test_state_dict_round_trip_reproduces_eval_outputs(norm):
    torch.manual_seed(0)
    model = models.create("mobilenetv2", norm=norm, **(ND_TEST_OPTIONS if norm == "nd" else {}))
    x = batch_for("mobilenetv2")
    model.train()
    model(x)  # move the running statistics away from their initial values
    model.eval()
    with torch.no_grad():
        expected = model(x)
    torch.manual_seed(1)
    fresh = models.create("mobilenetv2", norm=norm, **(ND_TEST_OPTIONS if norm == "nd" else {}))
    fresh.load_state_dict(model.state_dict())
    fresh.eval()
    with torch.no_grad():
        assert torch.equal(fresh(x), expected)


def test_readme_parameter_table_is_current():
    """ndlib/models/README.md lists the pinned counts (regenerate it when they change)."""
    import re
    from pathlib import Path

    readme = (Path(models.__file__).parent / "README.md").read_text()
    rows = re.findall(r"^\| `(\w+)` \| [^|]+ \| [12] \| (\w+) \| ([\d,]+) \|", readme, flags=re.MULTILINE)
    assert {(arch, norm): int(params.replace(",", "")) for arch, norm, params in rows} == EXPECTED_PARAMS
