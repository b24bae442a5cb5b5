"""SE's pool pass with the gate at its end, one launch where the pipeline had two:

    programs of sample b:   partials of sum_hw(x) [and max_hw(x)] over their slabs  (pool_tile)
    the last of them:       pooled, hidden, gate rows of sample b from all partials (se_gate_row)

and backward likewise: partials of sum_hw(dy * x) [and ties with the max], then the last program
of the sample its gate backward (dz, dh, mean_coef [, max_coef]: se_gate_backward_row).

Which program of a sample arrives last is decided by an arrival counter (kernels/arrival.py);
it reads the partials in split order, so the gate is bitwise the separate gate kernel's,
whichever program it was. The gate of one sample is the work of the one-program-per-sample gate
(se_gate_forward_kernel), so this runs where that one would (weights small enough for one
program: mlp_gate.use_mlp_gate is False), and adds that program's time to the tail of the pass.
"""
import triton
import triton.language as tl

from .arrival import last_to_arrive
from .channel_pool import PoolPartials, PoolPlan, pool_tile
from .launch import fast
from .layout import ChannelView, STREAM_WARPS, acc_dtype
from .se_gate import se_gate_backward_row, se_gate_row


@triton.jit
def se_pool_gate_kernel(
    x_ptr, sxb, sxc, sxhw,
    sum_ptr, max_ptr, count_ptr,
    b0, ROWS, C, RD, HW, hw_per_split, n_cblocks,
    w1_ptr, b1_ptr, w2_ptr, b2_ptr, pooled_ptr, pool_max_ptr, hidden_ptr, gate_ptr,
    HAS_BIAS: tl.constexpr, WITH_MAX: tl.constexpr, MLP_ACT: tl.constexpr, GATE: tl.constexpr,
    BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr, GATE_BLOCK_C: tl.constexpr, BLOCK_RD: tl.constexpr,
    ACC: tl.constexpr,
):
    b = pool_tile(x_ptr, sxb, sxc, sxhw, x_ptr, sxb, sxc, sxhw, sum_ptr, sum_ptr, max_ptr, sum_ptr,
                  b0, 0, ROWS, C, HW, hw_per_split, n_cblocks,
                  False, WITH_MAX, False, BLOCK_C, BLOCK_HW, ACC)
    if last_to_arrive(count_ptr, b, n_cblocks * tl.num_programs(1)):
        se_gate_row(sum_ptr, max_ptr, tl.num_programs(1), ROWS, C, RD, HW, w1_ptr, b1_ptr, w2_ptr, b2_ptr,
                    pooled_ptr, pool_max_ptr, hidden_ptr, gate_ptr, b,
                    HAS_BIAS, WITH_MAX, MLP_ACT, GATE, GATE_BLOCK_C, BLOCK_RD, ACC)


def se_pool_gate(x: ChannelView, plan: PoolPlan, parts: PoolPartials, counters, b0: int, nb: int,
                 w1, b1, w2, b2, pooled, pool_max, hidden, gate, gate_tiles: tuple[int, int],
                 mlp_act: int, gate_fn: int) -> None:
    """Pool samples [b0, b0 + nb) of x into ``parts`` and write their pooled, pool_max (when
    ``parts.maxs`` is set), hidden and gate rows; ``counters`` from kernels.arrival (>= B of them),
    w1 [RD, C], w2 [C, RD] contiguous, b1 / b2 None without bias; ``gate_tiles``: se_gate.gate_tiles."""
    B, C, H, W = x.tensor.shape
    with_max = parts.maxs is not None
    fast(se_pool_gate_kernel)[(nb * plan.n_cblocks, plan.n_splits)](
        x.tensor, x.sb, x.sc, x.shw,
        parts.sums, parts.maxs if with_max else parts.sums, counters,
        b0, parts.sums.shape[1], C, w1.shape[0], H * W, plan.hw_per_split, plan.n_cblocks,
        w1, b1 if b1 is not None else w1, w2, b2 if b2 is not None else w2,
        pooled, pool_max if with_max else pooled, hidden, gate,
        HAS_BIAS=b1 is not None, WITH_MAX=with_max, MLP_ACT=mlp_act, GATE=gate_fn,
        BLOCK_C=plan.block_c, BLOCK_HW=plan.block_hw, GATE_BLOCK_C=gate_tiles[0], BLOCK_RD=gate_tiles[1],
        ACC=acc_dtype(x.tensor.dtype), num_warps=STREAM_WARPS,
    )


