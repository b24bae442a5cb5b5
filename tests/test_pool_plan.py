"""The pool pass's plan (kernels/channel_pool.plan_pool): H*W split only as far as it pays, at most
MAX_SPLITS partials per (b, c), every position in exactly one split."""
import pytest
import torch

from fusedattn.kernels import config
from fusedattn.kernels.channel_pool import MAX_SPLITS, plan_pool
from fusedattn.kernels.layout import channel_view


@pytest.mark.parametrize("shape,layout", [((1, 256, 56, 56), "channels_last"), ((1, 512, 28, 28), "channels_last"),
                                          ((1, 64, 56, 56), "nchw"), ((64, 32, 112, 112), "channels_last"),
                                          ((64, 256, 56, 56), "channels_last"), ((2, 19, 7, 5), "nchw")], ids=str)
@pytest.mark.parametrize("target", [None, 1 << 14])
def test_splits_capped_and_cover_hw(shape, layout, target, monkeypatch):
    monkeypatch.setattr(config, "profile", config.PROFILES["h100"])
    monkeypatch.setattr(config, "target_programs", target)
    x = torch.empty(shape, dtype=torch.bfloat16, device="meta")
    if layout == "channels_last":
        x = x.to(memory_format=torch.channels_last)
    B, C, H, W = shape
    plan = plan_pool(channel_view(x), B, C, H * W)
    assert 1 <= plan.n_splits <= MAX_SPLITS
    assert plan.hw_per_split % plan.block_hw == 0
    assert (plan.n_splits - 1) * plan.hw_per_split < H * W <= plan.n_splits * plan.hw_per_split
    programs = B * plan.n_cblocks * plan.n_splits
    wanted = target or config.PROFILES["h100"].target_programs
    # split no further than the target asks, the cap allows and H*W has tiles; at least half as far
    # (whole tiles per split can merge the last ones)
    asked = min(-(-wanted // (B * plan.n_cblocks)), MAX_SPLITS, -(-H * W // plan.block_hw))
    assert asked / 2 <= plan.n_splits <= asked
    assert programs == B * plan.n_cblocks * plan.n_splits


def test_batch_one_at_56x56_splits_at_most_max_splits_ways(monkeypatch):
    """The case that split 196 ways: 1x256x56x56 bf16 channels_last on an H100 plan (32 asked,
    whole 16-position tiles per split: 28 splits of 112 positions)."""
    monkeypatch.setattr(config, "profile", config.PROFILES["h100"])
    x = torch.empty(1, 256, 56, 56, dtype=torch.bfloat16, device="meta").to(memory_format=torch.channels_last)
    plan = plan_pool(channel_view(x), 1, 256, 56 * 56)
    assert plan.n_cblocks == 2 and MAX_SPLITS == 32 and plan.n_splits == 28
