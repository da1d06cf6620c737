"""Mixture-of-Experts feed-forward layer, a drop-in ``mlp_layer`` for timm's ``Block``.

Routing (paper eq. 5-6): ``alpha = softmax(G h)`` computed in float32 whatever the autocast
dtype; each token goes to its ``top_k`` experts and the layer returns
``y(h) = sum_{k in topk(h)} w_k(h) FFN_k(h)``.

Combine weights ``w`` (``gate_weighting``):

* ``"straight_through"`` (default): ``w_k = p_k / sum_{topk} p.detach()``. Its *value* is the
  renormalised top-k weight (exactly 1 for top-1), so a freshly upcycled layer whose experts
  are identical copies of a dense FFN computes exactly that FFN; its *gradient* still reaches
  the router (``dw_k/dlogit = w_k (1[k] - p)``), so gate-only training (Stage 2) learns.
* ``"renormalise"``: ``w_k = p_k / sum_{topk} p`` (same value; for top-1 the router gets no
  gradient from the task loss, only from the balance loss).
* ``"raw"``: ``w_k = p_k`` (eq. 5 literally; an upcycled layer starts near ``FFN / K``).

Dispatch groups tokens by expert (a stable sort of the assignments), runs every expert once
on its own tokens and scatters the weighted results back: each token costs ``top_k`` expert
evaluations, never ``K``. With a ``capacity_factor`` an expert accepts at most
``ceil(cf * T * top_k / K)`` of the ``T`` tokens, first come first served in token order
(Switch Transformer); an assignment beyond capacity is dropped and contributes 0, so a token
dropped by all its experts passes through the block's residual connection unchanged.

Balance losses (kept on the module as ``aux_loss`` after each forward, since ``Block.forward``
returns only a tensor; ``P_k`` = mean routing probability, ``f_k`` = hard fraction of
assignments to expert ``k``):

* ``"paper"`` (eq. 9): ``K sum_k P_k^2``, minimum 1 at ``P_k = 1/K``;
* ``"switch"``: ``K sum_k f_k P_k`` (``f`` not differentiable), minimum 1 when balanced;
* ``"entropy"``: ``log K - H(P)``, minimum 0 at ``P_k = 1/K``;

plus ``z_loss_weight * mean(logsumexp(G h)^2)`` (router z-loss) when the weight is > 0.
The soft terms can sit at their minimum while every argmax picks one expert, so ``stats``
also records hard token fractions, the routing entropy and the number of unused experts.
"""

from __future__ import annotations

import math
from typing import Any, Literal, cast

import torch
import torch.nn.functional as F
from timm.layers import Mlp
from torch import nn

__all__ = ["MoEMlp", "balance_loss", "moe_layers", "routing_stats"]

BalanceLoss = Literal["paper", "switch", "entropy"]
GateWeighting = Literal["straight_through", "renormalise", "raw"]


def balance_loss(
    probs: torch.Tensor, assignments: torch.Tensor | None = None, kind: BalanceLoss = "paper"
) -> torch.Tensor:
    """Load-balancing loss from routing probabilities ``(T, K)`` (and hard assignments).

    ``assignments`` holds the chosen expert indices ``(T, top_k)``; needed for ``switch``.
    """
    num_experts = probs.shape[-1]
    mean_p = probs.reshape(-1, num_experts).mean(0)  # P_k
    if kind == "paper":
        return num_experts * (mean_p**2).sum()
    if kind == "switch":
        if assignments is None:
            raise ValueError("balance_loss='switch' needs the hard assignments")
        counts = torch.bincount(assignments.reshape(-1), minlength=num_experts)
        frac = counts.to(mean_p.dtype) / max(assignments.numel(), 1)  # f_k
        return num_experts * (frac * mean_p).sum()
    if kind == "entropy":
        return math.log(num_experts) + (mean_p * torch.log(mean_p.clamp_min(1e-12))).sum()
    raise ValueError(f"balance_loss={kind!r} unknown; accepted: 'paper', 'switch', 'entropy'")


