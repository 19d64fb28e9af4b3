"""A framework-free batch loader: seeded order, per-sample seeded augmentation, optional worker processes.

Determinism contract (what makes both backends see the same bytes):

- **Order.** Epoch ``e`` visits ``Generator(PCG64(SeedSequence([seed, e]))).permutation(N)`` (or ``0..N-1``
  when ``shuffle=False``).
- **Distributed split.** That order is padded to a multiple of ``world_size`` by repeating it from its start
  (``numpy.resize``), and rank ``r`` takes every ``world_size``-th element starting at ``r``
  (``order[r::world_size]``).  Every sample is seen exactly once per epoch across ranks, plus at most
  ``world_size - 1`` repeats.  (Rank-strided like torch's ``DistributedSampler``, unlike paddle's contiguous
  ``DistributedBatchSampler``; neither framework's own sampler is used.)
- **Augmentation.** Sample ``i`` (its index in ``dataset``) is transformed with
  ``Generator(PCG64(SeedSequence([seed, e, i])))``, so a batch does not depend on the batch size, the number
  of worker processes, the rank or on what was loaded before it.  (A padded repeat gets the same augmentation
  as its original.)
- **Batches** are ``(images float32 (N, C, H, W), labels int64 (N,))`` numpy arrays; ``drop_last`` drops a
  short final batch.
- **Resume.** :meth:`Loader.state_dict` records the epoch and how many batches were delivered; a loader that
  :meth:`Loader.load_state_dict` it continues with the next batch.
"""
from __future__ import annotations

import collections
import multiprocessing
import os
import shutil
import tempfile
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

Batch = Tuple[np.ndarray, np.ndarray]


def sample_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The augmentation generator of sample ``index`` in ``epoch``."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed), int(epoch), int(index)])))


def epoch_order(num_samples: int, seed: int, epoch: int, shuffle: bool) -> np.ndarray:
    """The visiting order of all samples in ``epoch`` (before the distributed split)."""
    if not shuffle:
        return np.arange(num_samples, dtype=np.int64)
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed), int(epoch)])))
    return rng.permutation(num_samples).astype(np.int64)


