"""WebDataset shards written from Shapes World: exact round trip, rank split, epochs, resume, CLI."""

import os
import sys
import tarfile
from pathlib import Path

import pytest
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "helpers"))
from toy_training import ToyImageModel, caption_collate  # noqa: E402

from vlm_primer.train import main as train_main  # noqa: E402
from vlm_primer.training import TrainConfig, Trainer, shard_loader, write_shards  # noqa: E402
from vlm_primer.world import ShapesCaptionDataset  # noqa: E402



@pytest.fixture(scope="module")
def shapes():
    ds = ShapesCaptionDataset(size=10, seed=3)
    return [ds[i] for i in range(len(ds))]


@pytest.fixture(scope="module")
def shards(shapes, tmp_path_factory):
    out = tmp_path_factory.mktemp("shards")
    samples = [{"image": s["image"], "caption": s["caption"], "meta": {"index": s["index"]}} for s in shapes]
    return write_shards(samples, out, maxcount=4)


def test_round_trip_images_and_captions(shapes, shards):
    assert [Path(p).name for p in shards] == ["shard-000000.tar", "shard-000001.tar", "shard-000002.tar"]
    with tarfile.open(shards[0]) as tar:  # the img2dataset / open_clip layout
        assert sorted(tar.getnames())[:3] == ["000000000.json", "000000000.png", "000000000.txt"]
    loader = shard_loader(shards, batch_size=3, shuffle_buffer=0, shuffle_shards=False, partial=True)
    batches = list(loader)
    assert [len(b["caption"]) for b in batches] == [3, 3, 3, 1]  # partial batches kept when asked
    seen = 0
    for b in batches:
        assert b["image"].shape[1:] == (3, 64, 64) and b["image"].dtype == torch.float32
        for img, cap, key, meta in zip(b["image"], b["caption"], b["key"], b["meta"]):
            orig = shapes[int(key)]
            assert meta == {"index": orig["index"]} and cap == orig["caption"]
            assert torch.equal(img, (orig["image"] * 255).round() / 255)  # lossless up to uint8
            assert (img - orig["image"]).abs().max() <= 0.5 / 255 + 1e-6
            seen += 1
    assert seen == 10
    # full batches only by default
    assert [len(b["caption"]) for b in shard_loader(shards, 3, shuffle_buffer=0, shuffle_shards=False)] == [3, 3, 3]


def test_rank_split_and_epoch_order(shards):
    def keys(loader):
        return [k for b in loader for k in b["key"]]

    per_rank = [keys(shard_loader(shards, 1, shuffle_buffer=4, seed=5, rank=r, world_size=2)) for r in range(2)]
    assert not set(per_rank[0]) & set(per_rank[1]) and len(per_rank[0] + per_rank[1]) == 10
    loader = shard_loader(shards, 1, shuffle_buffer=4, seed=5)
    e0 = keys(loader)
    assert keys(loader) == e0  # the same epoch gives the same order
    loader.set_epoch(1)
    e1 = keys(loader)
    assert sorted(e1) == sorted(e0) and e1 != e0
    workers = shard_loader(shards, 1, shuffle_buffer=4, seed=5, num_workers=2)  # shards split over workers
    k = keys(workers)
    assert sorted(k) == sorted(e0) and keys(workers) == k
    with pytest.raises(ValueError, match="cannot be split over 4"):
        shard_loader(shards, 1, world_size=4, rank=0)


def test_trainer_resumes_shard_loader_exactly(shards, tmp_path):
    def run(steps, ckpt=None, resume=False, stop=None):
        torch.manual_seed(0)
        model = ToyImageModel()
        data = shard_loader(shards, 2, caption_collate, shuffle_buffer=4, seed=1)
        config = TrainConfig(max_steps=steps, batch_size=2, lr=1e-2, warmup_steps=1, log_every=1, progress=False,
                             live_plot=False, ckpt_dir=ckpt, resume=resume)
        t = Trainer(model, data, config)
        t.fit(steps=stop)
        return model.state_dict(), t

    full, t = run(7)
    assert t.epoch == 1  # 5 batches per epoch: step 7 is in the second epoch
    run(7, str(tmp_path / "ck"), stop=3)
    resumed, t = run(7, str(tmp_path / "ck"), resume=True)
    assert t.step == 7 and all(torch.equal(full[k], resumed[k]) for k in full)


