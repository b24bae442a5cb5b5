"""torch.distributed: DDP over fused blocks on 2 processes (gloo, CPU) ends with the parameters (and
BatchNorm buffers) of one process trained on the concatenated batch: every block, and bundled
ResNet-18s with SE, ECA and CBAM, float64, 3 SGD steps, on both backends. Blocks with a BatchNorm
inside train with batch statistics in the synchronized mode (fusedattn.convert_sync_batchnorm);
without it, the two processes' statistics differ from the whole batch's and so do the parameters.
Plus torch.compile over DDP, and FSDP2 (fully_shard) in place of DDP."""
import copy

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

import fusedattn
from fusedattn.costmodel import interpreter_speed
from blocks import BLOCKS, C, fused_copy

#: one pytest-xdist worker runs this module, so its process groups are spawned once per backend
pytestmark = pytest.mark.xdist_group("distributed")

WORLD = 2
BATCH = 4  # samples per step, split in halves between the processes
STEPS = 3

#: models with a BatchNorm inside a fused block, trained with batch statistics
SYNCED = ["cbam-train", "sk-train"]
#: every row with parameters (SimAM has none: nothing for DDP to synchronize), except batch-statistics
#: rows without a synchronized mode (CoordAttn's bn1: each process normalises with its own half of
#: the batch, as an nn.BatchNorm2d under DDP does; torch.nn.SyncBatchNorm.convert_sync_batchnorm
#: swaps its bn1 for a SyncBatchNorm, which the fused module then runs as a module, test_coord_attn.py)
MODELS = {name: (lambda name=name: fused_copy(BLOCKS[name]()), (C, 5, 5)) for name in BLOCKS
          if any(True for _ in BLOCKS[name]().parameters())
          and (name in SYNCED or not BLOCKS[name].batchnorm_train)}
MODELS.update({f"resnet18-{a}": (lambda a=a: fusedattn.models.resnet18(attn=a, width=8, num_classes=10).eval(),
                                 (3, 8, 8)) for a in ("se", "eca", "cbam")})


def _paths_in_eval(sk):
    """SK's branch convs are ordinary ConvNormAct layers, not the fused part: their BatchNorms are
    torch.nn.SyncBatchNorm's to synchronize (GPU only), so they use running statistics here and
    the attention BatchNorm's synchronization is what is tested."""
    sk.paths.eval()
    return sk


MODELS["sk-train"] = (lambda: _paths_in_eval(fused_copy(BLOCKS["sk-train"]())), (C, 5, 5))


def _fully_shard(model):
    """FSDP2: each fused block its own shard group, then the rest."""
    from torch.distributed.fsdp import fully_shard

    for m in model.modules():
        if m is not model and isinstance(m, (fusedattn.SE, fusedattn.ECA, fusedattn.CBAM, fusedattn.PSA,
                                             fusedattn.SelectiveKernel)):
            fully_shard(m)
    return fully_shard(model)


