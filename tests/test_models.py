"""Tests for advlib.models: registry, exact parameter counts, output shapes, Normalize, Ensemble."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from advlib.models import (
    Ensemble,
    Normalize,
    count_parameters,
    create_model,
    list_models,
    register_model,
)

# Each of this task's models with a small input of the shape it is built for by default.
DEFAULT_INPUTS = {
    "lenet5": (1, 28, 28),
    "lenet5_classic": (1, 28, 28),
    "small_cnn": (1, 28, 28),
    "mlp1200": (1, 28, 28),
    "resnet18": (3, 32, 32),
    "resnet50": (3, 32, 32),
    "wrn": (3, 32, 32),
    "vgg_small": (3, 32, 32),
    "vgg19": (3, 32, 32),
    "resnet50_imagenet": (3, 64, 64),  # shrunk from 224x224: both end in adaptive pooling
    "vgg19_imagenet": (3, 64, 64),
}
SMALL_KWARGS = {"wrn": {"depth": 10, "width": 2}}  # the full WRN-28-10 is counted below, not run


def test_every_model_is_registered() -> None:
    assert set(DEFAULT_INPUTS) <= set(list_models())
    assert list_models() == sorted(list_models())
    assert list_models("lenet5*") == ["lenet5", "lenet5_classic"]


@pytest.mark.parametrize("name", sorted(DEFAULT_INPUTS))
def test_output_shape_and_batch_independence(name: str) -> None:
    torch.manual_seed(0)
    model = create_model(name, **SMALL_KWARGS.get(name, {})).eval()
    x = torch.rand(2, *DEFAULT_INPUTS[name])
    with torch.no_grad():
        out = model(x)
        single = model(x[:1])
    classes = 1000 if name.endswith("_imagenet") else 10
    assert out.shape == (2, classes)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out[:1], single, rtol=1e-4, atol=1e-4)


# conv: in*out*k*k + out; linear: in*out + out.
LENET5 = (1 * 32 * 25 + 32) + (32 * 64 * 25 + 64) + (64 * 4 * 4 * 512 + 512) + (512 * 10 + 10)
#      = 832 + 51264 + 524800 + 5130 = 582026 (28 -> conv 24 -> pool 12 -> conv 8 -> pool 4)
LENET5_CLASSIC = (1 * 6 * 25 + 6) + (6 * 16 * 25 + 16) + (16 * 5 * 5 * 120 + 120) + (120 * 84 + 84) + (84 * 10 + 10)
#      = 156 + 2416 + 48120 + 10164 + 850 = 61706 (28 -> conv pad2 28 -> pool 14 -> conv 10 -> pool 5)
SMALL_CNN = (1 * 32 * 25 + 32) + (32 * 64 * 25 + 64) + (64 * 7 * 7 * 1024 + 1024) + (1024 * 10 + 10)
#      = 832 + 51264 + 3212288 + 10250 = 3274634 (28 -> pool 14 -> pool 7, convs keep size)
MLP1200 = (784 * 1200 + 1200) + 2 * (1200 * 1200 + 1200) + (1200 * 10 + 10)
#      = 942000 + 2 * 1441200 + 12010 = 3836410


@pytest.mark.parametrize(
    ("name", "kwargs", "expected"),
    [
        ("lenet5", {}, 582026),
        ("lenet5", {}, LENET5),
        ("lenet5_classic", {}, LENET5_CLASSIC),
        ("small_cnn", {}, SMALL_CNN),
        ("mlp1200", {}, MLP1200),
        # depth 1, width 5: (784*5 + 5) + (5*10 + 10) = 3925 + 60
        ("mlp1200", {"depth": 1, "width": 5}, 3985),
        # lenet5 on 3x32x32: 32 -> 28 -> 14 -> 10 -> 5, so fc1 sees 64*25 = 1600 features, 7 classes
        (
            "lenet5",
            {"in_channels": 3, "input_size": 32, "num_classes": 7},
            (3 * 32 * 25 + 32) + 51264 + (1600 * 512 + 512) + (512 * 7 + 7),
        ),
        # published sizes of the standard CIFAR-10 architectures
        ("resnet18", {}, 11_173_962),
        ("resnet50", {}, 23_520_842),
        ("vgg19", {}, 20_040_522),
        ("wrn", {}, 36_479_194),  # WRN-28-10
        ("resnet50_imagenet", {}, 25_557_032),
        ("vgg19_imagenet", {}, 143_667_240),
    ],
)
def test_exact_parameter_counts(name: str, kwargs: dict, expected: int) -> None:
    assert count_parameters(create_model(name, **kwargs)) == expected


def test_count_parameters_trainable_only() -> None:
    model = create_model("lenet5")
    for p in model.features.parameters():
        p.requires_grad_(False)
    assert count_parameters(model) == 524800 + 5130
    assert count_parameters(model, trainable_only=False) == LENET5


def test_generalised_inputs() -> None:
    x = torch.rand(2, 3, 32, 32)
    for name in ("lenet5", "lenet5_classic", "small_cnn", "mlp1200", "vgg_small"):
        assert create_model(name, in_channels=3, input_size=32, num_classes=4)(x).shape == (2, 4)
    assert create_model("resnet18", in_channels=1)(torch.rand(2, 1, 28, 28)).shape == (2, 10)
    assert create_model("vgg_small", in_channels=1, input_size=28)(torch.rand(2, 1, 28, 28)).shape == (2, 10)


def test_too_small_input_is_rejected() -> None:
    with pytest.raises(ValueError, match="too small for vgg19"):
        create_model("vgg19", input_size=28)
    with pytest.raises(ValueError, match="too small for lenet5"):
        create_model("lenet5", input_size=12)


def test_wrn_depth_is_validated() -> None:
    with pytest.raises(ValueError, match="depth=27"):
        create_model("wrn", depth=27)


def test_unknown_model_names_value_and_allowed() -> None:
    with pytest.raises(ValueError, match=r"'lenet6'.*lenet5, lenet5_classic.*wrn"):
        create_model("lenet6")


def test_unknown_kwarg_names_model_and_argument() -> None:
    with pytest.raises(TypeError, match=r"'lenet5'.*widht.*in_channels"):
        create_model("lenet5", widht=3)


def test_register_model_rejects_duplicates() -> None:
    with pytest.raises(ValueError, match="'lenet5' is already registered"):
        register_model("lenet5")(lambda: nn.Identity())


def test_normalize_module_and_normalize_kwarg() -> None:
    norm = Normalize((0.5, 0.25), (0.5, 0.25))
    x = torch.tensor([1.0, 0.5]).view(1, 2, 1, 1)
    torch.testing.assert_close(norm(x), torch.tensor([1.0, 1.0]).view(1, 2, 1, 1))
    with pytest.raises(ValueError, match="positive"):
        Normalize((0.5,), (0.0,))
    with pytest.raises(ValueError, match="same"):
        Normalize((0.5, 0.5), (0.5,))

    torch.manual_seed(0)
    plain = create_model("lenet5").eval()
    normalized = create_model("lenet5", normalize=((0.1307,), (0.3081,))).eval()
    normalized.load_state_dict(plain.state_dict(), strict=False)
    x = torch.rand(3, 1, 28, 28)
    torch.testing.assert_close(normalized(x), plain((x - 0.1307) / 0.3081))
    assert count_parameters(normalized) == count_parameters(plain)  # mean/std are buffers, not parameters


def test_imagenet_models_normalise_inside_and_can_opt_out() -> None:
    model = create_model("resnet50_imagenet")
    assert isinstance(model.normalize, Normalize)
    torch.testing.assert_close(model.normalize.mean.flatten(), torch.tensor([0.485, 0.456, 0.406]))
    assert isinstance(create_model("resnet50_imagenet", normalize=None).normalize, nn.Identity)


def test_imagenet_weights_are_never_downloaded_implicitly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"IMAGENET1K_V1.*resnet50-0676ba61.pth.*download=True"):
        create_model("resnet50_imagenet", weights="IMAGENET1K_V1")
    with pytest.raises(ValueError, match=r"'IMAGENET9K'.*IMAGENET1K_V1, DEFAULT"):
        create_model("vgg19_imagenet", weights="IMAGENET9K")


def test_imagenet_weights_load_from_the_local_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from torchvision.models import resnet50

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    torch.manual_seed(1)
    reference = resnet50()
    (tmp_path / "checkpoints").mkdir()
    torch.save(reference.state_dict(), tmp_path / "checkpoints" / "resnet50-0676ba61.pth")
    model = create_model("resnet50_imagenet", weights="IMAGENET1K_V1")
    torch.testing.assert_close(model.net.fc.weight, reference.fc.weight)


def _members(num: int = 3) -> list[nn.Module]:
    torch.manual_seed(0)
    return [create_model("mlp1200", depth=1, width=16, input_size=6).eval() for _ in range(num)]


def test_ensemble_prob_mode_is_log_of_mean_softmax() -> None:
    members = _members()
    x = torch.rand(5, 1, 6, 6)
    expected = torch.log(torch.stack([torch.softmax(m(x), dim=1) for m in members]).mean(dim=0))
    ensemble = Ensemble(members)
    out = ensemble(x)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(out.exp().sum(dim=1), torch.ones(5))
    assert not torch.allclose(out, torch.stack([m(x) for m in members]).mean(dim=0))


def test_ensemble_logit_mode_is_mean_of_logits() -> None:
    members = _members()
    x = torch.rand(5, 1, 6, 6)
    ensemble = Ensemble(members, mode="logit")
    torch.testing.assert_close(ensemble(x), (members[0](x) + members[1](x) + members[2](x)) / 3)
    stacked = ensemble.member_outputs(x)
    assert stacked.shape == (3, 5, 10)
    torch.testing.assert_close(stacked[1], members[1](x))


def test_ensemble_is_differentiable_and_counts_all_members() -> None:
    members = _members(2)
    ensemble = Ensemble(members)
    x = torch.rand(2, 1, 6, 6, requires_grad=True)
    ensemble(x)[:, 0].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert count_parameters(ensemble) == 2 * count_parameters(members[0])


def test_ensemble_rejects_bad_mode_and_no_members() -> None:
    with pytest.raises(ValueError, match=r"'mean'.*prob, logit"):
        Ensemble(_members(1), mode="mean")
    with pytest.raises(ValueError, match="at least one"):
        Ensemble([])
