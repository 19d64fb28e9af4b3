"""Why the data pipeline is framework-free: the two frameworks' distributed samplers disagree.

torch's ``DistributedSampler`` (``torch.randperm`` seeded with ``seed + epoch``, rank-strided) and paddle's
``DistributedBatchSampler`` (``numpy RandomState(epoch).shuffle``, contiguous blocks per rank) give
different shards for the same epoch, so a run would see different data depending on the backend.  Our numpy
loader decides the shards itself, and both backends receive the identical arrays.  If a framework release
changes its sampler, the first test shows it; the second guards our side.
"""
from __future__ import annotations

import numpy as np
import paddle
import torch

from common.data import Loader, SyntheticDataset
from common.data import transforms as T

NUM_SAMPLES, WORLD_SIZE, EPOCH, SEED, BATCH = 20, 2, 3, 0, 4


def torch_shards():
    from torch.utils.data.distributed import DistributedSampler

    shards = []
    for rank in range(WORLD_SIZE):
        sampler = DistributedSampler(range(NUM_SAMPLES), num_replicas=WORLD_SIZE, rank=rank, shuffle=True, seed=SEED)
        sampler.set_epoch(EPOCH)
        shards.append(list(sampler))
    return shards


def paddle_shards():
    from paddle.io import DistributedBatchSampler

    shards = []
    for rank in range(WORLD_SIZE):
        sampler = DistributedBatchSampler(range(NUM_SAMPLES), batch_size=BATCH, num_replicas=WORLD_SIZE,
                                          rank=rank, shuffle=True)
        sampler.set_epoch(EPOCH)
        shards.append([int(i) for batch in sampler for i in batch])  # one pass: paddle bumps the epoch per pass
    return shards


def test_framework_samplers_give_different_shards():
    torch_side, paddle_side = torch_shards(), paddle_shards()
    for shards in (torch_side, paddle_side):  # each is a valid partition of the dataset ...
        assert sorted(i for shard in shards for i in shard) == list(range(NUM_SAMPLES))
    print("torch shards:", torch_side, "\npaddle shards:", paddle_side)
    assert torch_side != paddle_side  # ... but not the same one
    assert all(t != p for t, p in zip(torch_side, paddle_side))


def test_numpy_loader_feeds_both_backends_identical_batches():
    dataset = SyntheticDataset(NUM_SAMPLES, image_size=12, channels=3, num_classes=5, seed=1)
    pipeline = T.Compose([T.RandomResizedCrop(8, interpolation="random"), T.HorizontalFlip(),
                          T.ToNormalizedFloat((0.5,) * 3, (0.25,) * 3), T.RandomErasing(p=0.5)])
    for rank in range(WORLD_SIZE):
        loader = Loader(dataset, pipeline, BATCH, shuffle=True, seed=SEED, epoch=EPOCH,
                        rank=rank, world_size=WORLD_SIZE)
        for images, labels in loader:
            on_torch = (torch.from_numpy(images).numpy(), torch.from_numpy(labels).numpy())
            on_paddle = (paddle.to_tensor(images).numpy(), paddle.to_tensor(labels).numpy())
            for ours, a, b in zip((images, labels), on_torch, on_paddle):
                assert a.dtype == b.dtype == ours.dtype and a.shape == b.shape == ours.shape
                assert a.tobytes() == b.tobytes() == ours.tobytes()
    # and the shard is the documented one, whichever backend asks
    order = np.random.Generator(np.random.PCG64(np.random.SeedSequence([SEED, EPOCH]))).permutation(NUM_SAMPLES)
    for rank in range(WORLD_SIZE):
        shard = Loader(dataset, pipeline, BATCH, shuffle=True, seed=SEED, epoch=EPOCH, rank=rank,
                       world_size=WORLD_SIZE).indices()
        np.testing.assert_array_equal(shard, order[rank::WORLD_SIZE])
