"""CLI and runtime: listing, cache commands, early rejection of bad runs, devices, seeding, manifests."""

from __future__ import annotations

import json
import platform
import shutil
from pathlib import Path

import pytest
import torch

from advlib import cli, params, runtime
from advlib.cache import Artifact, Cache, derive_key


def test_list_shows_registries(capsys):
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    for name in ("quickstart", "lenet5", "mnist5k", "pgd_linf", "autoattack_linf", "foolbox"):
        assert name in out


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("eps_curve.eps=[-1]", "> 0"),
        ("attacks.0.name=nope", "unknown attack 'nope'"),
        ("trian.epochs=1", "unknown key 'trian'"),
    ],
)
def test_run_rejects_bad_overrides_before_work(override, fragment, capsys, monkeypatch):
    import papermill

    def must_not_run(*args, **kwargs):
        raise AssertionError("papermill started despite invalid parameters")

    monkeypatch.setattr(papermill, "execute_notebook", must_not_run)
    assert cli.main(["run", "quickstart", "--profile", "ci", "--set", override]) == 2
    assert fragment in capsys.readouterr().err


def test_run_passes_profile_and_overrides_to_papermill(monkeypatch, tmp_path):
    import papermill

    calls = []

    def execute(src, dst, **kw):
        calls.append((src, dst, kw))
        Path(dst).write_text("{}")

    monkeypatch.setattr(papermill, "execute_notebook", execute)
    out = tmp_path / "out.ipynb"
    assert cli.main(["run", "quickstart", "--profile", "ci", "--set", "train.epochs=2", "--output", str(out)]) == 0
    src, dst, kw = calls[0]
    assert src.endswith("00_quickstart.ipynb") and out.read_text() == "{}" and not Path(dst).exists()
    assert kw["parameters"] == {"profile": "ci", "overrides": {"train.epochs": 2}}


def test_cache_commands(project, capsys):
    cache = Cache()
    cache.get_or_build(derive_key("model", a=1), lambda: Artifact({"w": torch.ones(2)}, {}))
    assert cli.main(["cache", "ls"]) == 0
    assert "1 entries" in capsys.readouterr().out
    entry = next(cache.entries())
    (entry / "tensors.safetensors").write_bytes(b"broken")
    assert cli.main(["cache", "verify"]) == 1
    assert "CORRUPT" in capsys.readouterr().out
    assert cli.main(["cache", "prune", "--corrupt"]) == 0
    assert cli.main(["cache", "verify"]) == 0


def test_resolve_device():
    assert runtime.resolve_device("cpu").type == "cpu"
    assert runtime.resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="device 'tpu'.*auto, cpu, cuda, mps"):
        runtime.resolve_device("tpu")


def test_seeding_is_reproducible():
    runtime.seed_everything(5)
    a = torch.rand(3)
    runtime.seed_everything(5)
    assert torch.equal(a, torch.rand(3))


def test_run_manifest(project):
    (project / "params" / "quickstart").mkdir()
    p = params.Params(seed=3, device="cpu", threads=None)
    run = runtime.Run("quickstart", "ci", p, seed=3, device="cpu", threads=None)
    path = run.write_manifest()
    manifest = json.loads(path.read_text())
    assert path.parent == project / "runs" / "quickstart" / f"ci-{runtime.params_digest(p)}"
    assert manifest["seed"] == 3 and manifest["device"] == "cpu" and manifest["threads"] == torch.get_num_threads()
    assert manifest["params"]["seed"] == 3 and "torch" in manifest["versions"]
    assert manifest["wall_time_s"] >= 0
    assert manifest["device_name"] == runtime.cpu_model()


