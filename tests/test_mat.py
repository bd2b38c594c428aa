"""MAT: MIMO slots, the one-backward inner loop (passes counted), member norms and radii, MSD's per-example choice,
the cross-gradient and sign-disagreement diagnostics, MIMO training and its resume."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from advlib.attacks.base import lp_norms
from advlib.data import dataset_info, load_dataset, to_tensors
from advlib.defenses.mat import (
    MIMOStep,
    NormStep,
    PassCounter,
    _start,
    _take_step,
    backbone_layout,
    cross_gradient_ratio,
    mat_attack,
    mean_norm_ratio,
    member_batches,
    msd_attack,
    ramp_scale,
    sign_disagreement,
)
from advlib.models.mimo import MIMOAverage, MIMOMember, SingleAsMIMO, create_mimo, member_losses
from advlib.params import TrainSpec
from advlib.train import fit

INFO = dataset_info("mnist5k")
STEPS = [NormStep("l1", 10.0, 0.8), NormStep("l2", 2.0, 0.1), NormStep("linf", 0.3, 0.01)]


class Separable(nn.Module):
    """A MIMO-interface model whose member m sees only input m: no cross gradients at all."""

    def __init__(self, members: int = 3) -> None:
        super().__init__()
        self.members = members
        self.nets = nn.ModuleList(
            nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.ReLU(), nn.Linear(32, 10)) for _ in range(members)
        )

    def forward(self, x):
        return torch.stack([net(x[:, m]) for m, net in enumerate(self.nets)], dim=1)


@pytest.fixture(scope="module")
def batch():
    x, y = to_tensors(load_dataset("mnist5k", "test"), n=24)
    return x.view(8, 3, 1, 28, 28), y.view(8, 3)


def test_mimo_shapes_views_and_bad_input(batch):
    torch.manual_seed(0)
    mimo = create_mimo("lenet5", INFO, 3)
    convs = [m for m in mimo.modules() if isinstance(m, nn.Conv2d)]
    linears = [m for m in mimo.modules() if isinstance(m, nn.Linear)]
    assert convs[0].in_channels == 3 * 1 and linears[-1].out_features == 3 * 10  # M x C in, M x classes out
    x, y = batch
    assert mimo(x).shape == (8, 3, 10)
    single = x[:, 0]
    logits = mimo.repeated(single)
    torch.testing.assert_close(MIMOMember(mimo, 2)(single), logits[:, 2])
    torch.testing.assert_close(MIMOAverage(mimo)(single).exp(), logits.softmax(2).mean(1))
    with pytest.raises(ValueError, match=r"\(N, M=3, C, H, W\)"):
        mimo(single)
    with pytest.raises(ValueError, match="M=0"):
        create_mimo("lenet5", INFO, 0)
    with pytest.raises(ValueError, match="member must be in 0..2"):
        MIMOMember(mimo, 3)


def test_member_batches_are_independent_shuffles():
    data = torch.utils.data.TensorDataset(torch.arange(20).float().view(20, 1, 1, 1), torch.arange(20))
    x, y = next(member_batches(data, 3, 20, seed=0))
    assert x.shape == (20, 3, 1, 1, 1) and y.shape == (20, 3)
    for m in range(3):
        assert sorted(y[:, m].tolist()) == list(range(20))  # every member sees the whole epoch
    assert not torch.equal(y[:, 0], y[:, 1]) and not torch.equal(y[:, 1], y[:, 2])
    again, _ = next(member_batches(data, 3, 20, seed=0))
    assert torch.equal(x, again)


def test_mat_uses_one_backward_per_step_and_naive_mimo_uses_m(batch):
    torch.manual_seed(0)
    mimo = create_mimo("lenet5", INFO, 3).eval()
    counter = PassCounter(mimo)
    x, y = batch
    mat_attack(mimo, x, y, STEPS, iterations=5)
    assert (counter.forward, counter.backward) == (5, 5)
    counter.reset()
    mat_attack(mimo, x, y, STEPS, iterations=5, approximate=False)
    assert (counter.forward, counter.backward) == (5, 15)
    counter.reset()
    msd_attack(mimo, x, y, STEPS, iterations=4)
    assert (counter.forward, counter.backward) == ((1 + 3) * 4, 4)  # Table 6: (1 + M)K forwards, K backwards
    counter.remove()
    mat_attack(mimo, x, y, STEPS, iterations=1)
    assert counter.forward == (1 + 3) * 4  # removed: no longer counting


def test_each_member_stays_in_its_own_ball_and_the_box(batch):
    torch.manual_seed(0)
    mimo = create_mimo("lenet5", INFO, 3).eval()
    x, y = batch
    x_adv = mat_attack(mimo, x, y, STEPS, iterations=20, generator=torch.Generator().manual_seed(0))
    for m, step in enumerate(STEPS):
        assert float(lp_norms(x_adv[:, m] - x[:, m], step.norm).max()) <= step.eps + 1e-4
    assert float(x_adv.min()) >= 0 and float(x_adv.max()) <= 1
    with torch.no_grad():
        assert float(member_losses(mimo, x_adv, y).sum()) > float(member_losses(mimo, x, y).sum())
    one = mat_attack(mimo, x, y, STEPS, iterations=1, start=False, generator=torch.Generator().manual_seed(0))
    changed = ((one[:, 0] - x[:, 0]).flatten(1) != 0).sum(1)
    assert int(changed.max()) <= 20  # the L1 member's top-k step moves at most k <= 20 coordinates
    with pytest.raises(ValueError, match="2 norm steps for M=3"):
        mat_attack(mimo, x, y, STEPS[:2], iterations=1)
    with pytest.raises(ValueError, match="norm 'l3'"):
        NormStep("l3", 1.0, 0.1)


def test_l1_sizes_drawn_at_once_are_the_per_step_draws(batch):
    """mat_attack draws all steps' L1 sizes k before its loop; they are the numbers one draw per step and member
    (step by step, members in order) gives, so the attack is unchanged."""
    x, y = batch
    model = create_mimo("lenet5_classic", INFO, 3).eval()
    steps = [STEPS[0], STEPS[2], STEPS[0]]  # two L1 members: their draws interleave
    got = mat_attack(model, x, y, steps, 4, generator=torch.Generator().manual_seed(5))
    generator = torch.Generator().manual_seed(5)
    x_adv = _start(x, steps, generator)
    for _ in range(4):
        x_adv.requires_grad_(True)
        (grad,) = torch.autograd.grad(member_losses(model, x_adv, y).sum(), x_adv)
        x_adv = torch.stack(
            [_take_step(x[:, m], x_adv[:, m].detach(), grad[:, m], s, generator) for m, s in enumerate(steps)], dim=1
        )
    assert torch.equal(got, x_adv.detach())


def test_msd_keeps_the_worst_candidate_per_example(batch):
    torch.manual_seed(0)
    model = SingleAsMIMO(nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 10))).eval()
    x, y = batch[0][:, :1], batch[1][:, :1]
    out = msd_attack(model, x, y, STEPS, iterations=1, generator=torch.Generator().manual_seed(3))
    from advlib.defenses.mat import _take_step

    generator = torch.Generator().manual_seed(3)
    x_req = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(member_losses(model, x_req, y).sum(), x_req)
    candidates = [_take_step(x[:, 0], x[:, 0], grad[:, 0], s, generator)[:, None] for s in STEPS]
    with torch.no_grad():
        best = torch.stack([member_losses(model, c, y) for c in candidates]).amax(0)
        torch.testing.assert_close(member_losses(model, out, y), best)


def test_cross_gradients_vanish_for_separable_members_only(batch):
    torch.manual_seed(0)
    x, y = batch
    ratio = cross_gradient_ratio(Separable(), x, y)
    assert ratio.shape == (3,) and float(ratio.abs().max()) == 0.0
    assert (sign_disagreement(Separable(), x, y, STEPS)[[0, 2]] == 0).all()
    shared = create_mimo("lenet5", INFO, 3).eval()
    assert (cross_gradient_ratio(shared, x, y) > 0).all()
    e = sign_disagreement(shared, x, y, STEPS)
    assert torch.isnan(e[1]) and 0 < float(e[2]) < 1


def test_cross_gradient_statistic_is_the_ratio_of_mean_norms(batch):
    """Figure 1's statistic is mean ||cross|| / mean ||true||, not the mean of per-sample ratios, which one sample with
    a near-zero own gradient dominates."""
    cross = torch.tensor([[3.0, 4.0], [0.0, 1.0]])  # norms 5 and 1
    own = torch.tensor([[0.0, 0.1], [6.0, 8.0]])  # norms 0.1 and 10
    assert float(mean_norm_ratio(cross, own)) == pytest.approx(3 / 5.05)  # mean of ratios: (50 + 0.1) / 2 = 25.05
    with pytest.raises(ValueError, match="same shape"):
        mean_norm_ratio(cross, own[:1])
    torch.manual_seed(0)
    x, y = batch
    model = create_mimo("lenet5", INFO, 3).eval()
    with torch.no_grad():  # sharp logits; every member wrong except member 1 on sample 1, confidently right there
        [m for m in model.modules() if isinstance(m, nn.Linear)][-1].weight.mul_(1000)
        y = (model(x).argmax(2) + 1) % 10
        y[0, 0] = model(x)[0, 0].argmax()
    x_in = x.clone().requires_grad_(True)
    losses = member_losses(model, x_in, y)
    own_norms, cross_norms = [], []
    for m in range(3):  # per-sample reference: every sample's own and cross gradient by its own backward
        own = [torch.autograd.grad(losses[n, m], x_in, retain_graph=True)[0][n, m] for n in range(len(x))]
        total = [torch.autograd.grad(losses[n].sum(), x_in, retain_graph=True)[0][n, m] for n in range(len(x))]
        own_norms.append(torch.stack([o.norm() for o in own]))
        cross_norms.append(torch.stack([(t - o).norm() for t, o in zip(total, own)]))
    own_n, cross_n = torch.stack(own_norms), torch.stack(cross_norms)  # (M, N)
    ratio = cross_gradient_ratio(model, x, y)
    torch.testing.assert_close(ratio, cross_n.mean(1) / own_n.mean(1))
    assert float((cross_n / own_n).mean(1)[0]) > 2 * float(ratio[0])  # the old statistic: sample 1 dominates it


def test_trained_member_answers_for_its_own_slot():
    """Member m is the one trained on input m: with a digit in slot m and blanks elsewhere, member m reads it and
    the other members do not."""
    torch.manual_seed(0)
    mimo = create_mimo("mlp1200", INFO, 3, width=256, depth=1)
    train = torch.utils.data.Subset(load_dataset("mnist5k", "train"), range(1500))
    with MIMOStep(mimo, train, TrainSpec(model="mlp1200", epochs=3, batch_size=50), members=3) as step:
        history = fit(step, seed=0)
    assert len(history) == 3 and history[-1]["backward_per_batch"] == 1
    x, y = to_tensors(load_dataset("mnist5k", "test"), n=300)
    for m in range(3):
        slots = torch.zeros(300, 3, 1, 28, 28)
        slots[:, m] = x
        with torch.no_grad():
            pred = mimo(slots).argmax(2)
        own = float((pred[:, m] == y).float().mean())
        others = max(float((pred[:, j] == y).float().mean()) for j in range(3) if j != m)
        assert own > 0.75 and others < 0.35, (m, own, others)


def test_mat_training_counts_k_plus_one_passes_and_resumes(tmp_path):
    train = torch.utils.data.Subset(load_dataset("mnist5k", "train"), range(60))
    spec = TrainSpec(model="lenet5", epochs=2, batch_size=20, schedule="triangle")
    inner = lambda model, x, y, g, scale: mat_attack(model, x, y, STEPS, iterations=3, generator=g)

    def run(checkpoint_dir=None, on_epoch=None):
        torch.manual_seed(0)
        mimo = create_mimo("mlp1200", INFO, 3, width=32, depth=1)
        with MIMOStep(mimo, train, spec, members=3, inner=inner) as step:
            history = fit(step, seed=0, checkpoint_dir=checkpoint_dir, on_epoch=on_epoch)
        assert not mimo._forward_hooks  # the pass counter is gone once training ends
        return mimo, history

    whole, history = run()
    record = history[-1]
    assert (record["forward_per_batch"], record["backward_per_batch"]) == (3 + 1, 3 + 1)  # Table 6: K+1 / K+1

    def crash(epoch, model, record):
        record["diagnostic"] = epoch
        if epoch == 1 and not (tmp_path / "crashed").exists():
            (tmp_path / "crashed").touch()
            raise KeyboardInterrupt  # killed inside the first epoch's callback

    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, crash)
    resumed, history = run(tmp_path, crash)
    assert [h["diagnostic"] for h in history] == [1, 2]  # the interrupted callback ran again
    for a, b in zip(whole.parameters(), resumed.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_the_pass_counter_leaves_the_model_also_when_training_fails():
    mimo = create_mimo("mlp1200", INFO, 3, width=16, depth=1)
    train = torch.utils.data.Subset(load_dataset("mnist5k", "train"), range(40))

    def inner(model, x, y, g, scale):
        assert model._forward_hooks  # counting while it trains
        raise RuntimeError("attack failed")

    with pytest.raises(RuntimeError, match="attack failed"):
        with MIMOStep(mimo, train, TrainSpec(model="mlp1200", epochs=1, batch_size=20), members=3, inner=inner) as step:
            fit(step)
    assert not mimo._forward_hooks


def test_triangle_schedule_peaks_at_40_percent():
    from advlib.train import make_scheduler

    spec = TrainSpec(model="lenet5", epochs=10, lr=1e-3, schedule="triangle")
    optimizer = torch.optim.Adam([nn.Parameter(torch.zeros(1))], lr=spec.lr)
    scheduler = make_scheduler(optimizer, spec)
    lrs = []
    for _ in range(10):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[3] == pytest.approx(1e-3) and lrs[0] == pytest.approx(1e-3 / 4)
    assert all(a < b for a, b in zip(lrs[:4], lrs[1:4])) and all(a > b for a, b in zip(lrs[3:], lrs[4:]))
    assert min(lrs) > 0


def test_radius_ramp_scales_the_training_attack_then_reaches_full_radii():
    assert [ramp_scale(e, 4) for e in range(6)] == [0.2, 0.4, 0.6, 0.8, 1.0, 1.0]
    assert ramp_scale(0, 0) == 1.0
    with pytest.raises(ValueError, match="ramp_epochs=-1"):
        ramp_scale(0, -1)
    assert NormStep("l2", 2.0, 0.5).scaled(0.25) == NormStep("l2", 0.5, 0.125)
    train = torch.utils.data.Subset(load_dataset("mnist5k", "train"), range(40))
    spec = TrainSpec(model="mlp1200", epochs=3, batch_size=20)
    seen: list[float] = []

    def inner(model, x, y, g, scale):
        seen.append(scale)
        return x

    with MIMOStep(
        create_mimo("mlp1200", INFO, 3, width=16, depth=1), train, spec, members=3, inner=inner, ramp_epochs=2
    ) as step:
        fit(step)
    assert seen == pytest.approx([1 / 3, 1 / 3, 2 / 3, 2 / 3, 1.0, 1.0])  # two batches per epoch


def test_backbone_layout_gives_the_backbone_channels_last_views_of_the_same_values(batch):
    x, _ = batch
    laid = backbone_layout(x)
    assert torch.equal(laid, x)
    if torch.backends.mkldnn.is_available():
        assert laid.flatten(1, 2).stride() == (3 * 784, 1, 3 * 28, 3)  # MIMO's stacked input: NHWC
        assert backbone_layout(x[:, :1])[:, 0].stride() == (784, 1, 28, 1)  # a single model's slot: NHWC
    with torch.backends.mkldnn.flags(enabled=False):  # portable kernels: the inputs as given
        assert backbone_layout(x) is x
    torch.manual_seed(0)
    mimo = create_mimo("lenet5_classic", INFO, 3).eval()
    with torch.no_grad():
        assert torch.allclose(mimo(laid), mimo(x), atol=1e-5)


@pytest.mark.parametrize("onednn", [True, False])
def test_attacks_run_in_either_layout_and_leave_the_inputs_alone(batch, onednn):
    torch.manual_seed(0)
    mimo = create_mimo("lenet5_classic", INFO, 3).eval()
    x, y = batch
    before = x.clone()
    with torch.backends.mkldnn.flags(enabled=onednn):  # off: backbone_layout hands back the iterate itself
        x_mat = mat_attack(mimo, x, y, STEPS, 3, generator=torch.Generator().manual_seed(0))
        x_msd = msd_attack(mimo, x, y, STEPS, 3, generator=torch.Generator().manual_seed(0))
    for m, step in enumerate(STEPS):  # MAT: member m in its own ball; MSD: every member may take any norm's step
        assert float(lp_norms(x_mat[:, m] - x[:, m], step.norm).max()) <= step.eps + 1e-4
    assert not x_mat.requires_grad and not x_msd.requires_grad and 0 <= float(x_msd.min()) <= float(x_msd.max()) <= 1
    assert not torch.equal(x_msd, x)
    assert torch.equal(x, before) and not x.requires_grad
