"""Training in several processes on torch.distributed, launched by torchrun.

Why rank 0 drives: rank 0 runs the command as one process would. It alone
reads and writes the run directory, holds its lock, validates and decides.
The other ranks (workers) run :func:`serve`: they wait for a training job,
rebuild the model from the arrays rank 0 sends, train their share of every
batch alongside it (:mod:`legcf_core.parallel_training`), and wait for the
next job until rank 0 says stop. Workers need no run directory, so they can
run on machines that do not hold rank 0's files.

Messages (a job, S after each assignment update, rank 0's decision after
each epoch, the positives each rank trained on) travel on a gloo group on
the CPU; gradients on the training group, gloo on the CPU and NCCL on GPUs.
A collective that fails because a peer died, a connection dropped or
``LEGCF_DIST_TIMEOUT`` seconds passed raises :class:`DistributedError`, one
line; torchrun then stops the remaining ranks.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import signal
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
import torch.distributed as dist

from legcf_core.config import TrainConfig
from legcf_core.errors import DistributedError

TIMEOUT_ENV = "LEGCF_DIST_TIMEOUT"
DEFAULT_TIMEOUT = 7200.0  # seconds a rank waits in a collective: rank 0 alone prepares and evaluates
_ACTIVE: Group | None = None
_FAILING = False  # this rank's command failed: a later SIGTERM must not hide the first error


def active() -> Group | None:
    """The process group this command trains in, if it was launched by torchrun with several ranks."""
    return _ACTIVE


def world_size() -> int:
    """How many processes torchrun started for this command (1 without torchrun)."""
    return _env_int("WORLD_SIZE", 1)


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, str(default))
    try:
        return int(value)
    except ValueError:
        raise DistributedError(f"environment variable {name}={value!r} is not an integer") from None


def _reason(exc: BaseException) -> str:
    """The first line of a torch.distributed error, without gloo's source location."""
    line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    line = re.sub(r"^\[[^\]]*\]\s*", "", line)
    line = line.split(". This is typically")[0]  # gloo's advice names no legcf option
    return line if len(line) <= 120 else line[:117] + "..."