def test_bad_inputs(shards, tmp_path):
    with pytest.raises(ValueError, match=r"shape \(3, H, W\)"):
        write_shards([{"image": torch.rand(1, 8, 8), "caption": "x"}], tmp_path / "a")
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        write_shards([{"image": torch.rand(3, 8, 8) * 2, "caption": "x"}], tmp_path / "b")
    with pytest.raises(TypeError, match="caption"):
        write_shards([{"image": torch.rand(3, 8, 8), "caption": 3}], tmp_path / "c")
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        write_shards([{"image": torch.rand(3, 8, 8), "caption": "x"}], Path(shards[0]).parent)
    with pytest.raises(FileNotFoundError, match="not found"):
        shard_loader(str(tmp_path / "missing-{000..002}.tar"), 2)
    # a shard without .txt (image-only, what MAE reads): the caption is None, and a text-image collate refuses it
    src = tarfile.open(shards[0])
    bare = tmp_path / "bare-000000.tar"
    with tarfile.open(bare, "w") as out:
        for m in src.getmembers():
            if m.name.endswith(".png"):
                out.addfile(m, src.extractfile(m))
    batch = next(iter(shard_loader(str(bare), 2, shuffle_shards=False)))
    assert batch["caption"] == [None, None]
    from vlm_primer.contrastive.recipes import pair_collate
    from vlm_primer.text import Tokenizer

    collate = pair_collate(Tokenizer.load(), 16, 48)
    with pytest.raises(ValueError, match="no 'caption' text \\(a shard sample needs a .txt\\)"):
        next(iter(shard_loader(str(bare), 2, collate, shuffle_shards=False)))


def test_cli_trains_on_shards_resumes_and_refuses_to_clobber(shards, tmp_path, capsys):
    pattern = str(Path(shards[0]).parent / "shard-{000000..000002}.tar")
    args = ["toy_mlp", "--recipe-module", "toy_training", "--shards", pattern, "--batch-size", "2",
            "--ckpt-dir", str(tmp_path / "run"), "--no-progress"]
    history = train_main(args + ["--steps", "3"])
    assert history[-1]["step"] == 3 and "step=3" in capsys.readouterr().out
    assert (tmp_path / "run" / "step_00000003" / "model.safetensors").is_file()
    with pytest.raises(SystemExit):  # no --resume: refuse, a usage error
        train_main(args + ["--steps", "5"])
    assert "already holds 1 checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "run" / "step_00000005").exists()
    history = train_main(args + ["--steps", "5", "--resume"])
    assert [h["step"] for h in history] == [1, 2, 3, 4, 5]


def test_each_worker_drops_its_own_partial_batch(shards):
    """Batches are made in the workers (collation in parallel), so each worker drops its trailing partial batch;
    ``partial=True`` keeps every sample."""
    sizes = {path: sum(1 for _ in shard_loader([path], 1, shuffle_buffer=0)) for path in shards}
    loader = shard_loader(shards, 5, shuffle_buffer=4, seed=5, num_workers=2)
    per_worker = [sum(sizes[p] for p in loader.shards(0)[w::2]) for w in range(2)]
    assert per_worker == [6, 4]  # one process would keep 10 of 10 samples in batches of 5; the two workers keep 5
    assert sum(len(b["key"]) for b in loader) == sum(n - n % 5 for n in per_worker) == 5
    kept = shard_loader(shards, 5, shuffle_buffer=4, seed=5, num_workers=2, partial=True)
    assert sum(len(b["key"]) for b in kept) == sum(sizes.values()) == 10
