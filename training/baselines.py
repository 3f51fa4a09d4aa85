"""Baselines: the non-relational models every result is compared against (DESIGN §2).

Reads the train :class:`~training.interactions.Interactions` of a split; fits most-popular,
matrix factorisation by ALS (the `implicit` package) or EASE (closed form); the fitted objects
implement the
evaluator's `Scorer` protocol (`score`, `score_items`, higher is better) and hold plain numpy
arrays on the CPU, so that evaluation never depends on where the model was fitted.
"""

from __future__ import annotations

import numpy as np

from training.interactions import Interactions

__all__ = ["ALSBaseline", "EASEBaseline", "MostPopular"]


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
    interactions and 0 elsewhere, and the paper's confidence c_ui = 1 + α for a (binary) train
    interaction, 1 elsewhere. `alpha` is the paper's α. implicit reads the *stored* matrix value
    as the confidence itself: its solver adds (c − 1)·y yᵀ to the normal equations and c·y to
    the right-hand side (implicit/cpu/als.py, `user_linear_equation`), so a stored 1 gives a
    positive the weight of an unobserved cell. The matrix handed to implicit therefore holds
    1 + α, which is `confidence`. score(u, i) = x_uᵀ y_i. The defaults are the ML-1M
    validation grid's choice (docs/benchmarks.md, bench/tune_als.py).
    """

    def __init__(
        self,
        factors: int = 300,
        iterations: int = 20,
        regularization: float = 100.0,
        alpha: float = 10.0,
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

    @property
    def confidence(self) -> float:
        """c of a positive, 1 + α (an unobserved cell has 1): what implicit must be given."""
        return 1.0 + self.alpha

    def fit(self, train: Interactions, show_progress: bool = False) -> ALSBaseline:
        """Fit on the train matrix (users x items CSR, implicit >= 0.7 orientation) holding
        the confidence 1 + α at every train interaction."""
        import implicit.gpu
        from implicit.als import AlternatingLeastSquares
        from threadpoolctl import threadpool_limits

        if self.use_gpu and not implicit.gpu.HAS_CUDA:
            raise ValueError("use_gpu=True but implicit was built without CUDA; use use_gpu=False")
        # implicit parallelises over users itself; a multi-threaded BLAS under it oversubscribes
        # the cores and is up to 10x slower (implicit's check_blas_config warning).
        with threadpool_limits(1, "blas"):
            model = AlternatingLeastSquares(
                factors=self.factors, regularization=self.regularization, alpha=1.0,
                iterations=self.iterations, use_gpu=self.use_gpu, num_threads=self.num_threads,
                random_state=self.seed,
            )
            confidence = train.to_csr()  # binary
            confidence.data[:] = self.confidence
            model.fit(confidence, show_progress=show_progress)
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


class EASEBaseline:
    """EASE, the item-item linear autoencoder (Steck, WWW 2019), closed form.

    B = argmin ‖X − XB‖² + λ‖B‖² subject to diag(B) = 0 has the solution
    B = I − P · diagMat(1 / diag(P)) with P = (XᵀX + λI)⁻¹ (the paper's Algorithm 1).
    score(u, ·) = X_u B over the binary train row X_u. A V × V dense inverse: fine for the
    catalogues of the benchmarks (a few thousand items), not meant for a million-item one,
    which is why it is an evaluation baseline and not a served model.
    """

    def __init__(self, l2: float = 500.0) -> None:
        self.l2 = l2
        self.weights: np.ndarray | None = None  # [V, V] float32, zero diagonal
        self.train_matrix = None  # scipy CSR [U, V] float32, binary

    def fit(self, train: Interactions) -> EASEBaseline:
        x = train.to_csr().astype(np.float64)
        gram = (x.T @ x).toarray()  # [V, V]
        gram[np.diag_indices_from(gram)] += self.l2
        p = np.linalg.inv(gram)
        b = -p / np.diag(p)[None, :]  # column j divided by P_jj, negated
        b[np.diag_indices_from(b)] = 0.0  # I − P_jj / P_jj on the diagonal
        self.weights = b.astype(np.float32)
        self.train_matrix = x.astype(np.float32).tocsr()
        return self

    def _fitted(self) -> tuple[object, np.ndarray]:
        if self.weights is None or self.train_matrix is None:
            raise RuntimeError("EASEBaseline is not fitted: call fit(train) first")
        return self.train_matrix, self.weights

    def score(self, user_rows: np.ndarray) -> np.ndarray:
        """[B] -> [B, V]: X_u · B."""
        x, b = self._fitted()
        return np.asarray(x[np.asarray(user_rows, dtype=np.int64)] @ b)

    def score_items(self, user_rows: np.ndarray, item_rows: np.ndarray) -> np.ndarray:
        """[B], [B, C] -> [B, C]: the candidates' entries of X_u · B."""
        items = np.asarray(item_rows, dtype=np.int64)
        return np.take_along_axis(self.score(user_rows), items, axis=1)
