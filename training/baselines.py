"""Baselines: the non-relational models every result is compared against (DESIGN §2).

Reads the train :class:`~training.interactions.Interactions` of a split; fits most-popular or
matrix factorisation by ALS (the `implicit` package); the fitted objects implement the
evaluator's `Scorer` protocol (`score`, `score_items`, higher is better) and hold plain numpy
arrays on the CPU, so that evaluation never depends on where the model was fitted.
"""

from __future__ import annotations

import numpy as np

from training.interactions import Interactions

__all__ = ["ALSBaseline", "MostPopular"]


class MostPopular:
    """Score = train popularity of the item, the same ranking for every user.

    The floor any personalised model must clear; its ranking is also the cold-start answer the
    service gives to users with no history (DESIGN §4).
    """

    def __init__(self) -> None:
        self.popularity: np.ndarray | None = None  # [V] float32

    def fit(self, train: Interactions) -> MostPopular:
        self.popularity = train.item_popularity().astype(np.float32)
        return self

    def _fitted(self) -> np.ndarray:
        if self.popularity is None:
            raise RuntimeError("MostPopular is not fitted: call fit(train) first")
        return self.popularity

    def score(self, user_rows: np.ndarray) -> np.ndarray:
        """[B] -> [B, V]: every row is the popularity vector."""
        pop = self._fitted()
        return np.repeat(pop[None, :], len(user_rows), axis=0)

    def score_items(self, user_rows: np.ndarray, item_rows: np.ndarray) -> np.ndarray:
        """[B], [B, C] -> [B, C]."""
        return self._fitted()[np.asarray(item_rows, dtype=np.int64)]


class ALSBaseline:
    """Implicit-feedback matrix factorisation by ALS (Hu, Koren, Volinsky, ICDM 2008).

    Minimises Σ_{u,i} c_ui (p_ui − x_uᵀ y_i)² + λ(Σ‖x_u‖² + Σ‖y_i‖²), with p_ui = 1 for train
    interactions and 0 elsewhere; c_ui = α·r_ui (r_ui = 1 after binarisation) for train
    interactions and 1 elsewhere, which is implicit's convention (the paper's 1 + α·r_ui is
    α' = 1 + α here). score(u, i) = x_uᵀ y_i. Defaults are DESIGN §1's MF-ALS (100 factors,
    20 iterations, λ = 30).
    """

    def __init__(
        self,
        factors: int = 100,
        iterations: int = 20,
        regularization: float = 30.0,
        alpha: float = 1.0,
        seed: int = 0,
        use_gpu: bool = False,
        num_threads: int = 1,
    ) -> None:
        self.factors = factors
        self.iterations = iterations
        self.regularization = regularization
        self.alpha = alpha
        self.seed = seed
        self.use_gpu = use_gpu
        self.num_threads = num_threads
        self.user_factors: np.ndarray | None = None  # [U, f] float32
        self.item_factors: np.ndarray | None = None  # [V, f] float32

    def fit(self, train: Interactions, show_progress: bool = False) -> ALSBaseline:
        """Fit on the binary train matrix (users x items CSR, implicit >= 0.7 orientation)."""
        import implicit.gpu
        from implicit.als import AlternatingLeastSquares
        from threadpoolctl import threadpool_limits

        if self.use_gpu and not implicit.gpu.HAS_CUDA:
            raise ValueError("use_gpu=True but implicit was built without CUDA; use use_gpu=False")
        # implicit parallelises over users itself; a multi-threaded BLAS under it oversubscribes
        # the cores and is up to 10x slower (implicit's check_blas_config warning).
        with threadpool_limits(1, "blas"):
            model = AlternatingLeastSquares(
                factors=self.factors, regularization=self.regularization, alpha=self.alpha,
                iterations=self.iterations, use_gpu=self.use_gpu, num_threads=self.num_threads,
                random_state=self.seed,
            )
            model.fit(train.to_csr(), show_progress=show_progress)
        if self.use_gpu:
            model = model.to_cpu()
        self.user_factors = np.ascontiguousarray(model.user_factors, dtype=np.float32)
        self.item_factors = np.ascontiguousarray(model.item_factors, dtype=np.float32)
        return self

    def _fitted(self) -> tuple[np.ndarray, np.ndarray]:
        if self.user_factors is None or self.item_factors is None:
            raise RuntimeError("ALSBaseline is not fitted: call fit(train) first")
        return self.user_factors, self.item_factors

    def score(self, user_rows: np.ndarray) -> np.ndarray:
        """[B] -> [B, V]: x_u · Y^T."""
        users, items = self._fitted()
        return users[np.asarray(user_rows, dtype=np.int64)] @ items.T

    def score_items(self, user_rows: np.ndarray, item_rows: np.ndarray) -> np.ndarray:
        """[B], [B, C] -> [B, C]: x_u · y_i for each candidate."""
        users, items = self._fitted()
        u = users[np.asarray(user_rows, dtype=np.int64)]  # [B, f]
        v = items[np.asarray(item_rows, dtype=np.int64)]  # [B, C, f]
        return np.einsum("bf,bcf->bc", u, v)