@dataclass
class Group:
    """This process's place among the training processes, and the collectives they share."""

    rank: int
    world_size: int
    backend: str
    device: torch.device
    control: Any = None  # the gloo group messages travel on (None: the default group)
    in_job: bool = False
    positives: int = 0  # training positives this rank took in the current job
    sharded: bool = False  # --shard: each rank holds only its rows (legcf_core.sharded_training)

    @property
    def leader(self) -> bool:
        return self.rank == 0

    @contextmanager
    def _guard(self, what: str) -> Iterator[None]:
        """A failed collective as one line saying who was lost and what to do."""
        try:
            yield
        except RuntimeError as exc:
            who = "a training process" if self.leader else "rank 0"
            raise DistributedError(
                f"rank {self.rank} of {self.world_size} lost {who} while {what} ({_reason(exc)}); "
                "the stage did not finish and the run directory keeps its last complete files: rerun it"
            ) from None

    def guarded(self, what: str) -> Any:
        """Another module's collective under this group's failure handling (one line on a lost rank)."""
        return self._guard(what)

    # ------------------------------------------------------------ messages

    def _broadcast(self, tensor: torch.Tensor, what: str) -> torch.Tensor:
        with self._guard(what):
            dist.broadcast(tensor, 0, group=self.control)
        return tensor

    def send(self, header: dict[str, Any], arrays: dict[str, np.ndarray], what: str) -> None:
        """Rank 0: a JSON header and named arrays to every worker."""
        arrays = {name: np.ascontiguousarray(value) for name, value in arrays.items()}
        header = {**header, "arrays": [[n, a.dtype.str, list(a.shape)] for n, a in arrays.items()]}
        payload = torch.from_numpy(np.frombuffer(json.dumps(header).encode(), dtype=np.uint8).copy())
        self._broadcast(torch.tensor([payload.numel()], dtype=torch.int64), what)
        self._broadcast(payload, what)
        for value in arrays.values():
            self._broadcast(torch.from_numpy(value.reshape(-1)), what)

    def receive(self, what: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """A worker: what rank 0 sent with :meth:`send`."""
        size = self._broadcast(torch.zeros(1, dtype=torch.int64), what)
        payload = self._broadcast(torch.empty(int(size[0]), dtype=torch.uint8), what)
        header = json.loads(payload.numpy().tobytes().decode())
        arrays = {}
        for name, dtype, shape in header.pop("arrays"):
            flat = torch.from_numpy(np.empty(int(np.prod(shape)), dtype=np.dtype(dtype)))
            arrays[name] = self._broadcast(flat, what).numpy().reshape(shape)
        return header, arrays

    # ------------------------------------------------------------ training

    def shard(self, n: int) -> slice:
        """This rank's contiguous slice of a batch of ``n`` positives."""
        return slice(self.rank * n // self.world_size, (self.rank + 1) * n // self.world_size)

    def step(self, model: Any, batch: Any, optimizer: torch.optim.Optimizer, config: TrainConfig) -> float:
        """One optimizer step on this process's slice of ``batch`` (:func:`parallel_step`)."""
        from legcf_core.parallel_training import parallel_step

        return parallel_step(model, batch, optimizer, config, self)

    def sampler(self, train: sp.csr_matrix, negatives: int, seed: int) -> Any:
        """The batches every process draws: the seed's stream over all of ``train``, as one process."""
        from legcf_core.training import NegativeSampler

        return NegativeSampler(train, negatives, seed)

    def manifest_entry(self) -> dict[str, Any]:
        """How many processes trained the job just finished, and the positives each took."""
        return {"world_size": self.world_size, "backend": self.backend, "rank_positives": self.end_job()}

    def sum_gradients(self, parameters: Sequence[torch.nn.Parameter], loss: float, positives: int) -> float:
        """Sum every parameter's gradient, and the batch loss, over the ranks (one all-reduce);
        a gradient no rank has stays None, as Adam then skips it as one process would."""
        self.positives += positives
        parts = [
            p.grad.reshape(-1) if p.grad is not None else torch.zeros_like(p).reshape(-1) for p in parameters
        ]
        flags = [0.0 if p.grad is None else 1.0 for p in parameters]
        dtype = parameters[0].dtype if parameters else torch.float32
        tail = torch.tensor([loss, *flags], dtype=dtype, device=self.device)
        buffer = torch.cat([*parts, tail])
        with self._guard("summing gradients"):
            dist.all_reduce(buffer)
        offset = 0
        for index, parameter in enumerate(parameters):
            n = parameter.numel()
            present = float(buffer[buffer.numel() - len(parameters) + index]) > 0
            parameter.grad = buffer[offset : offset + n].view_as(parameter) if present else None
            offset += n
        return float(buffer[offset])

    def share_assignment(self, model: Any) -> int:
        """Rank 0 re-solves S and sends it; workers install it. Returns the rows kept."""
        what = "sharing the assignment update"
        if self.leader:
            kept = model.update_assignment()
            s = model.assignment
            arrays = {"indptr": s.indptr, "indices": s.indices, "data": s.data}
            self.send({"kept": kept, "shape": list(s.shape)}, arrays, what)
            return kept
        header, arrays = self.receive(what)
        s = sp.csr_matrix((arrays["data"], arrays["indices"], arrays["indptr"]), shape=tuple(header["shape"]))
        model.set_assignment(s)
        return int(header["kept"])

    def decide(self, stop: bool = False, decayed: bool = False) -> tuple[bool, bool]:
        """Rank 0's decision after an epoch (stop training; lr decayed) to every rank."""
        decision = torch.tensor([int(stop), int(decayed)], dtype=torch.int64)
        self._broadcast(decision, "sharing the epoch's decision")
        return bool(decision[0]), bool(decision[1])

    def end_job(self) -> list[int]:
        """Every rank's positives in the job just finished, gathered on every rank."""
        counts = torch.zeros(self.world_size, dtype=torch.int64)
        counts[self.rank] = self.positives
        with self._guard("gathering each rank's positives"):
            dist.all_reduce(counts, group=self.control)
        self.in_job = False
        return [int(c) for c in counts]


def begin_job(
    model: Any, train: sp.csr_matrix, config: TrainConfig, update_every: int | None
) -> Group | None:
    """Rank 0, before training ``model`` (a StoredModel) on ``train``: send the job to the
    workers. Returns the group to train in (None in a single process)."""
    group = active()
    if group is None:
        return None
    layer = model.layer
    arrays = {"train.indptr": train.indptr, "train.indices": train.indices}
    arrays.update({f"layer.{name}": value for name, value in layer.arrays().items()})
    for name, value in model.backbone.state_dict().items():
        arrays[f"backbone.{name}"] = value.detach().cpu().numpy()
    header = {
        "op": "train",
        "config": asdict(config),
        "update_every": update_every,
        "train_shape": list(train.shape),
        "layer": f"{type(layer).__module__}:{type(layer).__qualname__}",
        "model": {name: str(value) for name, value in model.header().items()},
        "backbone": model.backbone_name,
    }
    group.positives, group.in_job = 0, True
    group.send(header, arrays, "sending a training job")
    return group


def processes_entry(group: Any, positives: int) -> dict[str, Any]:
    """What a training stage's manifest entry records of its processes: how many, and the
    positives each trained on (gathered from the ranks themselves, so a run that only
    looked distributed shows)."""
    if group is None:
        return {"world_size": 1, "rank_positives": [positives]}
    return group.manifest_entry()


def serve(group: Group) -> bool:
    """A worker's life: train each job rank 0 sends until it says stop; returns whether rank 0's
    command succeeded."""
    from legcf_core.model import trainable
    from legcf_core.parallel_training import follow

    while True:
        header, arrays = group.receive("waiting for rank 0's next training job")
        if header["op"] == "stop":
            return bool(header["ok"])
        if header["op"] == "shard":
            from legcf_core.sharded_training import follow_shard

            follow_shard(group, header, arrays)
            continue
        model, train, config = rebuild(header, arrays)
        group.positives, group.in_job = 0, True
        n_users = train.shape[0]
        follow(trainable(model, train, n_users, group.device), train, config, header["update_every"], group)
        group.end_job()


def rebuild(header: dict[str, Any], arrays: dict[str, np.ndarray]) -> tuple[Any, sp.csr_matrix, TrainConfig]:
    """A worker: the stored model, training matrix and settings of a job, as rank 0 has them."""
    from legcf_core.model import StoredModel, new_backbone

    shape = tuple(header["train_shape"])
    indices, indptr = arrays["train.indices"], arrays["train.indptr"]
    train = sp.csr_matrix((np.ones(indices.size, dtype=np.float32), indices, indptr), shape=shape)
    meta = header["model"]
    layer_arrays = {k.removeprefix("layer."): v for k, v in arrays.items() if k.startswith("layer.")}
    layer = _layer_class(header["layer"]).replica(layer_arrays, meta, shape[0] + shape[1])
    dim, layers, seed = int(meta["dim"]), int(meta["layers"]), int(meta["seed"])
    backbone = new_backbone(header["backbone"], dim, layers, seed)
    weights = {k.removeprefix("backbone."): v for k, v in arrays.items() if k.startswith("backbone.")}
    if weights:
        backbone.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in weights.items()})
    model = StoredModel(layer, backbone, header["backbone"], dim, layers, seed)
    return model, train, TrainConfig(**header["config"])


