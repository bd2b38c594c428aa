"""Benchmarks of the native PGD engine, union evaluation, accuracy-vs-steps curves, REGroup inference, MAT training and
the notebook suite (cold vs warm, peak memory), measured as ratios side by side in one process.

Writes benchmarks/RESULTS.md (or --output). Run with
`advlib bench [--quick] [--suite PROFILE] [--only PART ...] [--bf16] [--channels-last] [--output PATH]`.

Rules kept here (see benchmarks/README.md):
- one warm-up call of each contender, then at least 5 repetitions (3 under --quick);
- each repetition times ours and the peer (or the limit) back to back, alternating which goes
  first, and a ratio is taken per pair; the table reports the median of those ratios and the
  median time of each side;
- targets are constants below and are never adjusted to the result: a missed target is
  reported as "missed".
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from advlib.attacks.pgd import in_layout, pgd, prefers_channels_last
from advlib.models import create_model
from advlib.runtime import cpu_model

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"

EPS, STEPS, ALPHA = 0.3, 40, 0.01
FULL_REPS, QUICK_REPS = 5, 3
MIN_SAMPLE_S = 0.2  # a timed sample repeats a shorter call until it lasts about this long
# (operator, bound): ratio must satisfy it. Fixed targets; never lowered to fit a result.
TARGET_LIMIT = ("<=", 1.05)  # native PGD-40 / (40 x one forward+backward)
TARGET_PEER = ("<", 1.0)  # native PGD-40 / peer PGD-40
TARGET_REGROUP = ("<=", 1.5)  # REGroup prediction / softmax prediction, same model and batch (paper: 5.8 on CPU)
REGROUP_K = 5  # the paper's k for ResNet-50 and VGG-19
TARGET_STEPS = ("<=", 0.6)  # accuracy-vs-steps: one recording run / separate runs at every step count
STEP_COUNTS = (1, 2, 5, 10, 20, 50, 100, 200, 500)
TARGET_MAT = ("<=", 1.15)  # MAT epoch / single-model Linf-AT epoch at equal steps (paper: 1.22 on MNIST)
TARGET_VANILLA = (">=", 2.5)  # M = 3 vanilla-ensemble AT time / MAT time: MAT should cost about one AT run
MAT_STEPS = 10
TARGET_UNION = ("<=", 0.5)  # union of attacks: cascade over survivors / every attack on every sample
TARGET_WARM = ("<=", 0.1)  # notebook suite: warm rerun (everything cached) / cold run
TARGET_FAMILY = ("<", 1.0)  # a family of same-architecture models in one batched computation / one by one
TARGET_PROCESSES = ("<", 1.0)  # two independent trainings in two 1-thread processes / one after the other, 2 threads
FAMILY = 3  # members: MAT's vanilla ensemble and MixGen's smallest mixture have three
PARTS = ("engine", "steps", "regroup", "mat", "union", "family", "suite")  # what --only can pick, in run order


@dataclass
class Row:
    what: str
    ours: str
    peer: str
    ratio: float | None
    target: tuple[str, float]
    note: str = ""
    ratios: tuple[float, ...] = ()
    invalid: str = ""  # why the two sides did not compute the same thing (the timing then proves nothing)
    why: str = ""  # what the run measured that explains a missed target (printed only when missed)

    @property
    def verdict(self) -> str:
        if self.invalid:
            return f"invalid: {self.invalid}"
        if self.ratio is None:
            return f"not measured ({self.note})" if self.note else "not measured"
        op, bound = self.target
        met = self.ratio <= bound if op == "<=" else self.ratio >= bound if op == ">=" else self.ratio < bound
        return "met" if met else "missed"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], object], device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def compare(
    ours: Callable[[], object], peer: Callable[[], object], reps: int, device: torch.device, desc: str
) -> tuple[float, float, float, tuple[float, ...]]:
    """Median time of ours, median time of peer, median of the per-pair ratios ours/peer, all ratios (per call).

    A side whose call is shorter than MIN_SAMPLE_S (judged from its warm-up) is called n times per timed sample, the
    same n for both sides, so that launch and timer jitter of short calls (a GPU's) do not decide a verdict."""
    warm = min(_timed(ours, device), _timed(peer, device))  # one warm-up each
    n = max(1, math.ceil(MIN_SAMPLE_S / max(warm, 1e-9)))

    def run(fn: Callable[[], object]) -> Callable[[], None]:
        def calls() -> None:
            for _ in range(n):
                fn()

        return calls

    t_ours, t_peer, ratios = [], [], []
    for i in tqdm(range(reps), desc=desc if n == 1 else f"{desc} ({n} calls per sample)", leave=False):
        if i % 2 == 0:
            a = _timed(run(ours), device) / n
            b = _timed(run(peer), device) / n
        else:
            b = _timed(run(peer), device) / n
            a = _timed(run(ours), device) / n
        t_ours.append(a)
        t_peer.append(b)
        ratios.append(a / b)
    return statistics.median(t_ours), statistics.median(t_peer), statistics.median(ratios), tuple(ratios)


def _fmt(seconds: float) -> str:
    return f"{seconds * 1e3:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def bench_model(
    name: str,
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    reps: int,
    device: torch.device,
    *,
    bf16: bool = False,
    channels_last: bool = False,
) -> list[Row]:
    label = f"{name} b{len(x)}" + (" bf16" if bf16 else "") + (" channels_last" if channels_last else "")
    if channels_last:
        model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)

    def precision():  # every contender, ours and the peers, runs at the same precision
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)

    def ours():
        with precision():
            return pgd(model, x, y, eps=EPS, norm="linf", steps=STEPS, stepsize=ALPHA)

    # the limit runs in the layout our engine iterates in (channels_last on a oneDNN CPU); the peers get the batch as a
    # user passes it
    engine_layout = torch.channels_last if prefers_channels_last(x) else torch.contiguous_format
    x_limit = in_layout(x, engine_layout)

    def limit():
        # 40 forward+backward passes of the CE loss w.r.t. the input, nothing else
        with precision():
            for _ in range(STEPS):
                xr = x_limit.detach().requires_grad_(True)
                torch.autograd.grad(F.cross_entropy(model(xr), y, reduction="sum"), xr)

    rows = []
    o, p, r, rs = compare(ours, limit, reps, device, f"{label}: PGD vs fwd+bwd")
    layout_note = (
        ", channels_last as the engine iterates" if engine_layout == torch.channels_last and not channels_last else ""
    )
    rows.append(
        Row(
            f"{label}: PGD-{STEPS} Linf / {STEPS} x (fwd+bwd of CE w.r.t. input{layout_note})",
            _fmt(o),
            f"{STEPS} x fwd+bwd: {_fmt(p)}",
            r,
            TARGET_LIMIT,
            ratios=rs,
        )
    )

    what_fb = f"{label}: PGD-{STEPS} Linf vs foolbox LinfPGD"
    try:
        import foolbox as fb
    except ImportError:
        rows.append(Row(what_fb, "", "foolbox", None, TARGET_PEER, "foolbox not installed"))
    else:
        fmodel = fb.PyTorchModel(model, bounds=(0, 1), device=device)
        fb_attack = fb.attacks.LinfPGD(abs_stepsize=ALPHA, steps=STEPS, random_start=True)

        def foolbox_pgd():
            with precision():
                return fb_attack(fmodel, x, y, epsilons=EPS)

        o, p, r, rs = compare(ours, foolbox_pgd, reps, device, f"{label}: vs foolbox")
        model.zero_grad(set_to_none=True)  # foolbox's loss.backward() also accumulates parameter grads
        rows.append(Row(what_fb, _fmt(o), f"foolbox {fb.__version__}: {_fmt(p)}", r, TARGET_PEER, ratios=rs))

    what_ta = f"{label}: PGD-{STEPS} Linf vs torchattacks PGD"
    try:
        import torchattacks
    except ImportError:
        rows.append(Row(what_ta, "", "torchattacks", None, TARGET_PEER, "torchattacks not installed"))
    else:
        ta_attack = torchattacks.PGD(model, eps=EPS, alpha=ALPHA, steps=STEPS, random_start=True)

        def torchattacks_pgd():
            with precision():
                return ta_attack(x, y)

        o, p, r, rs = compare(ours, torchattacks_pgd, reps, device, f"{label}: vs torchattacks")
        rows.append(
            Row(what_ta, _fmt(o), f"torchattacks {torchattacks.__version__}: {_fmt(p)}", r, TARGET_PEER, ratios=rs)
        )
    model.eval()  # peers may touch the mode; keep eval for what follows
    return rows