class MoEMlp(nn.Module):
    """``num_experts`` timm ``Mlp`` experts behind a top-k softmax router (see module doc).

    Accepts timm's ``mlp_layer`` keywords (``in_features``, ``hidden_features``,
    ``out_features``, ``act_layer``, ``norm_layer``, ``bias``, ``drop``, ``device``, ``dtype``)
    and ignores other keywords that future timm releases may pass.
    """

    def __init__(
        self,
        in_features: int,
        hidden_features: int | None = None,
        out_features: int | None = None,
        act_layer: type[nn.Module] = nn.GELU,
        norm_layer: type[nn.Module] | None = None,
        bias: bool | tuple[bool, bool] = True,
        drop: float | tuple[float, float] = 0.0,
        *,
        num_experts: int = 8,
        top_k: int = 1,
        capacity_factor: float | None = None,
        balance_loss: BalanceLoss = "paper",
        z_loss_weight: float = 0.0,
        gate_weighting: GateWeighting = "straight_through",
        **kwargs: Any,
    ) -> None:
        super().__init__()
        if not 1 <= top_k <= num_experts:
            raise ValueError(f"top_k={top_k} must be in [1, num_experts={num_experts}]")
        if capacity_factor is not None and capacity_factor <= 0:
            raise ValueError(f"capacity_factor={capacity_factor} must be > 0 (or None)")
        if gate_weighting not in ("straight_through", "renormalise", "raw"):
            raise ValueError(f"gate_weighting={gate_weighting!r} unknown")
        dd = {k: kwargs[k] for k in ("device", "dtype") if kwargs.get(k) is not None}
        self.num_experts = num_experts
        self.top_k = top_k
        self.capacity_factor = capacity_factor
        self.balance_loss_kind: BalanceLoss = balance_loss
        self.z_loss_weight = z_loss_weight
        self.gate_weighting: GateWeighting = gate_weighting
        self.out_features = out_features or in_features
        self.experts = nn.ModuleList(
            Mlp(
                in_features,
                hidden_features,
                out_features,
                act_layer=act_layer,
                norm_layer=norm_layer,
                bias=bias,
                drop=drop,
                **dd,
            )
            for _ in range(num_experts)
        )
        self.gate = nn.Linear(in_features, num_experts, bias=False, **dd)  # router G
        if self.gate.weight.device.type != "meta":
            nn.init.normal_(self.gate.weight, std=0.02)
        self.aux_loss: torch.Tensor | None = None
        self.stats: dict[str, torch.Tensor] = {}

    # ------------------------------------------------------------------ routing
    def route(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Tokens ``(T, D)`` -> (probabilities, logits), both ``(T, K)`` in float32."""
        with torch.autocast(device_type=h.device.type, enabled=False):
            logits = F.linear(h.float(), self.gate.weight.float())
        return logits.softmax(dim=-1), logits

    def capacity(self, num_tokens: int) -> int | None:
        """Max assignments per expert for ``num_tokens`` tokens (None = unlimited)."""
        if self.capacity_factor is None:
            return None
        return math.ceil(self.capacity_factor * num_tokens * self.top_k / self.num_experts)

    def _combine_weights(self, top_p: torch.Tensor) -> torch.Tensor:
        if self.gate_weighting == "raw":
            return top_p
        total = top_p.sum(dim=-1, keepdim=True)
        if self.gate_weighting == "straight_through":
            total = total.detach()
        return top_p / total

    # ------------------------------------------------------------------ forward
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x (..., D)`` -> ``(..., D_out)``; also sets ``aux_loss`` and ``stats``."""
        lead = x.shape[:-1]
        h = x.reshape(-1, x.shape[-1])  # (T, D)
        num_tokens = h.shape[0]
        probs, logits = self.route(h)  # (T, K)
        top_p, top_i = probs.topk(self.top_k, dim=-1)  # (T, k)
        weights = self._combine_weights(top_p).reshape(-1)  # (T*k,)
        flat_e = top_i.reshape(-1)  # expert of each assignment, (T*k,)
        order = torch.argsort(flat_e, stable=True)  # assignments grouped by expert, token order
        token_of = order // self.top_k  # token of each sorted assignment
        counts = torch.bincount(flat_e, minlength=self.num_experts)
        cap = self.capacity(num_tokens)

        # Keep the first `cap` assignments of every expert (all of them without a capacity).
        sizes = counts.tolist()
        kept_sizes = sizes if cap is None else [min(n, cap) for n in sizes]
        kept = sum(kept_sizes)
        if cap is not None and kept < len(order):
            starts = torch.cumsum(counts, 0) - counts
            rank = torch.arange(len(order), device=h.device) - starts[flat_e[order]]
            keep = rank < cap
            order, token_of = order[keep], token_of[keep]
        x_sorted = h.index_select(0, token_of)  # one gather, tokens grouped by expert
        outs = []
        touch: torch.Tensor | None = None
        for e, chunk in enumerate(torch.split(x_sorted, kept_sizes)):
            if chunk.shape[0] > 0:
                outs.append(self.experts[e](chunk))  # only this expert's tokens
            elif torch.is_grad_enabled() and self.training:
                # Touch the idle expert's parameters (value 0) so DDP sees them in the graph.
                zero = torch.stack([p.sum() for p in self.experts[e].parameters()]).sum() * 0.0
                touch = zero if touch is None else touch + zero
        out = h.new_zeros(num_tokens, self.out_features)
        if outs:
            y = torch.cat(outs) if len(outs) > 1 else outs[0]
            y = y * weights[order, None].to(y.dtype)
            out = out.index_add(0, token_of, y.to(out.dtype))
        if touch is not None:
            out = out + touch.to(out.dtype)

        self._record(probs, logits, top_i, counts, kept)
        return out.reshape(*lead, self.out_features)

    def _record(
        self,
        probs: torch.Tensor,
        logits: torch.Tensor,
        top_i: torch.Tensor,
        counts: torch.Tensor,
        kept: int,
    ) -> None:
        aux = balance_loss(probs, top_i, self.balance_loss_kind)
        if self.z_loss_weight > 0:
            aux = aux + self.z_loss_weight * torch.logsumexp(logits, dim=-1).pow(2).mean()
        self.aux_loss = aux
        with torch.no_grad():
            n_assign = max(top_i.numel(), 1)
            entropy = -(probs * torch.log(probs.clamp_min(1e-12))).sum(-1).mean()
            self.stats = {
                "token_fraction": counts.float() / n_assign,  # hard, before capacity drops
                "mean_prob": probs.mean(0),
                "routing_entropy": entropy,
                "unused_experts": (counts == 0).sum(),
                "dropped_fraction": torch.tensor(1.0 - kept / n_assign),
            }

    # ------------------------------------------------------------------ upcycling
    @classmethod
    def from_dense(
        cls, mlp: nn.Module, num_experts: int = 8, noise_std: float = 0.0, **moe_kwargs: Any
    ) -> MoEMlp:
        """An MoE layer whose experts are copies of the timm ``Mlp`` ``mlp``.

        ``noise_std`` breaks the symmetry between copies: every expert tensor ``W`` becomes
        ``W + noise_std * std(W) * N(0, 1)`` (drawn from torch's global generator). With
        ``noise_std=0`` all experts are identical and the layer equals ``mlp`` exactly.
        """
        if not isinstance(mlp, Mlp):
            raise TypeError(f"can only upcycle timm Mlp layers; got {type(mlp).__name__}")
        fc1, fc2 = cast(nn.Linear, mlp.fc1), cast(nn.Linear, mlp.fc2)
        norm = mlp.norm
        moe = cls(
            fc1.in_features,
            fc1.out_features,
            fc2.out_features,
            act_layer=type(mlp.act),
            norm_layer=None if isinstance(norm, nn.Identity) else type(norm),
            bias=(fc1.bias is not None, fc2.bias is not None),
            drop=(float(getattr(mlp.drop1, "p", 0.0)), float(getattr(mlp.drop2, "p", 0.0))),
            num_experts=num_experts,
            device=fc1.weight.device,
            dtype=fc1.weight.dtype,
            **moe_kwargs,
        )
        state = mlp.state_dict()
        with torch.no_grad():
            for expert in moe.experts:
                expert.load_state_dict(state)
                if noise_std > 0:
                    for p in expert.parameters():
                        if p.numel() > 1:
                            p.add_(noise_std * p.std() * torch.randn_like(p))
        return moe


def moe_layers(model: nn.Module) -> list[tuple[str, MoEMlp]]:
    """All MoE layers of ``model`` with their qualified names."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, MoEMlp)]


def routing_stats(model: nn.Module) -> dict[str, float]:
    """Flat ``{"<layer>/<stat>": value}`` routing statistics of the last forward, for logging.

    Per layer: routing entropy, unused experts, dropped fraction, the largest hard token
    fraction (1/K when balanced, 1 when collapsed); plus the model-wide means.
    """
    out: dict[str, float] = {}
    for name, m in moe_layers(model):
        if not m.stats:
            continue
        s = m.stats
        out[f"{name}/routing_entropy"] = float(s["routing_entropy"])
        out[f"{name}/unused_experts"] = float(s["unused_experts"])
        out[f"{name}/dropped_fraction"] = float(s["dropped_fraction"])
        out[f"{name}/max_token_fraction"] = float(s["token_fraction"].max())
    for key in ("routing_entropy", "unused_experts", "max_token_fraction", "dropped_fraction"):
        vals = [v for k, v in out.items() if k.endswith("/" + key)]
        if vals:
            out[f"mean/{key}"] = sum(vals) / len(vals)
    return out
