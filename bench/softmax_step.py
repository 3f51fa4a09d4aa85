"""Cost of one softmax training step over shared negatives, against a one-negative hinge step.

One forward + backward of an HLR batch shaped like ML-1M's (1,000 users, 2,810 items, d 100,
N 20, L 50), side by side in one run: the hinge with one negative (the reference recipe), and
the sampled softmax's S shared negatives scored per distinct history item (`HistoryPairs`, the
shipped path) and per history slot (the generic `RelationalModel._shared_distance`). Prints
seconds (best of --repeat) and the ratios.

    python bench/softmax_step.py --shared 32 100
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch

from models.base import RelationalModel
from models.config import ModelConfig
from models.registry import build_model


def _best(step: Callable[[], None], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return min(times)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shared", nargs="+", type=int, default=[32, 100])
    p.add_argument("--users", type=int, default=1000)
    p.add_argument("--items", type=int, default=2810)
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    batch, length = args.users, 50
    model = build_model(ModelConfig(kind="hlr", dim=100, n_memory=20, l_max=length),
                        6000, args.items)
    users, pos = torch.randint(0, 6000, (batch,)), torch.randint(0, args.items, (batch,))
    hist, mask = torch.randint(0, args.items, (batch, length)), torch.rand(batch, length) < 0.8

    def hinge() -> None:
        neg = torch.randint(0, args.items, (batch,))
        d_pos, d_neg = model.triplet_distances(users, pos, neg, hist, mask)
        (d_pos.sum() + d_neg.sum()).backward()

    def softmax(n: int, generic: bool) -> Callable[[], None]:
        def step() -> None:
            cands = torch.randperm(args.items)[:n]
            if generic:  # the per-slot path every kind inherits
                model._shared_distance = (  # type: ignore[method-assign]
                    lambda *a: RelationalModel._shared_distance(model, *a))
            else:
                model.__dict__.pop("_shared_distance", None)
            d_pos, d_shared = model.shared_distances(users, pos, cands, hist, mask)
            (d_pos.sum() + d_shared.sum()).backward()
        return step

    base = _best(hinge, args.repeat)
    print(f"hinge, one negative: {base:.3f} s")
    for n in args.shared:
        pairs = _best(softmax(n, False), args.repeat)
        slots = _best(softmax(n, True), args.repeat)
        print(f"softmax S={n}: per distinct item {pairs:.3f} s ({pairs / base:.1f}x hinge), "
              f"per slot {slots:.3f} s ({slots / base:.1f}x hinge, {slots / pairs:.1f}x slower)")


if __name__ == "__main__":
    main()