def bench_regroup(name: str, model: torch.nn.Module, x: torch.Tensor, reps: int, device: torch.device) -> Row:
    """REGroup inference (hooks on the highest k layers, KL to every class, Borda) vs the softmax prediction."""
    from advlib.defenses.regroup import RegroupClassifier, fit_regroup

    with torch.no_grad():
        labels = model(x).argmax(1)  # statistics from the batch itself: timing does not depend on their quality
    stats = fit_regroup(model, x, labels, per_class=len(x), on_empty_class="uniform")
    k = min(REGROUP_K, len(stats.layer_names))
    classifier = RegroupClassifier(model, stats, k=k, batch_size=len(x))

    def softmax():
        with torch.no_grad():
            return model(x).softmax(1).argmax(1)

    o, p, r, rs = compare(lambda: classifier.predict(x), softmax, reps, device, f"{name}: REGroup vs softmax")
    return Row(
        f"{name} b{len(x)}: REGroup (k={k}) / softmax inference",
        _fmt(o),
        f"softmax: {_fmt(p)}",
        r,
        TARGET_REGROUP,
        ratios=rs,
    )


def bench_steps_curve(
    name: str,
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    counts: tuple[int, ...],
    reps: int,
    device: torch.device,
) -> Row:
    """Accuracy after k PGD steps for every k in `counts`: one run that records every iterate vs one run per k."""
    from advlib.evaluate import accuracy_vs_steps

    spec = {"name": "pgd_linf", "eps": EPS, "stepsize": ALPHA, "options": {"update": "adam"}}

    def separate():
        for k in counts:
            pgd(model, x, y, eps=EPS, norm="linf", steps=k, stepsize=ALPHA, update="adam")

    o, p, r, rs = compare(
        lambda: accuracy_vs_steps(model, x, y, spec, max(counts)), separate, reps, device, f"{name}: steps curve"
    )
    return Row(
        f"{name} b{len(x)}: accuracy vs PGD steps {list(counts)}: one recording run / separate runs",
        _fmt(o),
        f"separate runs: {_fmt(p)}",
        r,
        TARGET_STEPS,
        ratios=rs,
    )


