"""Mixture-of-Experts feed-forward layer, a drop-in ``mlp_layer`` for timm's ``Block``.

Routing (arXiv 2604.05960, Sec. 4.2, Eq. 5-6): ``alpha = softmax(G h)`` computed in float32
whatever the autocast dtype; each token goes to its ``top_k`` experts and the layer returns
``y(h) = sum_{k in topk(h)} w_k(h) FFN_k(h)``.

Combine weights ``w`` (``gate_weighting``):

* ``"runner_up"`` (default): value = the renormalised top-k weight (exactly 1 for top-1), so
  a freshly upcycled layer of identical copies computes the dense FFN (to float rounding:
  the experts multiply their own groups of rows). In training the runner-up expert (the most
  probable one outside the top-k) is also evaluated, without gradient, and added with a
  weight of value 0 whose gradient is that of the softmax mixture over the top-k and the
  runner-up. For top-1 the chosen logit moves by
  ``q1 q2 <dL/dy, E_1(h) - E_2(h)>``: the part the experts share cancels, and the router
  learns which expert serves the token better. Costs one extra expert forward per token in
  training only; evaluation computes ``top_k`` experts per token.
* ``"straight_through"``: ``w_k = p_k / sum_{topk} p.detach()`` (value 1 for top-1; router
  gradient ``<dL/dy, E_k(h)> (1[k] - p)``). With near-identical experts that gradient says
  only whether scaling the FFN output would help, the same for every expert: measured, it
  drifts tokens towards the experts they already use and starves the others.
* ``"renormalise"``: ``w_k = p_k / sum_{topk} p`` (same value; for top-1 the router gets no
  gradient from the task loss, only from the balance loss).
* ``"raw"``: ``w_k = p_k`` (Eq. 5 literally; an upcycled layer starts near ``FFN / K``).

Dispatch. Assignments are ordered by priority (Switch/GShard): every token's first choice
in token order, then every second choice, and so on. Without a ``capacity_factor``
(dropless) every assignment is computed; tokens are sorted by expert (stable, so priority
order within an expert) and each expert multiplies its own rows, by one of two paths
(``expert_dispatch``):

* grouped GEMM (``"grouped"``): the experts' ``fc1`` and ``fc2`` weights are stacked per
  forward into ``(K, D, H)`` and ``(K, H, D_out)`` (``torch.stack`` passes each expert's
  gradient back to its own parameters, so checkpoints, upcycling and DDP see the same
  modules) and ``torch.nn.functional.grouped_mm`` multiplies each expert's rows with the
  group ends given as a device tensor (groups padded to multiples of 16 bytes of rows);
  biases are gathered per row. Python reads nothing back from the device (tested by making ``.tolist()``, ``.item()``, ``.cpu()``,
  ``bool()``, ``int()`` raise). An idle expert is an empty group and gets a zero gradient.
  Whether the kernel itself waits on the device depends on torch: on CUDA only the bf16
  kernel of compute capability 9.x/10.x reads the offsets on the device; elsewhere
  (fp32, fp16, older GPUs) torch's fallback copies them to the host once per call, i.e.
  several times per layer. Needs ``grouped_mm`` (torch >= 2.9), fp32/bf16/fp16 matrices whose
  widths ``D``, ``H``, ``D_out`` are multiples of 16 bytes (4 fp32 or 8 bf16 values), and
  plain experts (parameter-free activation, no hidden norm). Stacking costs one copy of the
  expert weights per forward, kept for the backward pass in training.
* per-expert loop (``"loop"``): ``torch.split`` by the group sizes, read on the host with
  ``counts.tolist()`` (one device synchronisation per layer and forward on a GPU), one
  ``Mlp`` call per non-empty expert; an idle expert joins the graph through an exact-zero term
  (only when autograd records: without a graph, e.g. in a sliding-window restore, it is
  skipped).

Both dropless paths sum each token's weighted expert outputs into zeros; with one assignment
per token (top-1 routing, and the runner-up pass) that sum has one term and the rows are
gathered by the inverse permutation and ``+ 0.0`` applied instead of a scatter-add (the same
bits, ``-0.0`` included; ``sem-foundation``'s restore of a 1280x960 image: see
``benchmarks/bench_foundation_restore.py``).

``"auto"`` (default) takes the grouped path where it removes the synchronisation: CUDA with
bf16 matrices (bf16 autocast or a bf16 model) on compute capability 9.x/10.x (not ROCm),
and wherever a graph is captured (``torch.compile``, ``torch.export``, ``torch.jit.trace``):
there the loop's host read of the group sizes would break the graph, fail the export, or be
frozen into the trace, which would then route every later input with the example's group
sizes. Everywhere else the loop. On the CPU a host read costs nothing and the grouped path
measured 1.10-1.25x slower (the per-forward weight copy; ``benchmarks/bench_moe_dispatch.py``). Both paths give the same outputs and gradients to float rounding
(tested). With a ``capacity_factor`` an expert accepts at most
``C = ceil(cf * T * top_k / K)`` assignments of the ``T`` tokens, in priority order, so a first
choice is never displaced by a second one; the dispatch then has static shapes ``(K, C)`` and
reads nothing back from the device. A dropped assignment contributes 0, so a token dropped by
all its experts passes through the block's residual connection unchanged. Capacity counts
the tokens of one forward (one rank), so which tokens drop depends on the rest of the batch:
it applies in training mode only. In eval mode the layer is dropless, and each image's
output is independent of the batch it came in (a sliding window's ``batch_size`` included).
In training every expert is part of the autograd graph whatever the routing (an idle expert
contributes an exact 0), so DDP needs no ``find_unused_parameters``.

Balance losses (kept on the module as ``aux_loss`` after each forward outside
:func:`torch.inference_mode`, since ``Block.forward`` returns only a tensor; ``P_k`` = mean
routing probability, ``f_k`` = hard fraction of assignments to expert ``k``):

* ``"switch"`` (default): ``K sum_k f_k P_k`` (``f`` not differentiable), minimum 1 when
  balanced. Its gradient ``K f_k`` pushes down exactly the experts that receive the tokens;
* ``"paper"`` (Eq. 9): ``K sum_k P_k^2``, minimum 1 at ``P_k = 1/K``. It sees only the soft
  probabilities: with near-uniform ``P`` it reads about 1 while every argmax picks one expert;
* ``"entropy"``: ``log K - H(P)``, minimum 0 at ``P_k = 1/K`` (soft only, like ``paper``);

plus ``z_loss_weight * mean(logsumexp(G h)^2)`` (router z-loss) when the weight is > 0. Each
forward keeps its token sums in ``sums`` (so a distributed trainer can add them over ranks,
:func:`global_aux_loss`) and in ``stats`` the per-expert hard token fraction and mean gate
probability, the routing entropy and the number of unused experts.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal, NamedTuple, cast

import torch
import torch.nn.functional as F
from timm.layers import Mlp
from torch import nn

from .precision import accumulation_dtype

__all__ = [
    "BalanceTotals",
    "MoEMlp",
    "balance_loss",
    "global_aux_loss",
    "moe_layers",
    "routing_stats",
]

BalanceLoss = Literal["paper", "switch", "entropy"]
GateWeighting = Literal["runner_up", "straight_through", "renormalise", "raw"]
ExpertDispatch = Literal["auto", "grouped", "loop"]

_GROUPED_MM = getattr(F, "grouped_mm", None)  # torch >= 2.9
_GROUPED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def _balance_from_means(
    mean_p: torch.Tensor, frac: torch.Tensor | None, kind: BalanceLoss
) -> torch.Tensor:
    num_experts = mean_p.shape[-1]
    if kind == "paper":
        return num_experts * (mean_p**2).sum()
    if kind == "switch":
        if frac is None:
            raise ValueError("balance_loss='switch' needs the hard assignments")
        return num_experts * (frac.detach() * mean_p).sum()
    if kind == "entropy":
        return math.log(num_experts) + (mean_p * torch.log(mean_p.clamp_min(1e-12))).sum()
    raise ValueError(f"balance_loss={kind!r} unknown; accepted: 'paper', 'switch', 'entropy'")


def balance_loss(
    probs: torch.Tensor, assignments: torch.Tensor | None = None, kind: BalanceLoss = "paper"
) -> torch.Tensor:
    """Load-balancing loss from routing probabilities ``(T, K)`` (and hard assignments).

    ``assignments`` holds the chosen expert indices ``(T, top_k)``; needed for ``switch``.
    """
    num_experts = probs.shape[-1]
    mean_p = probs.reshape(-1, num_experts).mean(0)  # P_k
    frac = None
    if assignments is not None:
        counts = torch.bincount(assignments.reshape(-1), minlength=num_experts)
        frac = counts.to(mean_p.dtype) / max(assignments.numel(), 1)  # f_k
    return _balance_from_means(mean_p, frac, kind)


class _Assignments(NamedTuple):
    """Token-to-expert assignments in priority order, ``A`` of them."""

    expert: torch.Tensor  # (A,) expert index
    weight: torch.Tensor  # (A,) gate weight
    token: torch.Tensor  # (A,) token index
    onehot: torch.Tensor  # (A, K) one-hot of ``expert``
    #: every token exactly once (``token`` a permutation of ``0..T-1``, e.g. top-1 routing):
    #: the weighted outputs are then placed rather than summed (see ``_place``)
    one_each: bool = False


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
        balance_loss: BalanceLoss = "switch",
        z_loss_weight: float = 0.0,
        gate_weighting: GateWeighting = "runner_up",
        expert_dispatch: ExpertDispatch = "auto",
        **kwargs: Any,
    ) -> None:
        super().__init__()
        if not 1 <= top_k <= num_experts:
            raise ValueError(f"top_k={top_k} must be in [1, num_experts={num_experts}]")
        if capacity_factor is not None and not 0 < capacity_factor < math.inf:  # NaN too
            raise ValueError(f"capacity_factor={capacity_factor} must be finite and > 0 (or None)")
        if gate_weighting not in ("runner_up", "straight_through", "renormalise", "raw"):
            raise ValueError(f"gate_weighting={gate_weighting!r} unknown")
        if expert_dispatch not in ("auto", "grouped", "loop"):
            raise ValueError(
                f"expert_dispatch={expert_dispatch!r} unknown; accepted: 'auto', 'grouped', 'loop'"
            )
        dd = {k: kwargs[k] for k in ("device", "dtype") if kwargs.get(k) is not None}
        self.num_experts = num_experts
        self.top_k = top_k
        self.capacity_factor = capacity_factor
        self.balance_loss_kind: BalanceLoss = balance_loss
        self.z_loss_weight = z_loss_weight
        self.gate_weighting: GateWeighting = gate_weighting
        self.expert_dispatch: ExpertDispatch = expert_dispatch
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
        self.sums: dict[str, torch.Tensor] = {}

    # ------------------------------------------------------------------ routing
    def route(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Tokens ``(T, D)`` -> (probabilities, logits), both ``(T, K)`` in float32."""
        with torch.autocast(device_type=h.device.type, enabled=False):
            logits = F.linear(h.float(), self.gate.weight.float())
        return logits.softmax(dim=-1), logits

    def capacity(self, num_tokens: int) -> int | None:
        """Max assignments per expert for ``num_tokens`` tokens in training (None = unlimited;
        eval mode is always dropless)."""
        if self.capacity_factor is None:
            return None
        return math.ceil(self.capacity_factor * num_tokens * self.top_k / self.num_experts)

    def _combine_weights(
        self, top_p: torch.Tensor, runner_up: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Combine weights ``(T, k)`` of the chosen experts (and the runner-up's value-0 weight).

        ``top_p`` holds the top-k probabilities, plus the runner-up's as a last column when
        ``runner_up`` is set.
        """
        k = self.top_k
        if self.gate_weighting == "raw":
            return top_p, None
        chosen = top_p[:, :k]
        total = chosen.sum(dim=-1, keepdim=True)
        if self.gate_weighting == "straight_through":
            return chosen / total.detach(), None
        if self.gate_weighting == "renormalise" or k == self.num_experts:
            return chosen / total, None
        value = (chosen / total).detach()  # runner_up: value = renormalised top-k weights
        if not runner_up:
            return value, None
        q = top_p / top_p.sum(dim=-1, keepdim=True)  # softmax over the top-k and the runner-up
        return value + (q[:, :k] - q[:, :k].detach()), q[:, k] - q[:, k].detach()

    # ------------------------------------------------------------------ forward
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x (..., D)`` -> ``(..., D_out)``; also sets ``aux_loss``, ``stats`` and ``sums``.

        Outside autocast a float ``x`` of another dtype is cast to the parameters'. Under
        :func:`torch.inference_mode` nothing is recorded: an inference pass (a preview, a
        sliding window) leaves the last training or validation forward's balance loss and
        statistics in place (a model under ``torch.compile`` records always). Under
        :func:`torch.no_grad` they are recorded (validation reads them).
        """
        w = self.gate.weight
        if (
            x.dtype != w.dtype
            and x.is_floating_point()
            and not torch.is_autocast_enabled(x.device.type)
        ):
            x = x.to(w.dtype)
        lead = x.shape[:-1]
        h = x.reshape(-1, x.shape[-1])  # (T, D)
        num_tokens = h.shape[0]
        probs, logits = self.route(h)  # (T, K)
        k = self.top_k
        runner_up = (
            self.gate_weighting == "runner_up"
            and k < self.num_experts
            and self.training
            and torch.is_grad_enabled()
        )
        top_p, top_i = probs.topk(k + 1 if runner_up else k, dim=-1)  # (T, k [+ 1])
        weights, alt_w = self._combine_weights(top_p, runner_up)  # (T, k), (T,) or None
        alt_e = top_i[:, k] if runner_up else None  # the most probable expert not chosen
        top_i = top_i[:, :k]
        # Assignments in priority order (Switch/GShard): every token's first choice in token
        # order, then every second choice, ... so a first choice is never displaced by a
        # second one when an expert is full.
        flat_e = top_i.t().reshape(-1)  # (k*T,) expert of each assignment
        tokens = torch.arange(num_tokens, device=h.device)
        chosen = self._assignments(flat_e, weights.t().reshape(-1), tokens.repeat(k), k == 1)
        counts = chosen.onehot.sum(0)  # (K,) assignments per expert, before capacity
        out, kept = self._dispatch(h, chosen)
        if alt_w is not None and alt_e is not None:
            # The runner-up expert's output, without gradient, weighted by a value-0 term whose
            # gradient compares it with the chosen experts (see the module doc).
            with torch.no_grad():
                ones = torch.ones(num_tokens, device=h.device, dtype=weights.dtype)
                y_alt, _ = self._dispatch(h, self._assignments(alt_e, ones, tokens, True))
            out = out + alt_w[:, None].to(out.dtype) * y_alt
        # (torch.compile cannot trace the inference-mode test: a compiled model records always)
        if torch.compiler.is_compiling() or not torch.is_inference_mode_enabled():
            self._record(probs, logits, counts, kept)
        return out.reshape(*lead, self.out_features)

    def _assignments(
        self,
        expert: torch.Tensor,
        weight: torch.Tensor,
        token: torch.Tensor,
        one_each: bool = False,
    ) -> _Assignments:
        """The assignments; ``one_each`` says that ``token`` holds every token exactly once."""
        onehot = F.one_hot(expert, self.num_experts)
        return _Assignments(expert, weight, token, onehot, one_each)

    def _dispatch(self, h: torch.Tensor, a: _Assignments) -> tuple[torch.Tensor, torch.Tensor]:
        """Weighted expert outputs summed per token ``(T, D_out)``, and the assignments kept.

        The capacity applies in training only: in eval mode a token's output must not depend
        on the other tokens of the batch.
        """
        cap = self.capacity(h.shape[0]) if self.training else None
        if cap is not None:
            return self._dispatch_capacity(h, a, cap)
        if self.uses_grouped_mm(h):
            return self._dispatch_grouped(h, a)
        return self._dispatch_loop(h, a)

    # ------------------------------------------------------------------ dropless paths
    def _compute_dtype(self, h: torch.Tensor) -> torch.dtype:
        """The dtype the experts' matrix products run in: autocast's, else the weights'."""
        dtype = cast(nn.Linear, cast(Mlp, self.experts[0]).fc1).weight.dtype
        dev = h.device.type
        if dtype != torch.float64 and torch.is_autocast_enabled(dev):
            return torch.get_autocast_dtype(dev)
        return dtype

    def grouped_mm_supported(self, h: torch.Tensor) -> bool:
        """Whether the grouped GEMM kernel accepts this layer for input ``h`` (see module doc).

        Needs ``grouped_mm``, plain experts (``Linear`` -> parameter-free activation ->
        ``Linear``, no hidden norm) and fp32/bf16/fp16 matrices with every width a multiple
        of 16 bytes. Reads only shapes and dtypes, never tensor values.
        """
        if _GROUPED_MM is None:
            return False
        e = cast(Mlp, self.experts[0])
        if not (isinstance(e.fc1, nn.Linear) and isinstance(e.fc2, nn.Linear)):
            return False
        if not isinstance(e.norm, nn.Identity) or any(True for _ in e.act.parameters()):
            return False
        dtype = self._compute_dtype(h)
        if dtype not in _GROUPED_DTYPES:
            return False
        align = 16 // dtype.itemsize
        widths = (e.fc1.in_features, e.fc1.out_features, e.fc2.out_features)
        return all(w % align == 0 for w in widths)

    def uses_grouped_mm(self, h: torch.Tensor) -> bool:
        """Whether a dropless forward on ``h`` takes the grouped path (``expert_dispatch``)."""
        if self.expert_dispatch == "loop" or not self.grouped_mm_supported(h):
            return False
        if self.expert_dispatch == "grouped":
            return True
        if torch.compiler.is_compiling() or torch.jit.is_tracing():
            return True  # auto in a captured graph: the loop's host read breaks or freezes it
        # auto: only where torch's kernel keeps the offsets on the device (bf16, SM 9.x/10.x;
        # not ROCm, whose capability numbers differ); on the CPU the loop is faster and a
        # host read costs nothing.
        if h.device.type != "cuda" or torch.version.hip is not None:
            return False
        if self._compute_dtype(h) != torch.bfloat16:
            return False
        return torch.cuda.get_device_capability(h.device)[0] in (9, 10)

    def _dispatch_grouped(
        self, h: torch.Tensor, a: _Assignments
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Every assignment computed by two grouped GEMMs; no host read of the routing.

        Rows are sorted by expert (stable: priority order within an expert) into a buffer of
        static length ``R >= A + K (m - 1)`` in which every group starts and ends at a
        multiple of ``m`` rows, 16 bytes of the compute dtype (in the weight gradient the rows
        are the contraction, which torch's CUDA kernel loads in aligned 16-byte pieces); the
        last group runs to the end of the buffer, since ``grouped_mm`` leaves rows after the
        last offset unwritten. Group ``e`` ends at ``offs[e]``, an int32 tensor on ``h``'s
        device. Padding rows are zero inputs whose outputs are never read, so they add
        nothing to any gradient.
        """
        k_exp, n_assign = self.num_experts, a.expert.shape[0]
        dtype = self._compute_dtype(h)
        m = 16 // dtype.itemsize
        counts = a.onehot.sum(0)  # (K,)
        order = torch.argsort(a.expert, stable=True)
        token_of, expert_of = a.token[order], a.expert[order]  # (A,); experts non-decreasing
        padded = (counts + m - 1) // m * m  # (K,) group sizes rounded up to m rows
        ends = padded.cumsum(0)  # (K,) group ends in the buffer
        shift = (ends - padded) - (counts.cumsum(0) - counts)  # buffer minus packed group start
        row = torch.arange(n_assign, device=h.device) + shift[expert_of]  # (A,) buffer row
        n_rows = -(-(n_assign + k_exp * (m - 1)) // m) * m  # rounded up to m rows
        row_expert = torch.searchsorted(ends, torch.arange(n_rows, device=h.device), right=True)
        row_expert = row_expert.clamp_max(k_exp - 1)  # (R,) group of each buffer row
        x = h.index_select(0, token_of).to(dtype)  # (A, D)
        x = x.new_zeros(n_rows, x.shape[1]).index_copy(0, row, x)  # (R, D)
        offs = torch.cat([ends[:-1], ends.new_full((1,), n_rows)]).to(torch.int32)
        first = cast(Mlp, self.experts[0])  # every expert has the same parameter-free layers
        y = self._grouped_linear(x, "fc1", offs, row_expert)  # (R, H)
        y = first.drop1(first.act(y))
        y = first.drop2(self._grouped_linear(y, "fc2", offs, row_expert))  # (R, D_out)
        y = y.index_select(0, row) * a.weight[order, None].to(y.dtype)  # (A, D_out)
        return self._place(h, token_of, y.to(h.dtype), a.one_each), counts.sum()

    def _grouped_linear(
        self, x: torch.Tensor, name: str, offs: torch.Tensor, row_expert: torch.Tensor
    ) -> torch.Tensor:
        """Rows ``x (R, in)`` through their experts' ``Linear`` ``name`` -> ``(R, out)``."""
        assert _GROUPED_MM is not None
        layers = [cast(nn.Linear, getattr(e, name)) for e in self.experts]
        w = torch.stack([m.weight.to(x.dtype) for m in layers])  # (K, out, in)
        y = _GROUPED_MM(x, w.transpose(1, 2), offs=offs)  # (R, out)
        if layers[0].bias is not None:
            b = torch.stack([m.bias.to(y.dtype) for m in layers])  # (K, out)
            y = y + b.index_select(0, row_expert)
        return y

    def _dispatch_loop(self, h: torch.Tensor, a: _Assignments) -> tuple[torch.Tensor, torch.Tensor]:
        """Every assignment computed: tokens grouped by expert, one call per non-empty expert.

        Variable group sizes are read on the host (``counts.tolist()``, a device
        synchronisation on GPUs); the grouped and the capacity paths read nothing back.
        """
        counts = a.onehot.sum(0)
        order = torch.argsort(a.expert, stable=True)  # grouped by expert, priority order
        token_of = a.token[order]
        sizes = counts.tolist()
        x_sorted = h.index_select(0, token_of)
        outs = []
        graph = torch.is_grad_enabled()
        for e, chunk in enumerate(torch.split(x_sorted, sizes)):
            if chunk.shape[0] > 0:
                outs.append(self.experts[e](chunk))
            elif graph:  # an idle expert still joins the graph (value 0): DDP sees every parameter
                outs.append(self._touch(e, chunk.shape[0]))
        # without a graph an idle expert adds nothing (its 0 rows): no parameter sums computed
        y = torch.cat(outs) if outs else self._touch(0, 0)
        y = y * a.weight[order, None].to(y.dtype)
        return self._place(h, token_of, y.to(h.dtype), a.one_each), counts.sum()

    def _place(
        self, h: torch.Tensor, token_of: torch.Tensor, y: torch.Tensor, one_each: bool
    ) -> torch.Tensor:
        """``(T, D_out)``: the rows ``y`` summed per token ``token_of`` into zeros.

        With ``one_each`` (``token_of`` a permutation) every sum has one term, ``0 + y``: the
        rows are gathered by the inverse permutation and ``+ 0.0`` applied, which is the same
        value bit for bit (``-0.0`` becomes ``+0.0`` in both) without ``index_add``'s scatter
        (on a busy CPU with two threads 6x the time of a gather).
        """
        if not one_each:
            return h.new_zeros(h.shape[0], self.out_features).index_add(0, token_of, y)
        inverse = torch.empty_like(token_of)
        inverse[token_of] = torch.arange(token_of.shape[0], device=token_of.device)
        return y.index_select(0, inverse).add_(0.0)

    def _dispatch_capacity(
        self, h: torch.Tensor, a: _Assignments, cap: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Static-shape dispatch into ``(K, cap)`` slots (no host read of the routing).

        An assignment's rank in its expert's queue follows the priority order; ranks
        ``>= cap`` are dropped (they go to a discarded overflow slot). Every expert runs on its
        ``cap`` slots, so every expert is in the graph whatever the routing.
        """
        k_exp = self.num_experts
        rank = ((a.onehot.cumsum(0) - 1) * a.onehot).sum(-1)  # position in the expert's queue
        keep = rank < cap
        slot = torch.where(keep, a.expert * cap + rank, torch.full_like(rank, k_exp * cap))
        buf = h.new_zeros(k_exp * cap + 1, h.shape[1]).index_add(0, slot, h[a.token])
        buf = buf[:-1].view(k_exp, cap, h.shape[1])
        y = torch.cat([self.experts[e](buf[e]) for e in range(k_exp)])  # (K*cap, D_out)
        y = torch.cat([y, y.new_zeros(1, y.shape[1])])  # the overflow slot reads zero
        w = (a.weight * keep).to(y.dtype)
        contrib = y.index_select(0, slot) * w[:, None]
        out = h.new_zeros(h.shape[0], self.out_features).index_add(0, a.token, contrib.to(h.dtype))
        return out, keep.sum()

    def _touch(self, e: int, rows: int) -> torch.Tensor:
        """An empty ``(0, D_out)`` output that depends on expert ``e``'s parameters."""
        zero = torch.stack([p.sum() for p in self.experts[e].parameters()]).sum() * 0.0
        return zero.expand(rows, self.out_features)

    def _record(
        self, probs: torch.Tensor, logits: torch.Tensor, counts: torch.Tensor, kept: torch.Tensor
    ) -> None:
        """Keep the batch's sufficient statistics (``sums``), the local aux loss and ``stats``.

        ``sums`` holds sums over this forward's tokens, so that a distributed trainer can add
        them over ranks and compute the global balance loss (:func:`global_aux_loss`).
        """
        self.sums = {
            "prob": probs.sum(0),  # (K,), differentiable
            "count": counts.to(probs.dtype),  # (K,) assignments
            "tokens": probs.new_tensor(float(probs.shape[0])),
            "kept": kept.to(probs.dtype),
        }
        if self.z_loss_weight > 0:
            self.sums["z"] = torch.logsumexp(logits, dim=-1).pow(2).sum()
        self.aux_loss = self.aux_from_sums(self.sums)
        self.stats = self.stats_from_sums(self.sums, probs)

    def aux_from_sums(self, sums: dict[str, torch.Tensor]) -> torch.Tensor:
        """Balance (+ z) loss from token sums: ``P_k = prob_k / T``, ``f_k = count_k / (k T)``."""
        mean_p = sums["prob"] / sums["tokens"]
        frac = sums["count"] / (sums["tokens"] * self.top_k)
        aux = _balance_from_means(mean_p, frac, self.balance_loss_kind)
        if self.z_loss_weight > 0:
            aux = aux + self.z_loss_weight * sums["z"] / sums["tokens"]
        return aux

    def stats_from_sums(
        self, sums: dict[str, torch.Tensor], probs: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """Per-expert hard token fraction and mean gate probability, entropy, unused experts."""
        with torch.no_grad():
            n_assign = sums["tokens"] * self.top_k
            frac = sums["count"] / n_assign.clamp_min(1)
            mean_p = sums["prob"].detach() / sums["tokens"].clamp_min(1)
            stats = {
                "token_fraction": frac,  # hard, before capacity drops
                "mean_prob": mean_p,
                "unused_experts": (sums["count"] == 0).sum(),
                "dropped_fraction": 1.0 - sums["kept"] / n_assign.clamp_min(1),
                # Entropy of the mean routing: log K when tokens spread evenly over experts.
                "balance_entropy": -(mean_p * torch.log(mean_p.clamp_min(1e-12))).sum(),
            }
            if probs is not None:
                # Mean per-token entropy: low when each token is routed decisively.
                ent = -(probs * torch.log(probs.clamp_min(1e-12))).sum(-1).mean()
                stats["routing_entropy"] = ent
            return stats

    # ------------------------------------------------------------------ upcycling
    @classmethod
    def from_dense(
        cls, mlp: nn.Module, num_experts: int = 8, noise_std: float = 0.0, **moe_kwargs: Any
    ) -> MoEMlp:
        """An MoE layer whose experts are copies of the timm ``Mlp`` ``mlp``.

        ``noise_std`` breaks the symmetry between copies: every expert tensor ``W`` becomes
        ``W + noise_std * std(W) * N(0, 1)`` (drawn from torch's global generator). With
        ``noise_std=0`` all experts are identical and the layer equals ``mlp`` to float rounding.
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


def global_aux_loss(model: nn.Module) -> torch.Tensor | None:
    """Sum of the MoE layers' aux losses from the last forward, over all ranks when distributed.

    In one process this is the sum of the layers' ``aux_loss``. In a training step of a
    ``torch.distributed`` group (module in training mode, gradients enabled) the layers' token
    sums are added over ranks in one all-reduce, so the balance loss and the logged ``stats``
    are those of the global batch: ``W`` ranks x ``B`` behave as one process x ``W B``. Each
    rank's gradient is scaled by ``W`` so that DDP's gradient averaging gives the gradient of
    the global loss. Every rank must call this in the same steps (training steps are).
    """
    layers = [m for _, m in moe_layers(model) if m.sums]
    if not layers:
        return None
    dist = torch.distributed
    if (
        dist.is_available()
        and dist.is_initialized()
        and dist.get_world_size() > 1
        and model.training
        and torch.is_grad_enabled()
    ):
        world = dist.get_world_size()
        keys = [sorted(m.sums) for m in layers]
        flat = torch.cat(
            [m.sums[k].detach().reshape(-1) for m, ks in zip(layers, keys, strict=True) for k in ks]
        )
        total = flat.clone()
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        offset = 0
        for m, ks in zip(layers, keys, strict=True):
            merged = {}
            for k in ks:
                local = m.sums[k]
                n = local.numel()
                glob = total[offset : offset + n].reshape(local.shape)
                offset += n
                # Value: the global sum; gradient: W x this rank's part (DDP divides by W).
                merged[k] = glob + world * (local - local.detach())
            m.sums = merged
            m.aux_loss = m.aux_from_sums(merged)
            m.stats = {**m.stats, **m.stats_from_sums(merged)}
    losses = [m.aux_loss for m in layers if m.aux_loss is not None]
    return torch.stack([loss.float() for loss in losses]).sum()


class BalanceTotals:
    """The MoE layers' token sums added over forwards (and ranks): the aux loss of a whole
    evaluation set, whatever its batching and number of processes.

    A batch's balance term is a statistic of that batch, not a mean of per-sample terms, so a
    validation loss that averages it per batch changes with the batch size and, under DDP, with
    the split of the set over ranks (model selection would depend on the world size). Call
    :meth:`add` after each forward and :meth:`loss` once at the end (on every rank). Totals are
    float64 (float32 on a device without float64: :func:`~sem_models.precision.accumulation_dtype`).
    """

    def __init__(self, model: nn.Module) -> None:
        self.layers = [m for _, m in moe_layers(model)]
        self.total: torch.Tensor | None = None

    @staticmethod
    def _layout(m: MoEMlp) -> list[tuple[str, int]]:
        """``(key, size)`` of a layer's ``sums`` (:meth:`MoEMlp._record`); size 0 = a scalar."""
        keys = [("prob", m.num_experts), ("count", m.num_experts), ("tokens", 0), ("kept", 0)]
        return keys + ([("z", 0)] if m.z_loss_weight > 0 else [])

    def add(self) -> None:
        """Add the sums of the last forward (nothing for a model without MoE layers)."""
        if not self.layers:
            return
        wide = accumulation_dtype(self.layers[0].gate.weight.device)
        flat = torch.cat(
            [
                m.sums[k].detach().to(wide).reshape(-1)
                for m in self.layers
                for k, _ in self._layout(m)
            ]
        )
        self.total = flat if self.total is None else self.total + flat

    def loss(self, reduce: Callable[[torch.Tensor], torch.Tensor] | None = None) -> float:
        """The summed aux loss of every layer from the totals; ``reduce`` (an in-place sum over
        ranks) first adds the other ranks' totals (a rank without a batch adds zeros)."""
        if not self.layers:
            return 0.0
        if self.total is None:
            size = sum(max(n, 1) for m in self.layers for _, n in self._layout(m))
            device = next(self.layers[0].parameters()).device
            self.total = torch.zeros(size, dtype=accumulation_dtype(device), device=device)
        if reduce is not None:
            reduce(self.total)
        out, offset = 0.0, 0
        for m in self.layers:
            sums = {}
            for k, n in self._layout(m):
                part = self.total[offset : offset + max(n, 1)]
                sums[k] = part.reshape(n) if n else part[0]
                offset += max(n, 1)
            if float(sums["tokens"]) > 0:
                out += float(m.aux_from_sums(sums))
        return out


def routing_stats(
    model: nn.Module, per_expert: bool = False, tensors: bool = False
) -> dict[str, Any]:
    """Flat ``{"<layer>/<stat>": value}`` routing statistics of the last forward, for logging.

    Per layer: routing entropy, unused experts, dropped fraction, the largest and smallest
    hard token fraction (1/K when balanced; 1 and 0 when collapsed); plus the model-wide
    means. With ``per_expert`` also ``<layer>/token_fraction/<k>`` and ``<layer>/mean_prob/<k>``
    (hard fraction of assignments and mean gate probability of expert ``k``).

    Values are floats read from the device in one transfer, or with ``tensors`` 0-dim tensors
    on the model's device (no host read: a training loop reads them only when it logs), float64
    (float32 on a device without float64: :func:`~sem_models.precision.accumulation_dtype`).
    """
    out: dict[str, torch.Tensor] = {}
    for name, m in moe_layers(model):
        if not m.stats:
            continue
        s = m.stats
        wide = accumulation_dtype(s["token_fraction"].device)
        for key in ("routing_entropy", "balance_entropy", "unused_experts", "dropped_fraction"):
            if key in s:
                out[f"{name}/{key}"] = s[key].detach().to(wide)
        frac = s["token_fraction"].detach().to(wide)
        out[f"{name}/max_token_fraction"] = frac.max()
        out[f"{name}/min_token_fraction"] = frac.min()
        if per_expert:
            prob = s["mean_prob"].detach().to(wide)
            for k in range(frac.numel()):
                out[f"{name}/token_fraction/{k}"] = frac[k]
                out[f"{name}/mean_prob/{k}"] = prob[k]
    for key in (
        "routing_entropy",
        "balance_entropy",
        "unused_experts",
        "max_token_fraction",
        "min_token_fraction",
        "dropped_fraction",
    ):
        vals = [v for k, v in out.items() if k.endswith("/" + key)]
        if vals:
            out[f"mean/{key}"] = torch.stack(vals).mean()
    if tensors or not out:
        return dict(out)
    return dict(zip(out, torch.stack(list(out.values())).tolist(), strict=True))