def train(name: str, rank: int, world: int, sync: bool = True, compile_: bool = False, fsdp: bool = False) -> dict:
    """3 SGD steps of model ``name`` on this process's share of the same batches; its final
    parameters and buffers (DDP, or FSDP2's fully_shard). world = 1: one process, the whole batch."""
    torch.manual_seed(0)
    make, shape = MODELS[name]
    model = make().double()
    batches = [torch.randn(BATCH, *shape, dtype=torch.float64) for _ in range(STEPS)]
    with torch.no_grad():  # a loss that needs every output (shape from a copy: no BatchNorm update)
        weight = torch.randn(BATCH, *copy.deepcopy(model).eval()(batches[0][:1]).shape[1:], dtype=torch.float64)
    if sync:
        fusedattn.convert_sync_batchnorm(model)
    net = model if world == 1 else _fully_shard(model) if fsdp else DistributedDataParallel(model)
    if compile_:
        net = torch.compile(net, backend="aot_eager")
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    share = slice(rank * BATCH // world, (rank + 1) * BATCH // world)
    for x in batches:
        opt.zero_grad()
        (net(x[share]) * weight[share]).square().mean().backward()
        opt.step()
    return {k: (v.full_tensor() if hasattr(v, "full_tensor") else v).detach().clone()
            for k, v in model.state_dict().items()}


def _worker(rank, init_file, backend, jobs, out):
    interpreter_speed.install()  # a spawned process: tests/conftest.py did not run here
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        with fusedattn.use_backend(backend):
            results = {job: train(*job_args(job), rank, WORLD, **job_kwargs(job)) for job in jobs}
        if rank == 0:
            torch.save(results, out)
    finally:
        dist.destroy_process_group()


def job_args(job):
    return (job.split("+")[0],)


def job_kwargs(job):
    return {"sync": "+unsynced" not in job, "compile_": "+compile" in job, "fsdp": "+fsdp" in job}


JOBS = (list(MODELS) + [f"{n}+unsynced" for n in SYNCED] + ["se-residual+compile", "cbam-train+compile"]
        + ["resnet18-se+fsdp", "cbam-train+fsdp", "sk-train+fsdp"])
#: under Triton's interpreter (CPU) a ResNet-18 with ECA or CBAM costs half a minute per process:
#: those two run on the plain-PyTorch route only (their blocks run on both, above)
INTERPRETER_SKIPS = {"resnet18-eca", "resnet18-cbam"}


def _jobs(backend: str) -> list[str]:
    slow = backend == "triton" and not torch.cuda.is_available()
    return [j for j in JOBS if not (slow and j in INTERPRETER_SKIPS)]


@pytest.fixture(scope="module")
def ddp_runs(tmp_path_factory):
    """backend -> every job's final state from one 2-process run on that backend (spawned once per
    backend and module: the processes' imports alone cost seconds)."""
    runs = {}

    def run(backend):
        if backend not in runs:
            tmp = tmp_path_factory.mktemp(f"ddp-{backend}")
            mp.spawn(_worker, args=(str(tmp / "rendezvous"), backend, _jobs(backend), str(tmp / "out.pt")),
                     nprocs=WORLD)
            runs[backend] = torch.load(tmp / "out.pt")
        return runs[backend]

    return run


def _one_process(backend, job):
    with fusedattn.use_backend(backend):
        return train(job.split("+")[0], 0, 1)


def _max_rel(got: dict, want: dict) -> float:
    assert got.keys() == want.keys()
    err = 0.0
    for k in want:
        if want[k].is_floating_point():
            err = max(err, ((got[k] - want[k]).norm() / want[k].norm().clamp_min(1.0)).item())
        else:
            assert torch.equal(got[k], want[k]), k
    return err


@pytest.mark.parametrize("backend, job", [(b, j) for b in ("triton", "torch") for j in _jobs(b) if "+unsynced" not in j])
def test_ddp_matches_one_process(ddp_runs, backend, job):
    err = _max_rel(ddp_runs(backend)[job], _one_process(backend, job))
    # float64; seen: 0 to 6e-17 (the synchronized BatchNorms included)
    assert err <= 1e-12, f"{job} ({backend}): {err:.2e}"


@pytest.mark.parametrize("backend, job", [(b, f"{n}+unsynced") for b in ("triton", "torch") for n in SYNCED])
def test_unsynchronized_batchnorm_differs(ddp_runs, backend, job):
    """The control: each process's own statistics give other parameters (so the test above can fail)."""
    assert _max_rel(ddp_runs(backend)[job], _one_process(backend, job)) > 1e-6


def test_convert_honours_sync_batchnorm():
    """convert(sync_batchnorm=True) switches the blocks with a BatchNorm inside, and only those; in
    one process (no process group) a switched block computes what it did (the fused path)."""
    from fusedattn.reference import CbamModule, SEModule

    model = torch.nn.Sequential(CbamModule(C, rd_channels=4), SEModule(C, rd_channels=4)).double()
    plain, _ = fusedattn.convert(model)
    synced, _ = fusedattn.convert(model, sync_batchnorm=True)
    assert [getattr(m, "sync_batchnorm", None) for m in synced] == [True, None]
    assert not plain[0].sync_batchnorm
    x = torch.randn(3, C, 5, 5, dtype=torch.float64)
    torch.testing.assert_close(synced(x), plain(x), rtol=0, atol=0)