def attack_step_flops(model: torch.nn.Module, members: int) -> int:
    """FLOPs of one MAT attack step of a MIMO-interface `model` on a batch of 64 MNIST-shaped inputs: the forward and
    the backward to the inputs (not to the weights), as counted by torch's FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode

    from advlib.models.mimo import member_losses

    model.eval().requires_grad_(False)
    x = torch.rand(64, members, 1, 28, 28, requires_grad=True)
    with FlopCounterMode(display=False) as counter:
        member_losses(model, x, torch.zeros(64, members, dtype=torch.long)).sum().backward()  # weights need no grad
    return counter.get_total_flops()


def bench_mat(reps: int, device: torch.device, images: int, backbone: str) -> list[Row]:
    """Paper 5: one training epoch of MAT (MIMO `backbone`, M = 3, members in Linf/L2/L1) against one epoch of
    single-model Linf AT of the same backbone at equal PGD steps and batch size, on random MNIST-shaped data; and the
    M-model vanilla ensemble (three AT runs) against MAT."""
    from advlib.data import dataset_info
    from advlib.defenses.mat import MIMOStep, NormStep, mat_attack
    from advlib.models.mimo import SingleAsMIMO, create_mimo
    from advlib.params import TrainSpec
    from advlib.train import fit

    info = dataset_info("mnist5k")
    data = torch.utils.data.TensorDataset(torch.rand(images, 1, 28, 28), torch.randint(0, 10, (images,)))
    spec = TrainSpec(model=backbone, epochs=1, batch_size=64)
    steps = [NormStep("linf", 0.3, 0.1), NormStep("l2", 2.0, 0.7), NormStep("l1", 10.0, 3.5)]

    def mat():
        with MIMOStep(
            create_mimo(backbone, info, 3),
            data,
            spec,
            members=3,
            device=device,
            inner=lambda m, x, y, g, scale: mat_attack(m, x, y, steps, MAT_STEPS, generator=g),
        ) as step:
            fit(step)

    def single_at():
        with MIMOStep(
            SingleAsMIMO(create_model(backbone)),
            data,
            spec,
            members=1,
            device=device,
            inner=lambda m, x, y, g, scale: mat_attack(m, x, y, steps[:1], MAT_STEPS, generator=g),
        ) as step:
            fit(step)

    def mat_all_linf():  # the same MIMO network and epoch, every member attacked in Linf: the network's own cost
        with MIMOStep(
            create_mimo(backbone, info, 3),
            data,
            spec,
            members=3,
            device=device,
            inner=lambda m, x, y, g, scale: mat_attack(m, x, y, steps[:1] * 3, MAT_STEPS, generator=g),
        ) as step:
            fit(step)

    o, p, r, rs = compare(mat, single_at, reps, device, f"MAT vs AT epoch ({backbone})")
    _, _, network, _ = compare(mat_all_linf, single_at, reps, device, f"MAT (all Linf) vs AT epoch ({backbone})")
    flops = attack_step_flops(create_mimo(backbone, info, 3), 3) / attack_step_flops(
        SingleAsMIMO(create_model(backbone)), 1
    )
    why = (
        f"one attack step (forward, and backward to the inputs) of the MIMO network takes {flops:.2f} x the FLOPs of "
        f"the single network's (torch's FlopCounterMode: its first layer reads three inputs' channels, its last "
        f"writes three members' logits), and the same MAT epoch with all three members attacked in Linf costs "
        f"{network:.2f} x the AT epoch; the L2 and L1 members' steps (normalisation, top-k, the sort-based L1-ball "
        f"projection) account for the rest, {r / network:.2f} x"
    )
    what = f"{backbone}, {images} images b64, PGD-{MAT_STEPS}"
    return [
        Row(
            f"{what}: MAT epoch (M = 3) / single-model Linf-AT epoch",
            _fmt(o),
            f"Linf AT: {_fmt(p)}",
            r,
            TARGET_MAT,
            ratios=rs,
            why=why,
        ),
        Row(
            f"{what}: 3-model vanilla-ensemble AT (3 AT epochs) / MAT epoch",
            f"MAT: {_fmt(o)}",
            f"3 x AT: {_fmt(3 * p)}",
            3 / r,
            TARGET_VANILLA,
            ratios=tuple(3 / x for x in rs),
            why=why,
        ),
    ]


UNION_ATTACKS = [  # the quickstart suite: six attacks in three norms, cheap ones first as a researcher would order them
    {"name": "fgsm", "eps": 0.2},
    {"name": "pgd_linf", "eps": 0.2, "steps": 20},
    {"name": "pgd_l2", "eps": 2.0, "steps": 20},
    {"name": "deepfool_l2", "eps": 2.0, "options": {"steps": 20}},
    {"name": "salt_and_pepper", "eps": 5.0, "options": {"steps": 100}},
    {"name": "uniform_noise", "eps": 4.0},
]


def bench_union(reps: int, device: torch.device, images: int) -> Row:
    """Union accuracy of six attacks on an undefended lenet5_classic (one epoch on mnist5k): the cascade (each attack
    only on the survivors of the earlier ones) against every attack on every sample; the unions must agree."""
    from advlib.data import load_dataset, to_tensors
    from advlib.evaluate import union_robustness
    from advlib.params import TrainSpec
    from advlib.train import ClassifierStep, fit

    torch.manual_seed(0)
    model = create_model("lenet5_classic").to(device)
    fit(
        ClassifierStep(
            model,
            load_dataset("mnist5k", "train"),
            TrainSpec(model="lenet5_classic", epochs=1, batch_size=64),
            device=device,
        )
    )
    model.eval()
    x, y = (t.to(device) for t in to_tensors(load_dataset("mnist5k", "test", n=images)))
    unions = {}

    def run(cascade: bool):
        unions[cascade] = union_robustness(model, x, y, UNION_ATTACKS, cascade=cascade).robust_accuracy

    o, p, r, rs = compare(lambda: run(True), lambda: run(False), reps, device, "union cascade vs all")
    cascade, every = 100 * unions[True], 100 * unions[False]
    differ = f"union accuracy {cascade:.2f}% by cascade vs {every:.2f}% by every attack" if cascade != every else ""
    return Row(
        f"lenet5_classic (undefended) {images} images: union of 6 attacks, cascade / every attack on every "
        f"sample (union accuracy {cascade:.2f}% / {every:.2f}%)",
        _fmt(o),
        f"all attacks: {_fmt(p)}",
        r,
        TARGET_UNION,
        ratios=rs,
        invalid=differ,
    )


class _GroupedLeNet(torch.nn.Module):
    """`members` lenet5 networks as one: both convolutions grouped by member, both linear layers one batched matmul.
    Input [members, batch, 1, 28, 28], output [members, batch, 10]; a benchmark contender, not library code."""

    def __init__(self, nets: list[torch.nn.Module]) -> None:
        super().__init__()
        m = len(nets)
        convs = [[net.features[i] for net in nets] for i in (0, 3)]
        self.conv1 = torch.nn.Conv2d(m, 32 * m, 5, groups=m)
        self.conv2 = torch.nn.Conv2d(32 * m, 64 * m, 5, groups=m)
        with torch.no_grad():
            for grouped, parts in zip((self.conv1, self.conv2), convs):
                grouped.weight.copy_(torch.cat([c.weight for c in parts]))
                grouped.bias.copy_(torch.cat([c.bias for c in parts]))
        linear = [[net.classifier[i] for net in nets] for i in (0, 2)]
        self.w1, self.w2 = (torch.nn.Parameter(torch.stack([lin.weight.T for lin in ls]).clone()) for ls in linear)
        self.b1, self.b2 = (torch.nn.Parameter(torch.stack([lin.bias for lin in ls])[:, None].clone()) for ls in linear)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m, b = x.shape[:2]
        h = x.transpose(0, 1).reshape(b, m, *x.shape[-2:])
        h = F.max_pool2d(F.relu(self.conv1(h)), 2)
        h = F.max_pool2d(F.relu(self.conv2(h)), 2).reshape(b, m, -1).transpose(0, 1)
        return torch.baddbmm(self.b2, F.relu(torch.baddbmm(self.b1, h, self.w1)), self.w2)


def bench_family(reps: int, device: torch.device, members: int = FAMILY) -> list[Row]:
    """Issue 32's "many small models at once": one Adam step (batch 64 each, clean cross-entropy) of `members`
    lenet5 networks, batched by torch.func (stack_module_state + vmap) and by grouped convolutions, against the same
    steps one network at a time. The first step's logits of every path must agree (else the row is invalid)."""
    import copy

    from torch.func import functional_call, stack_module_state, vmap

    torch.manual_seed(0)
    nets = [create_model("lenet5").to(device) for _ in range(members)]
    x = torch.rand(members, 64, 1, 28, 28, device=device)
    y = torch.randint(0, 10, (members, 64), device=device)
    with torch.no_grad():
        reference = torch.stack([net(xi) for net, xi in zip(nets, x)])

    singles = copy.deepcopy(nets)
    single_opts = [torch.optim.Adam(net.parameters(), 1e-3) for net in singles]

    def one_by_one() -> None:
        for net, opt, xi, yi in zip(singles, single_opts, x, y):
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(net(xi), yi).backward()
            opt.step()

    params, buffers = stack_module_state(copy.deepcopy(nets))
    params = {k: v.detach().requires_grad_() for k, v in params.items()}
    skeleton = copy.deepcopy(nets[0]).to("meta")
    vmap_opt = torch.optim.Adam(params.values(), 1e-3)

    def logits_vmap() -> torch.Tensor:
        return vmap(lambda p, b, xi: functional_call(skeleton, (p, b), (xi,)))(params, buffers, x)

    def batched(logits: Callable[[], torch.Tensor], opt: torch.optim.Optimizer) -> Callable[[], None]:
        def step() -> None:
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(logits().flatten(0, 1), y.flatten(), reduction="sum").div(y.shape[1]).backward()
            opt.step()

        return step

    grouped = _GroupedLeNet(nets).to(device)
    grouped_opt = torch.optim.Adam(grouped.parameters(), 1e-3)
    rows = []
    for name, logits, opt in (
        ("torch.func vmap", logits_vmap, vmap_opt),
        ("grouped convolutions", lambda: grouped(x), grouped_opt),
    ):
        with torch.no_grad():
            gap = float((logits() - reference).abs().max())
        o, p, r, rs = compare(batched(logits, opt), one_by_one, reps, device, f"family {name}")
        rows.append(
            Row(
                f"{members} lenet5 networks, one Adam step of a batch of 64 each: batched by {name} / one by one",
                _fmt(o),
                f"one by one: {_fmt(p)}",
                r,
                TARGET_FAMILY,
                ratios=rs,
                invalid=f"logits differ by {gap:.1e}" if gap > 1e-4 else "",
                why="the batched step does the same convolutions as one grouped or batched kernel, which the CPU "
                "runs no faster than the separate dense ones; the per-call overhead it saves is a small part of a "
                "LeNet step at batch 64",
            )
        )
    return rows


