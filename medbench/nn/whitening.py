"""ZCA whitening: the transform MTT's experts and synthetic images live in.

A condensed set made in whitened space carries the transform in ``CondensedSet.extras``
(``zca_mean``, ``zca_matrix``) so the evaluation applies it to real val/test images too.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from medbench.core.errors import MedbenchError

ZCA_MAX_DIM = 64 * 64 * 3  # the covariance is dim × dim: beyond this ZCA is impractical


class ZCA:
    """ZCA whitening ``x ↦ W (x − μ)`` on flattened normalised images (kornia's definition:
    ``W = U diag(1/√(s + eps)) Uᵀ`` from the training covariance's eigen-decomposition)."""

    def __init__(self, mean: torch.Tensor, matrix: torch.Tensor) -> None:
        self.mean = mean.float()
        self.matrix = matrix.float()

    @classmethod
    @torch.no_grad()
    def fit(cls, images: Callable[[int, int], torch.Tensor], n: int, eps: float, chunk: int = 2048) -> ZCA:
        """Fit on ``n`` images given by ``images(start, stop)`` (float64 accumulation in chunks)."""
        first = images(0, min(chunk, n)).flatten(1)
        dim = first.shape[1]
        if dim > ZCA_MAX_DIM:
            raise MedbenchError(f"ZCA on {dim}-dimensional images is impractical (limit {ZCA_MAX_DIM}); "
                                "use zca=false at this resolution")
        total = torch.zeros(dim, dtype=torch.float64)
        outer = torch.zeros(dim, dim, dtype=torch.float64)
        for start in range(0, n, chunk):
            x = images(start, min(start + chunk, n)).flatten(1).double().cpu()
            total += x.sum(0)
            outer += x.T @ x
        mean = total / n
        cov = (outer - n * torch.outer(mean, mean)) / max(n - 1, 1)
        s, u = torch.linalg.eigh(cov)
        matrix = (u * (1.0 / torch.sqrt(s.clamp_min(0) + eps))) @ u.T
        return cls(mean, matrix)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(1) - self.mean.to(x.device)
        return (flat @ self.matrix.to(x.device).T).view_as(x)

    def to_extras(self) -> dict[str, torch.Tensor]:
        """How a condensed set carries it: evaluation applies it to real images after normalising."""
        return {"zca_mean": self.mean.cpu(), "zca_matrix": self.matrix.cpu()}

    @classmethod
    def from_extras(cls, extras: dict[str, torch.Tensor]) -> ZCA | None:
        if "zca_matrix" not in extras:
            return None
        return cls(extras["zca_mean"], extras["zca_matrix"])