def test_cpu_model_names_the_model_family_and_number(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text(
        "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 26\nmodel\t\t: 2\n"
        "model name\t: AMD EPYC 9R45\nprocessor\t: 1\nmodel name\t: AMD EPYC 9R45\n"
    )
    assert runtime.cpu_model(info) == "AMD EPYC 9R45 (family 26, model 2)"
    assert runtime.cpu_model(tmp_path / "missing") == (platform.processor() or platform.machine())


def test_run_sets_the_dtype_that_models_and_images_are_made_in(project):
    from advlib.data import load_dataset, to_tensors
    from advlib.models import create_model

    try:
        run = runtime.Run("quickstart", "ci", params.Params(dtype="float64"), device="cpu", dtype="float64")
        assert run.dtype == torch.float64 and run.manifest()["dtype"] == "float64"
        assert set(run.manifest()["kernels"]) == {"aten_capability", "mkl_cbwr", "onednn", "threads"}
        model = create_model("lenet5_classic")
        x, _ = to_tensors(load_dataset("mnist5k", "test"), n=4)
        assert x.dtype == torch.float64 and {t.dtype for t in model.state_dict().values()} == {torch.float64}
        assert model(x).dtype == torch.float64
    finally:
        torch.set_default_dtype(torch.float32)
    with pytest.raises(ValueError, match="'float16' is not allowed; choose one of float32, float64"):
        runtime.set_dtype("float16")
    with pytest.raises(params.ParamsError, match="dtype"):
        params.load("quickstart", "ci", {"dtype": "half"})


def _conv_kernels(conv: torch.nn.Conv2d, x: torch.Tensor) -> set[str]:
    """The ATen convolution kernels a forward and backward pass of `conv` ran."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        conv(x).sum().backward()
    return {
        e.name
        for e in prof.events()
        if "conv" in e.name
        and e.name not in ("aten::conv2d", "aten::convolution", "aten::_convolution", "aten::convolution_backward")
    }


def test_portable_kernels_turn_onednn_and_nnpack_off_only_when_asked(monkeypatch):
    monkeypatch.setattr(torch.backends.mkldnn, "enabled", True)  # restored after the test
    nnpack_before = torch._C._get_nnpack_enabled()
    conv = torch.nn.Conv2d(1, 8, 5)
    x = torch.rand(64, 1, 28, 28, requires_grad=True)  # a batch NNPACK takes when it is on
    try:
        monkeypatch.delenv(runtime.PORTABLE_KERNELS_ENV, raising=False)
        assert runtime.use_portable_kernels() is False and torch.backends.mkldnn.enabled
        monkeypatch.setenv(runtime.PORTABLE_KERNELS_ENV, "0")
        assert runtime.use_portable_kernels() is False and torch.backends.mkldnn.enabled
        with torch.no_grad():
            fast = conv(x)
        monkeypatch.setenv(runtime.PORTABLE_KERNELS_ENV, "1")
        assert runtime.use_portable_kernels() is True and not torch.backends.mkldnn.enabled
        assert not torch._C._get_nnpack_enabled()
        assert "aten::_slow_conv2d_forward" in _conv_kernels(conv, x)  # im2col + GEMM: MKL, pinned by the Makefile
        assert not any("nnpack" in name or "mkldnn" in name for name in _conv_kernels(conv, x))
        with torch.no_grad():
            assert torch.allclose(conv(x), fast, atol=1e-5)  # the same convolution, by another kernel
    finally:
        torch.backends.nnpack.set_flags(nnpack_before)


def test_portable_kernel_runs_cache_apart_from_plain_runs(monkeypatch, tmp_path):
    """A run with oneDNN and NNPACK off (a `make portability` perturbation) must not load what a plain run cached:
    the default roots differ by kernel mode."""
    monkeypatch.delenv("ADVLIB_CACHE", raising=False)
    monkeypatch.delenv(runtime.PORTABLE_KERNELS_ENV, raising=False)
    plain = runtime.cache_root()
    monkeypatch.setenv(runtime.PORTABLE_KERNELS_ENV, "1")
    portable = runtime.cache_root()
    assert plain.name == "artifacts" and portable.name == "artifacts-portable" and plain.parent == portable.parent
    monkeypatch.setenv(runtime.PORTABLE_KERNELS_ENV, "0")
    assert runtime.cache_root() == plain
    monkeypatch.setenv("ADVLIB_CACHE", str(tmp_path))  # an explicit root is taken as given
    assert runtime.cache_root() == tmp_path.resolve()


def test_cache_prune_kind_must_name_a_kind_present(project, capsys):
    Cache().get_or_build(derive_key("model", a=1), lambda: Artifact({"w": torch.ones(2)}, {}))
    assert cli.main(["cache", "prune", "--kind", "modle"]) == 2
    err = capsys.readouterr().err
    assert "--kind 'modle'" in err and "kinds present: model" in err
    assert len(list(Cache().entries())) == 1  # nothing removed
    assert cli.main(["cache", "prune", "--kind", "model"]) == 0
    assert not list(Cache().entries())


@pytest.mark.parametrize(
    "plot, message",
    [
        ("attack_suite.accuracy:eps", "--plot key 'eps' is not swept; swept keys: n_eval"),
        ("attack_suit.accuracy:n_eval", "--plot table 'attack_suit' is not a table of quickstart; tables: "),
        (
            "attack_suite.acc:n_eval",
            "--plot column 'acc' is not in quickstart's attack_suite; columns: attack, norm, eps",
        ),
        ("attack_suite:n_eval", "is not of the form table.column:key"),
    ],
)
def test_sweep_plot_is_checked_before_any_point_runs(plot, message, monkeypatch, capsys):
    from advlib import sweep as sweep_mod

    monkeypatch.setattr(sweep_mod, "run_sweep", lambda *a, **k: pytest.fail("the sweep ran before --plot was checked"))
    assert cli.main(["sweep", "quickstart", "--grid", "n_eval=32,48", "--plot", plot]) == 2
    assert message in capsys.readouterr().err


def test_unknown_notebook_is_a_usage_error(capsys):
    assert cli.main(["run", "quikstart", "--profile", "ci"]) == 2
    assert "unknown notebook 'quikstart'; allowed: " in capsys.readouterr().err


@pytest.fixture()
def real_params(project):
    """The isolated project with the repository's real profiles and notebooks."""
    root = Path(__file__).resolve().parents[1]
    shutil.rmtree(project / "params")
    shutil.copytree(root / "params", project / "params")
    (project / "notebooks").mkdir()
    for notebook in (root / "notebooks").glob("[0-9][0-9]_*.ipynb"):
        (project / "notebooks" / notebook.name).write_text("{}")
    return project


def test_only_published_runs_write_figures(real_params, monkeypatch):
    from advlib import report

    plain = params.load("quickstart", "ci")
    changed = params.load("quickstart", "ci", ["train.epochs=2"])
    runs = real_params / "runs" / "quickstart"
    assert runtime.Run("quickstart", "ci", changed).out == runs / f"ci-{runtime.params_digest(changed)}"
    assert runtime.Run("quickstart", "ci", plain).out == runs / f"ci-{runtime.params_digest(plain)}"
    assert runtime.params_digest(plain) != runtime.params_digest(changed)
    assert (
        report.save_table(report.pd.DataFrame({"a": [1.0]}), "quickstart", "ci", "t")["csv"].parent
        == runs / f"ci-{runtime.params_digest(plain)}"
    )  # save_table follows the notebook's Run
    monkeypatch.setenv(runtime.PUBLISH_ENV, "1")
    assert runtime.Run("quickstart", "ci", plain).out == real_params / "figures" / "quickstart" / "ci"
    with pytest.raises(params.ParamsError, match="without overrides"):  # refused at the notebook's first cell
        params.load("quickstart", "ci", ["train.epochs=2"])
    assert not (real_params / "figures" / "quickstart" / "ci" / "t.csv").exists()


def test_publish_takes_only_a_built_in_profile_without_overrides(monkeypatch, capsys):
    import papermill

    monkeypatch.setattr(papermill, "execute_notebook", lambda *a, **k: pytest.fail("papermill started"))
    assert cli.main(["run", "quickstart", "--profile", "ci", "--publish", "--set", "train.epochs=2"]) == 2
    assert "--publish" in capsys.readouterr().err


def test_failed_run_keeps_the_last_good_notebook_and_reports_one_line(real_params, monkeypatch, capsys):
    import papermill

    outcomes = iter(["good", "bad"])

    def execute(src, dst, **kw):
        text = next(outcomes)
        Path(dst).write_text(text)
        if text == "bad":
            raise papermill.PapermillExecutionError(3, 4, "fit()", "ValueError", "k must be between 1 and 8\nmore", [])

    monkeypatch.setattr(papermill, "execute_notebook", execute)
    assert cli.main(["run", "quickstart", "--profile", "ci"]) == 0
    capsys.readouterr()
    assert cli.main(["run", "quickstart", "--profile", "ci"]) == 1
    err = capsys.readouterr().err
    folder = runtime.run_dir("quickstart", "ci", params.load("quickstart", "ci"))
    assert (folder / "00_quickstart.ipynb").read_text() == "good"
    assert (folder / "00_quickstart.failed.ipynb").read_text() == "bad"
    assert [line for line in err.strip().splitlines() if not line.startswith("[advlib] run:")] == [
        "advlib: quickstart failed: ValueError: k must be between 1 and 8",
        f"  executed notebook: {(folder / '00_quickstart.failed.ipynb').relative_to(real_params)} "
        f"(last good run kept: {(folder / '00_quickstart.ipynb').relative_to(real_params)})",
    ]
    assert str(real_params) not in err


@pytest.mark.parametrize(
    "args, env, message",
    [
        (["regroup", "--set", "k=99"], {}, "k=99 exceeds the 8 voting layers of 'VGG'"),
        (["quickstart", "--set", "data.name=mnist"], {}, "'mnist' (train) was not found"),
        (
            ["quickstart", "--set", "data.name=mnist", "--set", "data.download=true"],
            {"ADVLIB_DATA": "{file}/data"},
            "not writable",
        ),
        (["quickstart", "--set", "device=cuda"], {}, "CUDA is not available"),
    ],
)
def test_machine_problems_are_usage_errors_before_the_kernel_starts(
    real_params, monkeypatch, capsys, args, env, message
):
    import papermill

    if "device=cuda" in args and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    (real_params / "a_file").write_text("")
    monkeypatch.setenv("ADVLIB_DATA", str(real_params / "empty_data"))
    for name, value in env.items():
        monkeypatch.setenv(name, value.format(file=real_params / "a_file"))
    monkeypatch.setattr(papermill, "execute_notebook", lambda *a, **k: pytest.fail("papermill started"))
    assert cli.main(["run", *args[:1], "--profile", "ci", *args[1:]]) == 2
    err = capsys.readouterr().err
    assert message in err and len([line for line in err.splitlines() if line.startswith("advlib:")]) == 1