def _train_lenets(count: int, threads: int, batches: int) -> float:
    """Adversarial training (PGD-10 Linf) of `count` lenet5 networks one after the other on `threads` threads, on
    random MNIST-shaped batches of 64; returns the seconds it took (a job of the two-process benchmark)."""
    torch.set_num_threads(threads)
    start = time.perf_counter()
    for seed in range(count):
        torch.manual_seed(seed)
        net = create_model("lenet5")
        opt = torch.optim.Adam(net.parameters(), 1e-3)
        for _ in range(batches):
            x, y = torch.rand(64, 1, 28, 28), torch.randint(0, 10, (64,))
            net.eval()
            x_adv = pgd(net, x, y, eps=EPS, norm="linf", steps=10, stepsize=ALPHA).x_adv
            net.train()
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(net(x_adv), y).backward()
            opt.step()
    return time.perf_counter() - start


def bench_processes(reps: int, batches: int = 20) -> Row:
    """Issue 32's "both cores busy": two independent lenet5 adversarial trainings in two processes of one thread
    each (started before timing), against both in this process one after the other on two threads."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # spawned, not forked: a fork of a process whose OpenMP pool already ran can hang in the child
    with ProcessPoolExecutor(max_workers=2, mp_context=multiprocessing.get_context("spawn")) as pool:
        list(pool.map(_train_lenets, [1, 1], [1, 1], [1, 1]))  # start both workers before any timing

        def two_processes() -> None:
            list(pool.map(_train_lenets, [1, 1], [1, 1], [batches, batches]))

        threads = torch.get_num_threads()
        o, p, r, rs = compare(
            two_processes, lambda: _train_lenets(2, 2, batches), reps, torch.device("cpu"), "two processes"
        )
        torch.set_num_threads(threads)
    return Row(
        f"two lenet5 PGD-10 trainings ({batches} batches of 64 each): two 1-thread processes / one after the other "
        "on 2 threads",
        _fmt(o),
        f"one after the other: {_fmt(p)}",
        r,
        TARGET_PROCESSES,
        ratios=rs,
    )


_SUITE_CHILD = """
import json, resource, sys
from pathlib import Path
from advlib.cli import run_notebook
run_notebook(sys.argv[1], sys.argv[2], [], Path(sys.argv[3]))
usage = [resource.getrusage(who).ru_maxrss for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
print(json.dumps({"self_kib": usage[0], "kernel_kib": usage[1]}))
"""

# the floor of a rerun: the same process start, papermill and kernel start, and only the notebook's import lines
_FLOOR_CHILD = """
import sys
import nbformat, papermill
from advlib.cli import notebook_path
source = nbformat.read(notebook_path(sys.argv[1]), as_version=4)
imports = [line for cell in source.cells if cell.cell_type == "code" for line in cell.source.splitlines()
           if line.startswith(("import ", "from "))]
floor = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("\\n".join(imports))], metadata=source.metadata)
nbformat.write(floor, sys.argv[2])
papermill.execute_notebook(sys.argv[2], sys.argv[2], cwd=str(notebook_path(sys.argv[1]).parent), progress_bar=False)
"""


def stage_of(stage: dict) -> str:
    """The profile row a timed stage falls in: training per system, an attack family (all its eps and models),
    other cached evaluations and the tables' own computation per table."""
    kind, label = stage["kind"], stage["label"]
    if kind == "adversarial":
        return f"attack {label.removeprefix('adversarials ').split('@')[0]}"
    if kind == "training":
        return f"training {label}"
    if kind == "table":
        return f"table {label} (uncached work)"
    return f"{kind} {label}"


