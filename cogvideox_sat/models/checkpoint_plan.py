"""`checkpoint_mode: auto`: one checkpointing mode per layer, chosen from an activation budget.

Pure arithmetic over the layer's shapes (no tensors, no device). Every layer starts `full`; the
greedy then repeatedly moves one layer to a mode that keeps more, taking the move with the most
recompute seconds saved per extra byte kept that still fits `checkpoint_budget_gib`, until none
fits. Layers are identical, so the plan is a count per mode.

The budget is for the tensors the layers keep from forward to backward, summed over all layers,
at the step's input shape; the peak adds weights, gradients, optimizer state, the embeddings'
and head's activations and one layer's recompute working set (see the table in `checkpointing`).

Cost model per layer, in units of one hidden-wide tensor (tokens x hidden x dtype bytes):

| mode              | keeps                                        | recompute saved against `full` |
|-------------------|----------------------------------------------|--------------------------------|
| full              | input: 1                                     | -                              |
| selective         | + attention output (+ fp32 logsumexp): 2     | attention forward              |
| selective_mlp_out | + MLP output: 3                              | + dense_4h_to_h (not LoRA)     |
| selective_matmul  | + qkv 3, dense 1, MLP in 4 (LoRA +4): 11/15  | + the other projections        |
| none              | everything autograd saves: ~13 (measured)    | + the elementwise work         |

Under LoRA the MLP output is never recomputed (frozen MLP and gates), so `selective_mlp_out`
saves nothing over `selective`, and `none` keeps less than `selective_matmul`: modes that keep
more yet save no more are dropped before planning.
"""

from __future__ import annotations

from dataclasses import dataclass

from .checkpointing import CHECKPOINT_MODES

AUTO = "auto"
GIB = 2**30

# Kernel rates measured on an H100 (bf16) at the CogVideoX shapes: cuDNN SDPA forward ~400
# TFLOP/s (README "Where a step's time goes"), the projection matmuls ~700 TFLOP/s.
ATTENTION_FLOP_PER_S = 400e12
MATMUL_FLOP_PER_S = 700e12
# Elementwise work (adaLN modulation, norms, QK-norm, RoPE, GELU, gated residuals) is bound by
# memory traffic: about this many hidden-wide tensors read or written per layer forward, at
# ~90% of the H100's 3.35 TB/s.
ELEMENTWISE_UNITS = 24
MEMORY_BYTES_PER_S = 3.0e12
# 2B LoRA on an H100: none's peak minus full's, (29.7 - 6.7) GiB / 30 layers / 0.0636 GiB a unit
# = 12 units more than full's 1
NONE_UNITS = 13
MLP_RATIO = 4  # MLP width / hidden


@dataclass(frozen=True)
class LayerShape:
    """One transformer layer at one input shape (per rank under sequence parallelism)."""

    hidden_size: int
    num_heads: int
    batch: int
    seq_len: int  # tokens per sample, text included
    dtype_bytes: int
    lora: bool = False
    shards: int = 1  # sequence-parallel ranks: each keeps and computes 1/shards of it

    def mode_costs(self) -> dict[str, tuple[float, float]]:
        """mode -> (bytes kept, recompute seconds saved against `full`), per layer."""
        tokens = self.batch * self.seq_len / self.shards
        unit = tokens * self.hidden_size * self.dtype_bytes
        logsumexp = tokens * self.num_heads * 4  # fp32, saved beside the attention output
        matmul = 2 * tokens * self.hidden_size**2 / MATMUL_FLOP_PER_S  # seconds of one h x h projection
        attention = 4 * self.batch * self.seq_len**2 * self.hidden_size / self.shards / ATTENTION_FLOP_PER_S
        mlp_out = 0.0 if self.lora else MLP_RATIO * matmul
        other = (3 + 1 + MLP_RATIO) * matmul  # qkv, dense, MLP in
        elementwise = ELEMENTWISE_UNITS * unit / MEMORY_BYTES_PER_S
        matmul_units = 1 + 3 + 1 + MLP_RATIO + 1 + 1 + (4 if self.lora else 0)
        return {
            "full": (unit, 0.0),
            "selective": (2 * unit + logsumexp, attention),
            "selective_mlp_out": (3 * unit + logsumexp, attention + mlp_out),
            "selective_matmul": (matmul_units * unit + logsumexp, attention + mlp_out + other),
            "none": (NONE_UNITS * unit, attention + mlp_out + other + elementwise),
        }


@dataclass(frozen=True)
class CheckpointPlan:
    """What `plan_checkpointing` chose, with its predicted cost and gain."""

    modes: tuple[str, ...]  # one per layer
    kept_bytes: float
    saved_s: float  # recompute seconds saved per step against all `full`
    fits: bool  # False: the budget is below every layer `full`

    def summary(self, shape: LayerShape, budget_gib: float) -> str:
        counts = ", ".join(f"{self.modes.count(m)} {m}" for m in reversed(CHECKPOINT_MODES) if m in self.modes)
        where = f"budget {budget_gib:g} GiB at {shape.batch} x {shape.seq_len} tokens" + (f" / {shape.shards} ranks" if shape.shards > 1 else "")
        kept = f"{self.kept_bytes / GIB:.3g} GiB kept"
        if not self.fits:
            return f"checkpoint_mode auto: {where} is below what full checkpointing keeps ({kept}): {counts}"
        return f"checkpoint_mode auto: {where} -> {counts} layers ({kept}, ~{self.saved_s * 1e3:.0f} ms less recompute)"


def plan_checkpointing(shape: LayerShape, num_layers: int, budget_gib: float, skip_last: int = 0) -> CheckpointPlan:
    """The per-layer modes for `num_layers` layers, the last `skip_last` of them `none`
    (`checkpoint_skip_layers`) and counted in the budget."""
    costs = shape.mode_costs()
    # a mode that keeps at least as much as another yet saves no more is never worth it
    useful = [m for m in CHECKPOINT_MODES if not any(_dominates(costs[o], costs[m]) for o in CHECKPOINT_MODES)]
    modes = sorted(useful, key=lambda m: costs[m][0])  # leanest first
    skip = min(skip_last, num_layers)
    counts = dict.fromkeys(modes, 0)
    counts["full"] = num_layers - skip
    used = counts["full"] * costs["full"][0] + skip * costs["none"][0]
    budget = budget_gib * GIB
    fits = used <= budget
    while True:
        best, best_ratio = None, 0.0
        for i, src in enumerate(modes):
            if not counts[src]:
                continue
            for dst in modes[i + 1 :]:
                extra, gain = costs[dst][0] - costs[src][0], costs[dst][1] - costs[src][1]
                if extra > 0 and used + extra <= budget and gain / extra > best_ratio:
                    best, best_ratio = (src, dst, extra), gain / extra
        if best is None:
            break
        src, dst, extra = best
        counts[src] -= 1
        counts[dst] += 1
        used += extra
    # Memory-lean layers first, the ones keeping most last: backward starts from the last layer,
    # so the big kept sets are freed before the first recompute's working set appears (as SAT's
    # checkpoint_skip_layers leaves the last layers unchecked).
    layer_modes = tuple(m for m in modes for _ in range(counts[m])) + ("none",) * skip
    saved = sum(counts[m] * costs[m][1] for m in modes) + skip * costs["none"][1]
    return CheckpointPlan(layer_modes, used, saved, fits)


def _dominates(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """(bytes, seconds saved) `a` keeps no more and saves no less than `b`, and differs."""
    return a[0] <= b[0] and a[1] >= b[1] and a != b
