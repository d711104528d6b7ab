"""Edges of the feature circuit between two dictionaries (Marks et al. 2024, *Sparse feature
circuits*): how much of a downstream feature's attribution flows through an upstream feature.

Both dictionaries are spliced into the clean run: at the upstream hook ``a`` the residual is
rewritten as ``decode(f_a) + err_a`` with ``f_a`` and ``err_a`` leaves; at the downstream hook
``b`` as ``decode(f_b) + err_b`` where ``f_b = encode(x_b)`` still depends on ``f_a`` and
``err_b`` is a leaf (the forward values are unchanged). With ``g_d = ∂m/∂f_b[d]`` (detached),
the edge from upstream latent ``u`` to downstream latent ``d`` is the linear estimate of how
patching ``u`` to its corrupted activations moves ``d``'s contribution to the metric::

    edge(u → d) = mean_n Σ_pos ∂(Σ_pos' g_d f_b[d]) / ∂f_a[u] · (f_a[u](corrupt) − f_a[u](clean))

and the error term's edge the same way with ``err_a``. Summed over every upstream latent plus
the error, the edges into ``d`` equal the dense ``∂(Σ g_d f_b[d])/∂x_a · (x_a(corrupt) −
x_a(clean))`` (tested). Positions: every real token except BOS, as elsewhere in the stages.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..models import HookedModel
from ..tasks import PreparedTask, make_metric
from ._acts import decode_acts, encode_acts

__all__ = ["feature_edges"]


def feature_edges(
    model: HookedModel,
    upstream: Any,
    downstream: Any,
    data: PreparedTask,
    metric: str,
    sources: list[int],
    targets: list[int],
    mask: Tensor,
) -> dict[str, Tensor]:
    """``edges [len(sources), len(targets)]``, ``error [len(targets)]`` and ``all_sources
    [len(targets)]`` (every upstream latent's edge summed), per the module docstring.

    ``mask`` ``[n pos]`` (float) selects the positions summed over and patched.
    """
    a, b = upstream.config.hook_name, downstream.config.hook_name
    _, cc = model.run_with_cache(data.corrupted, names=[a], return_logits=False)
    with torch.no_grad():
        f_corr = encode_acts(upstream, cc[a])
        err_corr = cc[a] - decode_acts(upstream, f_corr, cc[a])
    leaves: dict[str, Tensor] = {}

    def splice_a(x: Tensor, hook: Any) -> Tensor:
        f = encode_acts(upstream, x).detach().requires_grad_(True)
        err = (x - decode_acts(upstream, f, x)).detach().requires_grad_(True)
        leaves.update(f_a=f, err_a=err)
        return decode_acts(upstream, f, x) + err

    def splice_b(x: Tensor, hook: Any) -> Tensor:
        f = encode_acts(downstream, x)
        err = (x - decode_acts(downstream, f, x)).detach().requires_grad_(True)
        leaves.update(f_b=f)
        return decode_acts(downstream, f, x) + err

    m = make_metric(metric, model, data)
    w = mask.to(f_corr.device)[..., None]  # [n pos 1]
    with torch.enable_grad(), model.hooks([(a, splice_a), (b, splice_b)]):
        per_example = m(model(data.clean, logits_to_keep=1)[:, -1], data)
        (g_b,) = torch.autograd.grad(per_example.sum(), [leaves["f_b"]], retain_graph=True)
        d_f = (f_corr - leaves["f_a"].detach()) * w  # [n pos d_sae_a]
        d_err = (err_corr - leaves["err_a"].detach()) * w  # [n pos d]
        edges, error, total = [], [], []
        for d in targets:
            s_d = (g_b[..., d].detach() * leaves["f_b"][..., d] * w[..., 0]).sum()
            gf, ge = torch.autograd.grad(s_d, [leaves["f_a"], leaves["err_a"]], retain_graph=True)
            per_latent = (gf * d_f).sum((0, 1)) / data.n  # [d_sae_a]
            edges.append(per_latent[sources])
            error.append((ge * d_err).sum() / data.n)
            total.append(per_latent.sum())
    return {
        "edges": torch.stack(edges, dim=1).float().cpu() if targets else torch.zeros(len(sources), 0),
        "error": torch.stack(error).float().cpu() if targets else torch.zeros(0),
        "all_sources": torch.stack(total).float().cpu() if targets else torch.zeros(0),
    }
