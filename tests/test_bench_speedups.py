"""benchmarks/bench_speedups.py: activation checkpointing changes no number, the pre-rendered store and the PNG
shards give back exactly the images and captions of the on-the-fly dataset, and a quick run writes its results
file (no timing is checked)."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import bench_speedups as bench  # noqa: E402


def test_checkpointed_gives_the_same_loss_and_gradients():
    tok = bench.tokenizer()
    plain = bench.build("tiny", tok.vocab_size)
    wrapped = bench.checkpointed(copy.deepcopy(plain))
    assert bench.checkpointed(wrapped) is wrapped  # wrapping twice changes nothing
    blocks = [b for tower in (wrapped.vision, wrapped.text) for b in tower.transformer.blocks]
    assert blocks and all(getattr(b, "_checkpointed", False) for b in blocks)
    data = bench.fixed_batch(tok, bench.image_size("tiny"), 8)
    losses, mlp_calls = [], []
    for model in (plain, wrapped):
        calls, fc1 = [], model.vision.transformer.blocks[0].mlp.fc1
        fc1.forward = lambda x, _plain=fc1.forward: (calls.append(1), _plain(x))[1]  # (hooks skip the recompute)
        loss = model(*data).loss
        loss.backward()
        del fc1.forward
        losses.append(loss)
        mlp_calls.append(len(calls))
    assert mlp_calls == [1, 2], "a checkpointed block runs its forward again in backward"
    torch.testing.assert_close(losses[1], losses[0], rtol=0, atol=1e-6)
    grads = dict(plain.named_parameters())
    for name, p in wrapped.named_parameters():
        assert p.grad is not None, name
        torch.testing.assert_close(p.grad, grads[name].grad, rtol=0, atol=1e-6, msg=name)


def test_stores_round_trip_the_dataset(tmp_path):
    tok = bench.tokenizer()
    ds, _ = bench.chapter02_data(tok, 12)
    items = [ds[i] for i in range(12)]
    store = bench.prerender(items, tmp_path / "npy")
    assert len(store) == 12 and store.images.dtype.name == "uint8" and store.images.shape == (12, 3, 48, 48)
    again = bench.PreRendered(tmp_path / "npy")
    for i, it in enumerate(items):
        exact = bench.to_uint8(it["image"])
        assert torch.equal(torch.from_numpy(again.images[i].copy()), exact)
        assert torch.equal(again[i]["image"], exact.float() / 255)
        assert again[i]["caption"] == it["caption"]
        assert (again[i]["image"] - it["image"]).abs().max() <= 0.5 / 255 + 1e-6
    assert bench.read_all(again, 12, 5) == 12

    from vlm_primer.training.shards import shard_loader, write_shards

    paths = write_shards(({"image": it["image"], "caption": it["caption"]} for it in items), tmp_path / "wds",
                         maxcount=5)
    got = [b for b in shard_loader(paths, 4, shuffle_buffer=0, shuffle_shards=False, partial=True)]
    images = torch.cat([b["image"] for b in got])
    assert [c for b in got for c in b["caption"]] == again.captions
    assert torch.equal(images, torch.stack([again[i]["image"] for i in range(12)]))
    assert bench.shard_reader(paths, 4)() == 12


def test_quick_run_writes_its_results(tmp_path):
    threads = torch.get_num_threads()
    out = tmp_path / "speedups.json"
    try:
        bench.main(["--quick", "--rows", "autocast", "checkpoint", "workers", "store", "--batch", "4",
                    "--repeats", "1", "--warmup", "0", "--loader-batches", "2", "--store-items", "16",
                    "--threads", "1", "--out", str(out)])
    finally:
        torch.set_num_threads(threads)
    result = json.loads(out.read_text())
    assert {"command", "machine", "date", "torch", "settings", "rows"} <= set(result)
    assert "--quick" in result["command"] and "get_num_threads() = 1" in result["machine"]
    names = [r["name"] for r in result["rows"]]
    assert names == ["bf16 autocast", "activation checkpointing", "data-loader workers",
                     "pre-rendered store vs on-the-fly render", "pre-rendered store vs PNG shards"]
    for r in result["rows"]:
        assert r["baseline_value"] > 0 and r["variant_value"] > 0 and r["ratio"] > 0, r
    ckpt = result["rows"][1]
    assert ckpt["peak_mib_baseline"] > 0 and ckpt["peak_mib_variant"] > 0
    assert set(result["rows"][3]["bytes_per_item"]) == {"pre-rendered uint8 (npy + captions)", "PNG shards (tar)",
                                                        "PNG shards (PNG payload only)"}