def stage_profile(stem: str, cold_seconds: float, summary: dict, share: float = 0.01) -> list[str]:
    """Markdown rows of where a cold notebook run went, from the stage timer in its manifest: every row of at least
    `share` of the cold time, the smaller ones summed, and what no stage covers (kernel start, imports, data,
    cache loads, figures) beside papermill's own start-up (the process time the kernel did not see)."""
    rows: dict[str, list[float]] = {}
    for stage in summary["stages"]:
        entry = rows.setdefault(stage_of(stage), [0, 0.0])
        entry[0] += stage["count"]
        entry[1] += stage["seconds"]
    big = sorted(((name, n, s) for name, (n, s) in rows.items() if s >= share * cold_seconds), key=lambda r: -r[2])
    small = [(n, s) for name, (n, s) in rows.items() if s < share * cold_seconds]
    lines = [f"| {stem} | {name} | {n:.0f} | {s:.1f} | {s / cold_seconds:.1%} |" for name, n, s in big]
    if small:
        n, s = sum(r[0] for r in small), sum(r[1] for r in small)
        lines.append(f"| {stem} | {len(small)} smaller stages | {n:.0f} | {s:.1f} | {s / cold_seconds:.1%} |")
    outside = summary["outside_stages_s"]
    lines.append(
        f"| {stem} | in the kernel, outside every stage (imports, data, cache loads, figures) | | {outside:.1f} | "
        f"{outside / cold_seconds:.1%} |"
    )
    launch = max(0.0, cold_seconds - summary["wall_s"])
    lines.append(f"| {stem} | process and kernel start-up, papermill | | {launch:.1f} | {launch / cold_seconds:.1%} |")
    return lines


