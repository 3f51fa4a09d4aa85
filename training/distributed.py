"""Distributed training: the `relrec train` pipeline under `torchrun` with DDP.

Reads torchrun's RANK / WORLD_SIZE / LOCAL_RANK (the only environment reads in training/),
initialises the process group (nccl on GPU, gloo on CPU) and runs the same pipeline as
`relrec train`: every rank trains on its shard of each epoch, gradients are all-reduced, rank 0
validates, evaluates and writes the run directory. Usage:

    torchrun --nproc_per_node 2 -m training.distributed --data ratings.csv --model hlr --out run/
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from training.cli import add_train_parser, config_from_args
from training.evaluator import format_metrics


def init_process_group() -> tuple[int, int, int]:
    """(rank, world_size, local_rank) from torchrun's environment; backend by device."""
    rank = int(os.environ.get("RANK", "0"))
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend)
    return rank, world_size, local_rank


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="torchrun -m training.distributed")
    train = add_train_parser(parser.add_subparsers(dest="command"))
    train.add_argument("--dump-params", action="store_true",
                       help="each rank saves its final parameters (for the DDP test)")
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv if argv[:1] == ["train"] else ["train", *argv])
    rank, world_size, local_rank = init_process_group()
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING)
    cfg = config_from_args(args)
    if torch.cuda.is_available() and cfg.trainer.device == "auto":
        cfg.trainer.device = f"cuda:{local_rank}"
    from training.pipeline import run

    result = run(cfg, args.out, rank=rank, world_size=world_size)
    if args.dump_params:
        # each rank writes what it ended with, so a test can check DDP kept them identical
        state = {k: v.detach().cpu() for k, v in result.model.state_dict().items()}
        torch.save(state, Path(args.out) / f"params_rank{rank}.pt")
    if rank == 0:
        sys.stdout.write(format_metrics(result.metrics) + "\n")
    if world_size > 1:
        dist.barrier()
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