def _layer_class(path: str) -> Any:
    """An embedding layer class named ``module:qualname``, only from legcf's layers."""
    from legcf_core.layers import EmbeddingLayer

    module, _, name = path.partition(":")
    if not module.startswith("legcf_core.layers"):
        raise DistributedError(f"rank 0 sent a job for {path!r}, which is no legcf embedding layer")
    kind = getattr(importlib.import_module(module), name, None)
    if not (isinstance(kind, type) and issubclass(kind, EmbeddingLayer)):
        raise DistributedError(f"rank 0 sent a job for {path!r}, which is no legcf embedding layer")
    return kind


def join(device: torch.device, shard: bool = False) -> Group | None:
    """Join the process group torchrun describes in the environment (None for one process).
    On GPUs each rank takes ``cuda:LOCAL_RANK`` and trains over NCCL; on the CPU over gloo.
    ``shard`` (sharded training, CPU only) makes a group even of one process."""
    size = world_size()
    if size <= 1 and not shard:
        return None
    if shard and device.type == "cuda":
        raise DistributedError("sharded training (--shard) runs on the CPU over gloo; add --device cpu")
    rank, local = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    if device.type == "cuda":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    timeout = timedelta(seconds=float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT)))
    try:
        if size <= 1:  # sharded, one process: the same collectives, over a group of one
            dist.init_process_group(backend, timeout=timeout, store=dist.HashStore(), rank=0, world_size=1)
        else:
            dist.init_process_group(backend, timeout=timeout)
        control = dist.new_group(backend="gloo", timeout=timeout) if backend == "nccl" else None
    except (RuntimeError, ValueError) as exc:
        raise DistributedError(
            f"cannot join the {size} training processes ({_reason(exc)}); launch with torchrun, "
            "which sets MASTER_ADDR, MASTER_PORT, RANK and WORLD_SIZE"
        ) from None
    return Group(rank, size, backend, device, control, sharded=shard)


