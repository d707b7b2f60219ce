"""The BPR objective of one batch (Eq. 4), with a hand-written backward.

A step needs H only at the batch's rows. A model that can compute those rows
alone (LEGCF's operator P: a gather of P's rows, then one small product)
does so when the batch touches few of the N entities, so a step costs
O(batch) instead of O(N), and an epoch grows with the interactions only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from legcf_core.propagation import csr_tensor

if TYPE_CHECKING:
    from legcf_core.training import TrainableModel

GATHER_SHARE = 0.5
"""A batch touching at most this share of the entities is computed from its rows alone (where the
model can): above it, the gather costs about what the whole product does."""


def batch_objective(
    model: TrainableModel, users: np.ndarray, items: np.ndarray, negatives: np.ndarray, l2: float
) -> torch.Tensor:
    """Mean BPR loss of the batch plus (l2/2) times its mean layer-0 squared norms (Eq. 4)."""
    n_users, b = model.n_users, users.size
    counts = batch_counts(model.n_entities, n_users, users, items, negatives)
    nodes = np.concatenate([users, items + n_users, negatives.ravel() + n_users])
    rows = np.flatnonzero(counts)  # the batch's distinct entities, sorted
    computed = None
    if rows.size <= GATHER_SHARE * model.n_entities:
        computed = model.row_outputs(rows, counts)
    if computed is None:
        h, l2_sum = model.outputs(counts)
    else:
        (h, l2_sum), nodes = computed, np.searchsorted(rows, nodes)
    index = torch.from_numpy(nodes).to(model.device)
    loss = batch_bpr(h, index[:b], index[b : 2 * b], index[2 * b :].view(b, -1))
    return loss + l2_sum * (l2 / (2 * b))


class _BatchBPR(torch.autograd.Function):
    """BPR loss of one batch from the rows of H, with a hand-written backward.

    Autograd through the gathers allocates several half-million-row
    temporaries per step and scatters with index_add. Here every gradient
    row is a weighted sum of two small B x d matrices, [dL/dh_u; h_u], so
    dL/dH is one sparse (N x 2B) by dense (2B x d) product:

        dL/dh_u = sum_k g_uk h_jk - (sum_k g_uk) h_i      (rows ``users``)
        dL/dh_i = -(sum_k g_uk) h_u                       (rows ``pos``)
        dL/dh_jk = g_uk h_u                               (rows ``neg``)

    with g = dL/d(y_uj - y_ui).
    """

    @staticmethod
    def forward(ctx, h: torch.Tensor, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor):
        b, k = neg.shape
        h_user, h_pos = h.index_select(0, users), h.index_select(0, pos)
        h_neg = h.index_select(0, neg.reshape(-1)).view(b, k, -1)
        margin = torch.einsum("bd,bkd->bk", h_user, h_neg) - (h_user * h_pos).sum(1, keepdim=True)
        ctx.save_for_backward(users, pos, neg, h_user, h_pos, h_neg, margin)
        ctx.n_rows = h.shape[0]
        return torch.nn.functional.softplus(margin).mean()

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        users, pos, neg, h_user, h_pos, h_neg, margin = ctx.saved_tensors
        b, k = neg.shape
        g = torch.sigmoid(margin) * (grad_out / (b * k))  # dL/d margin
        g_sum = g.sum(1)
        grad_user = torch.einsum("bk,bkd->bd", g, h_neg) - g_sum.unsqueeze(1) * h_pos
        batch = torch.arange(b, device=users.device)
        weights = scatter_matrix(
            rows=torch.cat([users, pos, neg.reshape(-1)]),
            columns=torch.cat([batch, batch + b, (batch + b).repeat_interleave(k)]),
            values=torch.cat([torch.ones_like(g_sum), -g_sum, g.reshape(-1)]),
            shape=(ctx.n_rows, 2 * b),
        )
        return torch.sparse.mm(weights, torch.cat([grad_user, h_user])), None, None, None


def scatter_matrix(
    rows: torch.Tensor, columns: torch.Tensor, values: torch.Tensor, shape: tuple[int, int]
) -> torch.Tensor:
    """The CSR matrix with ``values`` at (``rows``, ``columns``), duplicate entries summed."""
    keys, inverse = sorted_unique(rows * shape[1] + columns)
    summed = torch.zeros(keys.numel(), dtype=values.dtype, device=values.device)
    summed.index_add_(0, inverse, values)
    counts = torch.bincount(keys // shape[1], minlength=shape[0])
    crow = torch.zeros(shape[0] + 1, dtype=torch.int64, device=rows.device)
    torch.cumsum(counts, 0, out=crow[1:])
    return csr_tensor(crow, keys % shape[1], summed, shape)


def sorted_unique(keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """torch.unique(sorted=True, return_inverse=True); on the CPU through numpy, whose sort is
    about 10x faster there (the same keys and inverse, so the same matrix to the bit)."""
    if keys.device.type != "cpu":
        return torch.unique(keys, sorted=True, return_inverse=True)
    unique, inverse = np.unique(keys.numpy(), return_inverse=True)
    return torch.from_numpy(unique), torch.from_numpy(inverse.reshape(-1))


def batch_bpr(h: torch.Tensor, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """Mean BPR loss of (users, pos, neg[b, :]) triplets over rows of H; fast backward."""
    return _BatchBPR.apply(h, users, pos, neg)


def batch_counts(n_entities: int, n_users: int, users, items, negatives) -> np.ndarray:
    """How often each entity's layer-0 embedding enters the L2 term of one batch."""
    counts = np.bincount(users, minlength=n_entities).astype(np.float64)
    counts += np.bincount(items + n_users, minlength=n_entities)
    counts += np.bincount(negatives.ravel() + n_users, minlength=n_entities) / negatives.shape[1]
    return counts