def bench_suite(profile: str, stems: list[str] | None = None) -> tuple[list[Row], list[str], list[str]]:
    """Every notebook run with `profile` in its own process against a fresh cache (cold), then again on that cache
    (warm): time per notebook and in total, and the peak resident memory of the notebook's kernel. A third run of
    only the notebook's imports measures the floor that no cache removes (process, kernel start, imports). The cold
    run's stage timer (its manifest's `time_by_stage`) gives where its time went."""
    import json
    import subprocess
    import sys
    import tempfile

    from advlib.cli import available_stems

    known = available_stems()
    unknown = sorted(set(stems or []) - set(known))
    if unknown:
        raise SystemExit(f"unknown notebooks {unknown}; choose from {', '.join(known)}")
    project = Path(__file__).resolve().parents[1]
    rows, memory, stages, totals = [], [], [], {"cold": 0.0, "warm": 0.0, "floor": 0.0}
    with tempfile.TemporaryDirectory(prefix="advlib-suite-") as tmp:
        home = Path(tmp)
        for shared in ("params", "notebooks"):
            (home / shared).symlink_to(project / shared, target_is_directory=True)
        (home / "pyproject.toml").write_text("")
        env = {**os.environ, "ADVLIB_HOME": str(home), "ADVLIB_CACHE": str(home / "artifacts")}
        for stem in tqdm([s for s in known if stems is None or s in stems], desc=f"notebook suite ({profile})"):
            seconds, peak = {}, 0
            for state in ("cold", "warm"):
                began = time.perf_counter()
                done = subprocess.run(
                    [sys.executable, "-c", _SUITE_CHILD, stem, profile, str(home / f"{stem}-{state}.ipynb")],
                    env=env,
                    capture_output=True,
                    text=True,
                )
                seconds[state] = time.perf_counter() - began
                if done.returncode != 0:
                    raise RuntimeError(f"notebook {stem} ({profile}, {state}) failed:\n{done.stderr[-2000:]}")
                if state == "cold":
                    manifest = max((home / "runs" / stem).glob("*/manifest.json"), key=lambda p: p.stat().st_mtime)
                    stages += stage_profile(stem, seconds[state], json.loads(manifest.read_text())["time_by_stage"])
                usage = json.loads(done.stdout.strip().splitlines()[-1])
                peak = max(peak, usage["kernel_kib"])
                totals[state] += seconds[state]
            began = time.perf_counter()
            done = subprocess.run(
                [sys.executable, "-c", _FLOOR_CHILD, stem, str(home / f"{stem}-floor.ipynb")],
                env=env,
                capture_output=True,
                text=True,
            )
            if done.returncode != 0:
                raise RuntimeError(f"the imports of notebook {stem} failed:\n{done.stderr[-2000:]}")
            seconds["floor"] = time.perf_counter() - began
            totals["floor"] += seconds["floor"]
            rows.append(
                Row(
                    f"{stem} ({profile}): warm rerun / cold run",
                    _fmt(seconds["warm"]),
                    f"cold: {_fmt(seconds['cold'])}",
                    seconds["warm"] / seconds["cold"],
                    TARGET_WARM,
                    why=_warm_why(seconds),
                )
            )
            memory.append(f"| {stem} | {profile} | {peak / 1024:.0f} MiB |")
    rows.append(
        Row(
            f"{'all notebooks' if stems is None else ', '.join(stems)} ({profile}): warm rerun / cold run",
            _fmt(totals["warm"]),
            f"cold: {_fmt(totals['cold'])}",
            totals["warm"] / totals["cold"],
            TARGET_WARM,
            why=_warm_why(totals),
        )
    )
    return rows, memory, stages