def _terminated(signum: int, frame: Any) -> None:
    if _FAILING:
        return
    where = "" if _ACTIVE is None else f"rank {_ACTIVE.rank} of {_ACTIVE.world_size} "
    raise DistributedError(
        f"{where}stopped by SIGTERM: torchrun stops every rank once one has failed (its error, if it "
        "could print one, is above); the run directory keeps its last complete files: rerun the stage"
    )


def leave_together(group: Group) -> None:
    """Wait for every rank before tearing the group down, after a command that went well.

    A rank that destroys its process group while a peer is still finishing its
    last exchange (the workers' stop message) can end that peer with SIGABRT at
    exit, "terminate called without an active exception", after the work is
    done; seen about once in 40 launches. A rank whose peers have gone anyway
    gets an error here, which changes nothing now.
    """
    with suppress(Exception):
        dist.barrier(group=group.control)


@contextmanager
def training_processes(device: torch.device, shard: bool = False) -> Iterator[Group | None]:
    """The process group of a training command, for its length (None for one process).

    Rank 0 tells the workers to stop when the command ends (unless a job broke
    off, when they see the connection drop instead); every rank then leaves the
    group. SIGTERM, which torchrun sends the others when one rank fails, ends a
    rank with one line instead of silently; once this rank's command has
    failed, SIGTERM is ignored until the process ends (it is about to), so the
    first error is the one printed.
    """
    global _ACTIVE, _FAILING
    group = join(device, shard)
    if group is None:
        yield None
        return
    _ACTIVE = group
    previous = signal.signal(signal.SIGTERM, _terminated)
    ok = False
    try:
        yield group
        ok = True
    finally:
        _FAILING = not ok
        try:
            if group.leader and not group.in_job:
                with suppress(DistributedError):
                    group.send({"op": "stop", "ok": ok}, {}, "stopping the workers")
        finally:
            _ACTIVE = None
            if ok:
                signal.signal(signal.SIGTERM, previous)
                leave_together(group)
            with suppress(RuntimeError, ValueError):
                dist.destroy_process_group()