def shard_indices(order: np.ndarray, rank: int, world_size: int) -> np.ndarray:
    """Rank ``rank``'s share of ``order``: pad by repeating to a multiple of ``world_size``, then stride."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
    total = -(-len(order) // world_size) * world_size
    return np.resize(order, total)[rank::world_size]


def load_batch(dataset, transform: Optional[Callable], seed: int, epoch: int, indices: Sequence[int]) -> Batch:
    """Load, transform and stack ``indices``: the one code path used by the main process and by workers."""
    images, labels = [], []
    for index in indices:
        image, label = dataset[int(index)]
        if getattr(transform, "paired", False):  # segmentation: the label map moves with the image
            image, label = transform(image, label, sample_rng(seed, epoch, index))
        elif transform is not None:
            image = transform(image, sample_rng(seed, epoch, index))
        images.append(image)
        labels.append(label)
    shapes = {np.shape(image) for image in images}
    if len(shapes) > 1:  # e.g. whole-image segmentation evaluation of images of several sizes
        from common.data.datasets import DataError

        raise DataError(f"the samples of one batch have different shapes {sorted(shapes)} (indices "
                        f"{[int(i) for i in indices]}): resize them to one size (segmentation: SEG.EVAL_SIZE) or "
                        "use a batch of 1 (DATA.EVAL_BATCH_SIZE 1)")
    stacked = np.stack(images)
    if stacked.dtype != np.float32:
        raise TypeError(
            f"the transform must return float32 (C, H, W) arrays, got {stacked.dtype} {stacked.shape[1:]}; "
            f"end the pipeline with ToNormalizedFloat"
        )
    targets = np.asarray(labels)
    # class labels are int64; regression targets (a benchmark table's metrics) stay float32
    return stacked, targets.astype(np.float32 if targets.dtype.kind == "f" else np.int64)


# Worker-process state: set once per process by the pool initializer.
_worker_dataset = None
_worker_transform = None
_worker_spill_dir: Optional[str] = None


#: signals that end a worker at once (the default action) rather than through a handler the parent installed
_FATAL_SIGNALS = ("SIGSEGV", "SIGBUS", "SIGFPE", "SIGILL", "SIGABRT")


def _init_worker(dataset, transform, spill_dir: Optional[str]) -> None:
    global _worker_dataset, _worker_transform, _worker_spill_dir
    _worker_dataset, _worker_transform, _worker_spill_dir = dataset, transform, spill_dir
    # A worker that crashes must die, not run a framework's crash handler (paddle's allocates, and deadlocks on a
    # heap the crash left locked, with SIGTERM blocked, so Pool.terminate could never end it).
    import signal

    for name in _FATAL_SIGNALS:
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_DFL)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})


def _worker_load_batch(
    seed: int, epoch: int, number: int, indices: np.ndarray
) -> Tuple[Union[str, np.ndarray], np.ndarray]:
    """Load one batch; hand the images back as a ``.npy`` file in the spill folder, or inline.

    Sending a large array through the pool's pipe costs the main process far more CPU (64 KiB pipe reads)
    than reading a file from a RAM-backed folder, so the images go through a file when one can be written.
    """
    images, labels = load_batch(_worker_dataset, _worker_transform, seed, epoch, indices)
    if _worker_spill_dir is not None:
        path = os.path.join(_worker_spill_dir, f"batch-{number}.npy")
        try:
            np.save(path, images, allow_pickle=False)
            return path, labels
        except OSError:  # e.g. the folder is full: fall back to the pipe
            if os.path.exists(path):
                os.remove(path)
    return images, labels


def _receive(result: Tuple[Union[str, np.ndarray], np.ndarray]) -> Batch:
    images, labels = result
    if isinstance(images, str):
        path, images = images, np.load(images, allow_pickle=False)
        os.remove(path)
    return images, labels


def _spill_parent() -> Optional[str]:
    """A RAM-backed folder for worker batches (``/dev/shm`` on Linux), else the default temp folder."""
    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


def _pool_context():
    """``forkserver`` where the platform has it, else the default.  Workers fork from a small, clean server
    process, not from the training process: a fork of that copies whatever state its native libraries (oneDNN,
    paddle, their threads and allocators) are in, which has crashed workers inside ``malloc``.  The dataset and the
    transform reach each worker pickled, once per pass."""
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("forkserver" if "forkserver" in methods else None)


def _await(pool, result, pids, timeout_s: float = 1.0):
    """``result.get()``, but a worker that died (the pool replaces it, so its pid leaves the pool) is an error
    naming its exit, never a wait for a batch that will not come."""
    while True:
        try:
            return result.get(timeout=timeout_s)
        except multiprocessing.TimeoutError:
            now = {p.pid for p in getattr(pool, "_pool", ())}
            if now and now != pids:
                from common.data.datasets import DataError

                raise DataError("a data-loader worker process died (killed by a signal or out of memory) while "
                                "loading a batch; set DATA.WORKERS 0 to load in the main process and see the error") \
                    from None


class Loader:
    """Iterate ``(images, labels)`` numpy batches of ``dataset`` (see the module docstring for the contract).

    ``transform(image_uint8_hwc, rng) -> float32 (C, H, W)``; ``workers > 0`` loads batches in that many
    processes (bit-identical to ``workers=0``), keeping at most ``workers * prefetch`` batches in flight;
    workers hand batches back through files in a private RAM-backed folder (``/dev/shm``) that is removed
    when the iteration ends.
    """

    def __init__(
        self,
        dataset,
        transform: Optional[Callable],
        batch_size: int,
        *,
        shuffle: bool = False,
        seed: int = 0,
        epoch: int = 0,
        drop_last: bool = False,
        workers: int = 0,
        rank: int = 0,
        world_size: int = 1,
        prefetch: int = 2,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if workers < 0 or prefetch < 1:
            raise ValueError(f"need workers >= 0 and prefetch >= 1, got {workers} and {prefetch}")
        shard_indices(np.zeros(0, np.int64), rank, world_size)  # validates rank / world_size
        self.dataset = dataset
        self.transform = transform
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.epoch = int(epoch)
        self.drop_last = bool(drop_last)
        self.workers = int(workers)
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.prefetch = int(prefetch)
        self._position = 0   # batches of the current epoch delivered so far
        self._resume_at = 0  # where the next iteration starts (set by load_state_dict)

    # ------------------------------------------------------------------------------------ sizes/order
    @property
    def num_samples(self) -> int:
        """Samples this rank sees per epoch (padding included)."""
        return -(-len(self.dataset) // self.world_size)

    def __len__(self) -> int:
        if self.drop_last:
            return self.num_samples // self.batch_size
        return -(-self.num_samples // self.batch_size)

    def indices(self) -> np.ndarray:
        """This rank's sample indices for the current epoch, in visiting order."""
        order = epoch_order(len(self.dataset), self.seed, self.epoch, self.shuffle)
        return shard_indices(order, self.rank, self.world_size)

    def batch_indices(self) -> List[np.ndarray]:
        mine = self.indices()
        return [mine[start:start + self.batch_size] for start in range(0, len(self) * self.batch_size, self.batch_size)]

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch to iterate; a different epoch than the current one starts from its first batch."""
        if int(epoch) != self.epoch:
            self.epoch = int(epoch)
            self._position = 0
            self._resume_at = 0

    # --------------------------------------------------------------------------------------- iterate
    def __iter__(self) -> Iterator[Batch]:
        batches = self.batch_indices()
        start, self._resume_at = self._resume_at, 0
        self._position = start
        if self.workers == 0:
            for number in range(start, len(batches)):
                batch = load_batch(self.dataset, self.transform, self.seed, self.epoch, batches[number])
                self._position = number + 1
                yield batch
            return
        yield from self._iter_workers(batches, start)

    def _iter_workers(self, batches: List[np.ndarray], start: int) -> Iterator[Batch]:
        spill_dir = tempfile.mkdtemp(prefix="twinnas-batches-", dir=_spill_parent())
        pool = _pool_context().Pool(self.workers, initializer=_init_worker,
                                    initargs=(self.dataset, self.transform, spill_dir))
        pids = {p.pid for p in getattr(pool, "_pool", ())}  # a private list, stable since Python 3.2
        try:
            pending: "collections.deque" = collections.deque()
            following = start
            for number in range(start, len(batches)):
                # Keep a bounded window of batches in flight, in order.
                while following < len(batches) and len(pending) < self.workers * self.prefetch:
                    task = (self.seed, self.epoch, following, batches[following])
                    pending.append(pool.apply_async(_worker_load_batch, task))
                    following += 1
                batch = _receive(_await(pool, pending.popleft(), pids))
                self._position = number + 1
                yield batch
        finally:
            pool.terminate()
            pool.join()
            shutil.rmtree(spill_dir, ignore_errors=True)  # batches never received (early stop, error)

    # ---------------------------------------------------------------------------------------- resume
    def state_dict(self) -> Dict[str, Any]:
        """Plain ints/bools (JSON-safe): enough to continue this epoch with the next batch."""
        return {
            "seed": self.seed,
            "epoch": self.epoch,
            "position": self._position,
            "num_samples": len(self.dataset),
            "batch_size": self.batch_size,
            "world_size": self.world_size,
            "shuffle": self.shuffle,
            "drop_last": self.drop_last,
        }

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Continue from ``state``: the next iteration yields batch ``state['position']`` of ``state['epoch']``."""
        must_match = {
            "num_samples": len(self.dataset),
            "batch_size": self.batch_size,
            "world_size": self.world_size,
            "shuffle": self.shuffle,
            "drop_last": self.drop_last,
        }
        for key, mine in must_match.items():
            if key not in state:
                raise KeyError(f"loader state has no '{key}' (keys: {sorted(state)})")
            if state[key] != mine:
                raise ValueError(
                    f"loader state was saved with {key}={state[key]!r} but this loader has {key}={mine!r}; "
                    f"the batches would differ, so it cannot continue that epoch"
                )
        position = int(state["position"])
        self.seed = int(state["seed"])
        self.epoch = int(state["epoch"])
        if not 0 <= position <= len(self):
            raise ValueError(f"loader state position {position} is outside [0, {len(self)}]")
        self._position = self._resume_at = position