def _warm_why(seconds: dict[str, float]) -> str:
    floor, warm, cold = seconds["floor"], seconds["warm"], seconds["cold"]
    return (
        f"a run of only the imports takes {_fmt(floor)} (process, kernel start, imports), so no cache can bring "
        f"warm / cold below {floor / cold:.2f}; the other {_fmt(max(0.0, warm - floor))} of the warm rerun is work "
        f"the cache does not hold (loading artifacts, uncached evaluations, figures and tables)"
    )


def _cpu_seconds() -> tuple[float, float] | None:
    """(CPU seconds used by the whole machine, CPU seconds used by this process and its finished children, such as the
    notebook-suite runs) so far; None off Linux."""
    try:
        import resource

        fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        # user nice system idle iowait irq softirq steal ...: everything but idle and iowait is busy
        busy = (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")
        own = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
        return busy, sum(u.ru_utime + u.ru_stime for u in own)
    except (OSError, ValueError, ImportError, IndexError):
        return None


def machine(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    return f"cpu: {cpu_model()}, {torch.get_num_threads()} threads"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help=f"{QUICK_REPS} repetitions, batch 64, no resnet18 or resnet50_imagenet"
    )
    parser.add_argument(
        "--suite",
        metavar="PROFILE",
        help="profile of the notebook-suite rows (cold vs warm, peak memory); default: ci with --quick, "
        "else default; 'none' skips them",
    )
    parser.add_argument("--bf16", action="store_true", help="run the native attack engine under bf16 autocast")
    parser.add_argument(
        "--channels-last", action="store_true", help="channels_last memory format for the attack engine"
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=PARTS,
        metavar="PART",
        help=f"run only this part (repeatable; one of {', '.join(PARTS)}; default: all)",
    )
    parser.add_argument("--notebooks", metavar="STEM,...", help="the notebook suite with only these notebooks")
    parser.add_argument("--output", type=Path, default=RESULTS, help=f"where to write the table (default {RESULTS})")
    args = parser.parse_args()
    suite = args.suite or ("ci" if args.quick else "default")
    parts = set(args.only or PARTS) - ({"suite"} if suite == "none" else set())

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    reps = QUICK_REPS if args.quick else FULL_REPS
    torch.manual_seed(0)

    cases = [("lenet5", dict(), (1, 28, 28), 64 if args.quick else 256)]
    if not args.quick:
        # the batch of 256 on a GPU; 64 on a CPU, where 36 timed PGD-40 calls at 256 would take over an hour
        cases.append(
            ("resnet18", dict(in_channels=3, num_classes=10), (3, 32, 32), 256 if device.type == "cuda" else 64)
        )

    cpu_start, wall_start = _cpu_seconds(), time.perf_counter()
    rows: list[Row] = []
    for name, kwargs, shape, batch in cases if "engine" in parts else []:
        model = create_model(name, **kwargs).to(device).eval()
        x = torch.rand(batch, *shape, device=device)
        y = torch.randint(0, 10, (batch,), device=device)
        rows.extend(bench_model(name, model, x, y, reps, device, bf16=args.bf16, channels_last=args.channels_last))
    if "steps" in parts:
        counts = STEP_COUNTS if not args.quick else tuple(k for k in STEP_COUNTS if k <= 100)
        model = create_model("width_cnn").to(device).eval()
        x = torch.rand(64, 1, 28, 28, device=device)
        rows.append(
            bench_steps_curve("width_cnn", model, x, torch.randint(0, 10, (64,), device=device), counts, reps, device)
        )
    regroup_cases = [("vgg_small", dict(in_channels=1, input_size=28), (1, 28, 28), 256)]
    if not args.quick:
        regroup_cases.append(("resnet50_imagenet", dict(), (3, 224, 224), 8))
    for name, kwargs, shape, batch in regroup_cases if "regroup" in parts else []:
        model = create_model(name, **kwargs).to(device).eval()
        rows.append(bench_regroup(name, model, torch.rand(batch, *shape, device=device), reps, device))

    for backbone in ("lenet5_classic", "lenet5") if "mat" in parts else ():  # the tiny classic LeNet, and the default
        rows.extend(bench_mat(reps, device, 512 if args.quick else 2048, backbone))  # profile's backbone
    if "union" in parts:
        rows.append(bench_union(reps, device, 128 if args.quick else 512))
    if "family" in parts:
        rows.extend(bench_family(reps, device))
        if device.type == "cpu" and (os.cpu_count() or 1) >= 2:
            rows.append(bench_processes(reps))
    memory: list[str] = []
    stages: list[str] = []
    if "suite" in parts:
        suite_rows, memory, stages = bench_suite(suite, args.notebooks.split(",") if args.notebooks else None)
        rows.extend(suite_rows)

    cpu_end, wall = _cpu_seconds(), time.perf_counter() - wall_start
    foreign = None
    if cpu_start is not None and cpu_end is not None:
        foreign = max(0.0, (cpu_end[0] - cpu_start[0]) - (cpu_end[1] - cpu_start[1])) / (wall * (os.cpu_count() or 1))
    where = machine(device)
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Benchmark results",
        "",
        f"Date {now}; torch {torch.__version__}; device {device.type}"
        f"{' (' + torch.cuda.get_device_name(device) + ')' if device.type == 'cuda' else ''}; "
        f"threads {torch.get_num_threads()}; mode {'quick' if args.quick else 'full'}"
        f"{'; attack engine in bf16 autocast' if args.bf16 else ''}{'; channels_last' if args.channels_last else ''} "
        f"({reps} repetitions after one warm-up"
        + (", lenet5 batch 64 instead of 256, resnet18 and resnet50_imagenet skipped" if args.quick else "")
        + ")"
        + (f"; only {', '.join(p for p in PARTS if p in parts)}" if parts != set(PARTS) else "")
        + (f"; notebooks {args.notebooks}" if args.notebooks and "suite" in parts else "")
        + ".",
        "",
        f"Other processes used {foreign:.0%} of the machine's {os.cpu_count()} CPUs during the {wall:.0f} s run."
        if foreign is not None
        else "CPU use by other processes was not measured (no /proc/stat).",
        "",
        *(
            [
                "**Warning: the machine was shared during this run; timings and verdicts are unreliable, "
                "rerun on an idle machine.**",
                "",
            ]
            if foreign is not None and foreign > 0.10
            else []
        ),
        "Times are medians; ratio = median over repetitions of (ours / peer or limit), each pair timed back to back.",
        "",
        "| what | ours | peer or limit | ratio | target | verdict | machine |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        ratio = f"{row.ratio:.3f}" if row.ratio is not None else "n/a"
        op, bound = row.target
        lines.append(f"| {row.what} | {row.ours} | {row.peer} | {ratio} | {op} {bound:g} | {row.verdict} | {where} |")
    lines += ["", "Per-pair ratios (spread; a wide spread means a noisy machine, rerun before trusting a verdict):", ""]
    for row in rows:
        if row.ratios:
            lines.append(f"- {row.what}: " + ", ".join(f"{r:.3f}" for r in row.ratios))
    missed = [row for row in rows if row.verdict == "missed" and row.why]
    if missed:
        lines += [
            "",
            "Why targets were missed (measured in this run):",
            "",
            *(f"- {row.what}: {row.why}." for row in missed),
        ]
    if memory:
        lines += [
            "",
            "Peak resident memory of each notebook's kernel (the larger of its cold and warm runs):",
            "",
            "| notebook | profile | peak RSS |",
            "|---|---|---|",
            *memory,
        ]
    if stages:
        lines += [
            "",
            f"Where each cold run's time went (`{suite}` profile; each cache build and each table's own computation "
            "is a stage, timed without the stages inside it; attacks summed per family over every eps and model):",
            "",
            "| notebook | stage | runs | seconds | share of the cold run |",
            "|---|---|---:|---:|---:|",
            *stages,
        ]
    lines.append("")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text("\n".join(lines))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
