"""Prometheus collectors of the service, on a registry owned by one app instance.

A registry per app (not the global default) lets tests build several apps in one process. With
several uvicorn workers each worker exposes its own numbers on /metrics (a scrape sees one
worker); aggregate per pod, or run one worker per container as the Kubernetes manifests do.
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector

__all__ = ["Metrics"]

# Latency buckets from 0.5 ms to 5 s: re-ranking a few hundred candidates takes milliseconds.
_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.0075,
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
)


class Metrics:
    """All collectors; attribute names say what they count."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.request_seconds = Histogram(
            "relrec_request_seconds",
            "HTTP request latency by route template",
            ["method", "route", "status"],
            buckets=_BUCKETS,
            registry=r,
        )
        self.stage_seconds = Histogram(
            "relrec_stage_seconds",
            "Latency of one recommend stage: history, retrieval, rerank (per micro-batch), "
            "serialize (per response)",
            ["stage"],
            buckets=_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "relrec_batch_size",
            "Requests per micro-batch (one FAISS search, one ONNX call)",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=r,
        )
        self.candidates_scored = Counter(
            "relrec_candidates_scored", "Candidates re-ranked by the exact scorer", registry=r
        )
        self.pool_lookups = Counter(
            "relrec_pool_lookups",
            "Requests whose candidates came from the user's pool (served) or from the index "
            "(searched: no pool, or its bound did not hold)",
            ["outcome"],
            registry=r,
        )
        self.recommendations = Counter(
            "relrec_recommendations", "Recommendations answered, by source", ["source"], registry=r
        )
        self.interactions = Counter(
            "relrec_interactions", "Interactions posted, by outcome", ["outcome"], registry=r
        )
        self.store_errors = Counter(
            "relrec_store_errors", "History store operations that failed", ["op"], registry=r
        )
        self.reloads = Counter(
            "relrec_reloads", "Artifact loads, by result", ["result"], registry=r
        )
        self.model_info = Gauge(
            "relrec_model_info", "1 for the model version being served", ["version"], registry=r
        )
        # Which worker answered a scrape, and its CPU time (process_cpu_seconds_total): with
        # several workers a reader (bench/serve.py) scrapes until it has seen each one.
        self.worker = Gauge(
            "relrec_worker", "1, labelled with this worker's process id", ["pid"], registry=r
        )
        self.worker.labels(str(os.getpid())).set(1)
        ProcessCollector(registry=r)
        self.fast_recommend = Counter(
            "relrec_fast_recommend",
            "GET /recommend requests answered by the fast path (served) or handed to the "
            "documented route (delegated), when RELREC_FAST_RECOMMEND is on",
            ["outcome"],
            registry=r,
        )
        self.in_flight = Gauge(
            "relrec_requests_in_flight",
            "API requests in progress (health, readiness and /metrics not counted)",
            registry=r,
        )
