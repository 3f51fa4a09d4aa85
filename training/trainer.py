"""Trainer: fits a RelationalModel on a TrainDataset and keeps the best epoch on validation.

Reads batches from `TrainDataset`, writes the model's parameters in place (the best epoch's
state is restored at the end) and returns the per-epoch log. The loop follows the HLR
reference code (DESIGN §1): one uniform negative per positive, hinge loss summed over the batch,
dense Adam, projection of every row into the unit ball after each step. Under `torchrun` the
same loop runs with DistributedDataParallel (see `training/distributed.py`).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import queue
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from models.losses import hinge_loss, mean_hinge_loss, softmax_loss, warp_loss
from training import machine
from training.config import ConfigError, TrainerConfig
from training.dataset import Batch, TrainDataset

log = logging.getLogger(__name__)


class TrainingDivergedError(RuntimeError):
    """The loss became NaN or infinite; lower the learning rate or check the data."""


@dataclass
class EpochLog:
    epoch: int
    loss: float
    valid: float
    time_s: float
    data_time_s: float


@dataclass
class TrainResult:
    epochs: list[EpochLog] = field(default_factory=list)
    best_epoch: int = 0
    best_valid: float = float("nan")

    @property
    def mean_epoch_time_s(self) -> float:
        return float(np.mean([e.time_s for e in self.epochs])) if self.epochs else 0.0

    @property
    def data_share(self) -> float:
        """Share of the epoch spent building batches (sampling), not in model arithmetic."""
        total = sum(e.time_s for e in self.epochs)
        return sum(e.data_time_s for e in self.epochs) / total if total else 0.0


def resolve_device(device: str) -> torch.device:
    """`auto` picks CUDA when present (minGPT's trainer does the same)."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as exc:
        raise ConfigError(f"trainer.device {device!r} is not a device: {exc}") from None
    if resolved.type == "cuda":
        # Found here, not at the first .to(): torch's AssertionError names no fix (issue 19).
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (resolved.index or 0) >= count:
            raise ConfigError(f"--device {device}: this torch sees {count} CUDA device(s) "
                              f"(torch {torch.__version__}, CUDA build: "
                              f"{torch.version.cuda or 'none'}); use --device cpu or auto")
    return resolved


class TripletObjective(torch.nn.Module):
    """The hinge objective as a module, so DDP's forward hooks see every gradient.

    `negatives` is the trainer's: "uniform" and "hardest" (whose negative the trainer has
    already chosen) are the summed hinge, "mean" and "warp" read all n negatives; with
    "softmax" the dataset draws n negatives shared by the batch (`Batch.neg_hits` set) and
    the loss is the sampled softmax over them at `temperature`.
    """

    def __init__(self, model: torch.nn.Module, negatives: str = "uniform",
                 temperature: float = 0.1) -> None:
        super().__init__()
        self.model = model
        self.negatives = negatives
        self.temperature = temperature

    def forward(self, batch: Batch) -> torch.Tensor:
        if batch.neg_hits is not None:  # the sampled softmax over negatives shared by the batch
            d_pos, d_shared = self.model.shared_distances(
                batch.user_rows, batch.pos_rows, batch.neg_rows, batch.hist_rows,
                batch.hist_mask)
            return softmax_loss(d_pos, d_shared, self.temperature, exclude=batch.neg_hits)
        d_pos, d_neg = self.model.triplet_distances(
            batch.user_rows, batch.pos_rows, batch.neg_rows, batch.hist_rows, batch.hist_mask)
        margin = self.model.config.margin
        if self.negatives == "mean":
            return mean_hinge_loss(d_pos, d_neg, margin)
        if self.negatives == "warp":
            return warp_loss(d_pos, d_neg, margin, self.model.n_items)
        return hinge_loss(d_pos, d_neg, margin)


# Objectives other than TripletObjective (SERML's, the item-text terms) read one negative per
# positive: with them, only these settings of `negatives` apply.
ONE_NEGATIVE = ("uniform", "hardest")


Validator = Callable[[torch.nn.Module], float]


class Trainer:
    """Runs epochs, validates, early-stops, restores the best epoch."""

    def __init__(self, model: torch.nn.Module, cfg: TrainerConfig, rank: int = 0,
                 world_size: int = 1, objective: torch.nn.Module | None = None) -> None:
        """`objective(batch) -> loss` defaults to the hinge loss; a richer one (SERML's
        `training.text.semantic.SemanticObjective`) holds `model` plus its own parameters, and
        Adam updates all of them."""
        self.cfg = cfg
        self.rank = rank
        self.world_size = world_size
        self.device = resolve_device(cfg.device)
        self.threads = machine.configure(cfg.threads, world_size)
        self.model = model.to(self.device)
        if objective is None:
            objective = TripletObjective(self.model, cfg.negatives, cfg.temperature)
        elif cfg.negatives not in ONE_NEGATIVE or (cfg.negatives == "uniform"
                                                     and cfg.n_negatives > 1):
            raise ValueError(f"negatives={cfg.negatives!r} with n_negatives={cfg.n_negatives} "
                             "needs the plain hinge objective; with review or item text use "
                             "uniform (one negative) or hardest")
        # What `fit` snapshots and restores at the best epoch: the model and any parameters of
        # the objective (a text projection must stay paired with the item vectors it fits).
        self.trained = objective.to(self.device)
        params = list(objective.parameters())
        if world_size > 1:
            ddp_ids = [self.device.index] if self.device.type == "cuda" else None
            objective = torch.nn.parallel.DistributedDataParallel(objective, device_ids=ddp_ids)
        self.objective = torch.compile(objective) if cfg.compile else objective
        self.optimizer = torch.optim.Adam(self._param_groups(params), lr=cfg.lr)
        self.scheduler = _scheduler(self.optimizer, cfg)

    def _param_groups(self, params: list[torch.nn.Parameter]) -> list[dict[str, Any]]:
        """One Adam group, or two with `lr_memory` or `memory_decay`: K and M apart."""
        lram = getattr(self.model, "lram", None)
        if (self.cfg.lr_memory is None and not self.cfg.memory_decay) or lram is None:
            return [{"params": params}]
        memory = {id(p) for p in lram.parameters()}
        rest = [p for p in params if id(p) not in memory]
        group = {"params": list(lram.parameters()), "lr": self.cfg.lr_memory or self.cfg.lr,
                 "weight_decay": self.cfg.memory_decay}
        return [{"params": rest}, group]

    def fit(self, dataset: TrainDataset, validate: Validator | None = None,
            on_epoch: Callable[[EpochLog], None] | None = None) -> TrainResult:
        """Train up to `epochs`; `validate(model)` returns a score where higher is better.

        `on_epoch(log)` runs after each epoch's validation (a tuner reports it to its study);
        an exception it raises (a pruned trial) ends training and propagates.
        """
        torch.manual_seed(self.cfg.seed)
        rng = np.random.default_rng(self.cfg.seed)
        result = TrainResult()
        best_state = None
        best = -math.inf
        stale = 0
        for epoch in range(1, self.cfg.epochs + 1):
            loss, elapsed, data_time = self._epoch(dataset, rng, epoch)
            score = self._validate(validate)
            result.epochs.append(EpochLog(epoch, loss, score, elapsed, data_time))
            log.info("epoch %d loss %.4f valid %.4f (%.1fs, data %.0f%%)", epoch, loss, score,
                     elapsed, 100 * data_time / max(elapsed, 1e-9))
            if on_epoch is not None:
                on_epoch(result.epochs[-1])
            self._schedule(score)
            if validate is None or score > best:
                best, stale = score, 0
                best_state = copy.deepcopy(self.trained.state_dict())
                result.best_epoch, result.best_valid = epoch, score
            else:
                stale += 1
                if stale >= self.cfg.patience:
                    log.info("early stop at epoch %d (best %d)", epoch, result.best_epoch)
                    break
        if best_state is not None:
            self.trained.load_state_dict(best_state)
        return result

    def _epoch(self, dataset: TrainDataset, rng: np.random.Generator,
               epoch: int) -> tuple[float, float, float]:
        """One pass over the data; returns (mean loss, seconds, seconds waiting for batches)."""
        self.model.train()
        total, n, data_time = 0.0, 0, 0.0
        start = time.perf_counter()
        batches = dataset.batches(rng, self.cfg.batch_size, self.rank, self.world_size,
                                  self.cfg.n_negatives, shared=self.cfg.negatives == "softmax")
        bar = tqdm(total=dataset.n_batches(self.cfg.batch_size, self.world_size),
                   desc=f"epoch {epoch}", disable=not self.cfg.progress or self.rank != 0,
                   leave=False)
        with prefetched(batches, self.cfg.prefetch) as ahead:
            while True:
                t0 = time.perf_counter()
                batch = next(ahead, None)
                data_time += time.perf_counter() - t0
                if batch is None:
                    break
                loss = self._step(batch.to(self.device))
                total += loss
                n += len(batch.user_rows)
                bar.update()
                bar.set_postfix(loss=f"{loss / len(batch.user_rows):.4f}")
        bar.close()
        return total / max(n, 1), time.perf_counter() - start, data_time

    def _schedule(self, score: float) -> None:
        if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            if math.isfinite(score):
                self.scheduler.step(score)
        elif self.scheduler is not None:
            self.scheduler.step()

    def _choose_negatives(self, batch: Batch) -> Batch:
        """With `hardest`, keep the closest of the n sampled negatives (no gradient)."""
        if self.cfg.negatives != "hardest":
            return batch
        hardness = self.model.negative_hardness(batch.user_rows, batch.neg_rows,
                                                batch.hist_rows, batch.hist_mask)  # [B, n]
        pick = hardness.argmin(dim=1, keepdim=True)
        return dataclasses.replace(batch, neg_rows=batch.neg_rows.gather(1, pick)[:, 0])

    def _step(self, batch: Batch) -> float:
        batch = self._choose_negatives(batch)
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.objective(batch)
        value = float(loss.detach())
        if not math.isfinite(value):
            raise TrainingDivergedError(
                f"loss is {value}; lower the learning rate (now {self.cfg.lr}) or the margin")
        loss.backward()
        self.optimizer.step()
        self.model.project_()
        return value

    def _validate(self, validate: Validator | None) -> float:
        """Rank 0 validates; under DDP the score is broadcast so every rank stops together."""
        if validate is None:
            return float("nan")
        score = validate(self.model) if self.rank == 0 else 0.0
        if self.world_size > 1:
            box = [score]
            torch.distributed.broadcast_object_list(box, src=0)
            score = box[0]
        return float(score)


def _scheduler(optimizer: torch.optim.Optimizer, cfg: TrainerConfig) -> Any:
    """The learning-rate schedule, stepped once per epoch (None: constant)."""
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs,
                                                          eta_min=cfg.lr / 100)
    if cfg.schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=0.5,
                                                          patience=0)
    return None


_DONE = object()


@contextmanager
def prefetched(items: Iterator[Batch], depth: int) -> Iterator[Iterator[Batch]]:
    """`items` built up to `depth` ahead by a background thread (inline when depth is 0).

    Batch building is numpy (sorting, searchsorted) that releases the GIL, so it overlaps the
    model's arithmetic. One producer consumes the epoch's generator in order, so the batches
    and the rng stream are exactly those of inline building. An error in the producer is
    raised in the consumer; leaving the block early stops the producer.
    """
    if depth == 0:
        yield items
        return
    box: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                box.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(item):
                    return
        except BaseException as exc:  # handed to the consumer, which raises it
            put(_Failure(exc))
            return
        put(_DONE)

    def consume() -> Iterator[Batch]:
        while True:
            item = box.get()
            if item is _DONE:
                return
            if isinstance(item, _Failure):
                raise item.error
            yield item

    worker = threading.Thread(target=produce, name="relrec-batches", daemon=True)
    worker.start()
    try:
        yield consume()
    finally:
        stop.set()
        worker.join()


@dataclass
class _Failure:
    error: BaseException