@triton.jit
def se_pool_gate_backward_kernel(
    x_ptr, sxb, sxc, sxhw, dy_ptr, sdb, sdc, sdhw, ref_ptr,
    sum_ptr, cnt_ptr, count_ptr,
    b0, ROWS, C, RD, HW, hw_per_split, n_cblocks,
    w1_ptr, w2_ptr, hidden_ptr, gate_ptr, dz_ptr, dh_ptr, mean_coef_ptr, max_coef_ptr,
    WITH_MAX: tl.constexpr, MLP_ACT: tl.constexpr, GATE: tl.constexpr,
    BLOCK_C: tl.constexpr, BLOCK_HW: tl.constexpr, GATE_BLOCK_C: tl.constexpr, BLOCK_RD: tl.constexpr,
    ACC: tl.constexpr,
):
    b = pool_tile(x_ptr, sxb, sxc, sxhw, dy_ptr, sdb, sdc, sdhw, ref_ptr, sum_ptr, sum_ptr, cnt_ptr,
                  b0, 0, ROWS, C, HW, hw_per_split, n_cblocks,
                  True, False, WITH_MAX, BLOCK_C, BLOCK_HW, ACC)
    if last_to_arrive(count_ptr, b, n_cblocks * tl.num_programs(1)):
        se_gate_backward_row(sum_ptr, cnt_ptr, tl.num_programs(1), ROWS, C, RD, HW, w1_ptr, w2_ptr, hidden_ptr,
                             gate_ptr, dz_ptr, dh_ptr, mean_coef_ptr, max_coef_ptr, b,
                             WITH_MAX, MLP_ACT, GATE, GATE_BLOCK_C, BLOCK_RD, ACC)


def se_pool_gate_backward(x: ChannelView, dy: ChannelView, pool_max, plan: PoolPlan, parts: PoolPartials, counters,
                          b0: int, nb: int, w1, w2, hidden, gate, dz, dh, mean_coef, max_coef,
                          gate_tiles: tuple[int, int], mlp_act: int, gate_fn: int) -> None:
    """Pool sum_hw(dy * x) of samples [b0, b0 + nb) (and ties of x with ``pool_max`` when
    ``parts.counts`` is set) into ``parts`` and write their dz, dh, mean_coef (and max_coef) rows."""
    B, C, H, W = x.tensor.shape
    with_max = parts.counts is not None
    fast(se_pool_gate_backward_kernel)[(nb * plan.n_cblocks, plan.n_splits)](
        x.tensor, x.sb, x.sc, x.shw, dy.tensor, dy.sb, dy.sc, dy.shw, pool_max if with_max else parts.sums,
        parts.sums, parts.counts if with_max else parts.sums, counters,
        b0, parts.sums.shape[1], C, w1.shape[0], H * W, plan.hw_per_split, plan.n_cblocks,
        w1, w2, hidden, gate, dz, dh, mean_coef, max_coef if with_max else mean_coef,
        WITH_MAX=with_max, MLP_ACT=mlp_act, GATE=gate_fn,
        BLOCK_C=plan.block_c, BLOCK_HW=plan.block_hw, GATE_BLOCK_C=gate_tiles[0], BLOCK_RD=gate_tiles[1],
        ACC=acc_dtype(x.tensor.dtype), num_warps=STREAM_WARPS,
    )
