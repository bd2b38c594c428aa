"""A subprocess the interruption tests SIGKILL at random moments: `train` (a cached, checkpointed training run)
or `attack` (a cached PGD evaluation). Prints 'ready' once imports are done and 'done' at the end."""

from __future__ import annotations

import sys

import torch

from advlib.cache import Cache, cached_model, derive_key
from advlib.data import load_dataset, to_tensors
from advlib.evaluate import attack
from advlib.models import create_model
from advlib.params import AttackSpec, TrainSpec
from advlib.train import ClassifierStep, fit


def main(mode: str, root: str) -> None:
    torch.set_num_threads(1)
    cache = Cache(root)
    torch.manual_seed(0)
    model = create_model("lenet5_classic")
    print("ready", flush=True)
    if mode == "train":
        train = load_dataset("mnist5k", "train", n=600, seed=0)
        spec = TrainSpec(model="lenet5_classic", epochs=6, batch_size=50)
        cached_model(
            derive_key("reliability", spec=spec),
            model,
            lambda m, ckpt: fit(
                ClassifierStep(m, train, spec),
                seed=0,
                checkpoint_dir=ckpt,
                on_epoch=lambda e, *_: print(f"epoch {e}", flush=True),
            ),
            cache=cache,
        )
    elif mode == "attack":
        x, y = to_tensors(load_dataset("mnist5k", "test", n=300, seed=0))
        spec = AttackSpec(name="pgd_linf", eps=0.1, steps=150, stepsize=0.005)
        attack(spec, model.eval(), x, y, model_key="untrained-lenet5-classic-seed0", cache=cache)
    else:
        raise SystemExit(f"mode {mode!r} is not allowed; choose train or attack")
    print("done", flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
