"""Two-stream patch batches: shapes, endlessness, seeding per rank, resumable state."""

import itertools
import json

import numpy as np
import pytest
import torch

from semiseg.errors import DataError
from semiseg.sampling import PatchStream, PreparedCase

PATCH = (8, 12, 12)


def _cases(n=3, labeled=True, shape=(14, 18, 16)):
    out = []
    for i in range(n):
        rng = np.random.default_rng(100 + i)
        img = rng.normal(size=(1, *shape)).astype(np.float32)
        lab = None
        if labeled:
            lab = np.zeros(shape, dtype=np.int64)
            lab[2 + i:8 + i, 3:10, 4:12] = 1
            lab[10, 15, 2 + i] = 2
        out.append(PreparedCase(id=f"case{i}", image=img, label=lab, task=i % 2, domain=10 + i))
    return out


def _same(a, b):
    return (
        torch.equal(a["image"], b["image"])
        and torch.equal(a.get("label", torch.zeros(0)), b.get("label", torch.zeros(0)))
        and a["case"] == b["case"]
    )


def test_batch_shapes_and_dtypes():
    cases = _cases()
    stream = PatchStream(cases, PATCH, batch_size=4, seed=1)
    batch = next(stream)
    assert batch["image"].shape == (4, 1, *PATCH) and batch["image"].dtype == torch.float32
    assert batch["label"].shape == (4, *PATCH) and batch["label"].dtype == torch.long
    assert batch["task"].shape == (4,) and batch["task"].dtype == torch.long
    assert batch["domain"].dtype == torch.long
    by_id = {c.id: c for c in cases}
    assert batch["task"].tolist() == [by_id[c].task for c in batch["case"]]
    assert batch["domain"].tolist() == [by_id[c].domain for c in batch["case"]]
    assert set(batch["label"].unique().tolist()) <= {0, 1, 2}


def test_unlabeled_stream_has_no_labels():
    stream = PatchStream(_cases(labeled=False), PATCH, batch_size=2, with_labels=False, augment="none")
    batch = next(stream)
    assert "label" not in batch and batch["image"].shape == (2, 1, *PATCH)
    with pytest.raises(DataError, match="no label"):
        PatchStream(_cases(labeled=False), PATCH, batch_size=2, with_labels=True)


def test_stream_is_endless_and_one_case_fills_any_batch():
    stream = PatchStream(_cases(n=1), PATCH, batch_size=6, augment="none")
    batches = list(itertools.islice(stream, 30))
    assert len(batches) == 30 and all(b["image"].shape[0] == 6 for b in batches)
    assert all(b["case"] == ["case0"] * 6 for b in batches)


def test_same_seed_same_batches_other_rank_or_seed_differs():
    def first(seed, rank, n=3):
        return list(itertools.islice(PatchStream(_cases(), PATCH, 3, seed=seed, rank=rank), n))

    a, b = first(0, 0), first(0, 0)
    assert all(_same(x, y) for x, y in zip(a, b))
    assert not any(_same(x, y) for x, y in zip(a, first(0, 1)))
    assert not any(_same(x, y) for x, y in zip(a, first(1, 0)))


def test_state_resumes_the_identical_next_batch():
    stream = PatchStream(_cases(), PATCH, batch_size=3, seed=4, rank=2)
    for _ in range(3):
        next(stream)
    saved = json.loads(json.dumps(stream.state()))  # must survive a JSON checkpoint
    expected = [next(stream) for _ in range(2)]

    resumed = PatchStream(_cases(), PATCH, batch_size=3, seed=4, rank=2)
    resumed.load_state(saved)
    assert resumed.batches == 3
    assert all(_same(e, next(resumed)) for e in expected)
