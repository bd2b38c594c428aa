"""Where REGroup inference and MAT's attack spend their time on a CUDA device, and what CUDA graphs would give.

Run on a GPU machine: `python benchmarks/cuda_profile.py > benchmarks/cuda-profile.log` (the committed log is one such
run on an H200). It prints eager and CUDA-graph timings, the CPU time spent enqueuing, and torch profiler tables.
"""

import time
import traceback

import torch
from torch.profiler import ProfilerActivity, profile

from advlib.defenses.regroup import RegroupClassifier, fit_regroup
from advlib.models import create_model

dev = torch.device("cuda")


def timeit(fn, n=50):
    fn()
    fn()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(n):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t) / n


def graphed(fn):
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        out = fn()
    return g, out


def prof_table(fn, sort="self_cpu_time_total", rows=18):
    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as p:
        fn()
        torch.cuda.synchronize()
    ka = p.key_averages()
    n_kernels = sum(e.count for e in ka if e.device_type == torch.autograd.DeviceType.CUDA)
    print(f"  kernels launched: {n_kernels}")
    print(ka.table(sort_by=sort, row_limit=rows))


for name, kw, shape, b in [
    ("vgg_small", dict(in_channels=1, input_size=28), (1, 28, 28), 256),
    ("resnet50_imagenet", {}, (3, 224, 224), 8),
]:
    try:
        torch.manual_seed(0)
        model = create_model(name, **kw).to(dev).eval()
        x = torch.rand(b, *shape, device=dev)
        with torch.no_grad():
            labels = model(x).argmax(1)
        stats = fit_regroup(model, x, labels, per_class=b, on_empty_class="uniform")
        k = min(5, len(stats.layer_names))
        c = RegroupClassifier(model, stats, k=k, batch_size=b)
        first = c.num_layers - k

        def soft():
            with torch.no_grad():
                return model(x).softmax(1).argmax(1)

        def votes_only():
            return [v[:, :, 0:2].sum(dim=(1, 2)) for _, _, v in c._votes(x, first)][0]

        ts, tp, tv = timeit(soft), timeit(lambda: c.predict(x)), timeit(votes_only)
        print(
            f"{name} b{b}: softmax {ts * 1e3:.3f} ms, predict {tp * 1e3:.3f} ms ({tp / ts:.2f}x), "
            f"votes no sync {tv * 1e3:.3f} ms ({tv / ts:.2f}x)"
        )
        # CPU-side cost alone: enqueue time without waiting
        torch.cuda.synchronize()
        t = time.perf_counter()
        votes_only()
        cpu_t = time.perf_counter() - t
        torch.cuda.synchronize()
        t = time.perf_counter()
        soft()
        cpu_s = time.perf_counter() - t
        print(f"  enqueue time: votes {cpu_t * 1e3:.3f} ms, softmax {cpu_s * 1e3:.3f} ms")
        try:
            gs, _ = graphed(soft)
            gv, _ = graphed(votes_only)
            tgs, tgv = timeit(gs.replay), timeit(gv.replay)
            print(f"  CUDA graphs: softmax {tgs * 1e3:.3f} ms, REGroup votes {tgv * 1e3:.3f} ms ({tgv / tgs:.2f}x)")
        except Exception:
            traceback.print_exc()
        prof_table(votes_only)
    except Exception:
        traceback.print_exc()

try:
    import triton

    print("triton", triton.__version__)
    f = torch.compile(lambda a: (a.clamp_min(0).sum(dim=(2, 3)), (-a).clamp_min(0).sum(dim=(2, 3))))
    a = torch.randn(256, 64, 14, 14, device=dev)
    t = time.perf_counter()
    f(a)
    torch.cuda.synchronize()
    print(f"compile first call {time.perf_counter() - t:.1f} s")
    print(
        f"compiled accumulators {timeit(lambda: f(a)) * 1e6:.1f} us, eager "
        f"{timeit(lambda: (a.clamp_min(0).sum(dim=(2, 3)), (-a).clamp_min(0).sum(dim=(2, 3)))) * 1e6:.1f} us"
    )
except Exception:
    traceback.print_exc()

try:
    from advlib.data import dataset_info
    from advlib.defenses.mat import NormStep, mat_attack
    from advlib.models.mimo import SingleAsMIMO, create_mimo

    info = dataset_info("mnist5k")
    steps = [NormStep("linf", 0.3, 0.1), NormStep("l2", 2.0, 0.7), NormStep("l1", 10.0, 3.5)]
    for backbone in ("lenet5_classic", "lenet5"):
        mimo = create_mimo(backbone, info, 3).to(dev).eval()
        single = SingleAsMIMO(create_model(backbone)).to(dev).eval()
        x3, y3 = torch.rand(64, 3, 1, 28, 28, device=dev), torch.randint(0, 10, (64, 3), device=dev)
        x1, y1 = x3[:, :1].contiguous(), y3[:, :1].contiguous()
        g = torch.Generator(device=dev).manual_seed(0)
        t_mat = timeit(lambda: mat_attack(mimo, x3, y3, steps, 10, generator=g), 20)
        t_lin = timeit(lambda: mat_attack(mimo, x3, y3, steps[:1] * 3, 10, generator=g), 20)
        t_at = timeit(lambda: mat_attack(single, x1, y1, steps[:1], 10, generator=g), 20)
        print(
            f"MAT attack {backbone}: MAT {t_mat * 1e3:.2f} ms, all-Linf {t_lin * 1e3:.2f} ms, AT {t_at * 1e3:.2f} ms; "
            f"MAT/AT {t_mat / t_at:.2f}, all-Linf/AT {t_lin / t_at:.2f}"
        )
        if backbone == "lenet5_classic":
            prof_table(lambda: mat_attack(mimo, x3, y3, steps, 10, generator=g), rows=22)
except Exception:
    traceback.print_exc()
