"""Harvesting under torchrun: 2 gloo processes write one store equal to a single-process harvest."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch

import tiny
from mechscope.dictionary.store import DiskStore
from mechscope.pipeline.harvest import HarvestConfig, run_harvest

HOOKS = ("blocks.0.hook_resid_post", "blocks.1.hook_mlp_out")


def _config(model_dir, out, n_tokens):
    return HarvestConfig(
        model=str(model_dir), hooks=HOOKS, ctx_len=16, n_tokens=n_tokens, batch_size=3, shard_tokens=50,
        out=out, device="cpu", outlier_factor=4.0, mask_special=True, progress_bar=False,
    )  # fmt: skip


def _torchrun(tmp_path, model_dir, out, n_tokens):
    script = tmp_path / "worker.py"
    script.write_text(
        textwrap.dedent(f"""
        import torch.distributed as dist
        from pathlib import Path
        from mechscope.pipeline.harvest import HarvestConfig, run_harvest
        cfg = HarvestConfig(model={str(model_dir)!r}, hooks={HOOKS!r}, ctx_len=16, n_tokens={n_tokens},
                            batch_size=3, shard_tokens=50, out=Path({str(out)!r}), device="cpu",
                            outlier_factor=4.0, mask_special=True, progress_bar=False)
        store = run_harvest(cfg)
        assert not dist.is_initialized()  # run_harvest joined the group itself, and left it
        print("rank done", store.n_tokens)
    """)
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "0",
           "--rdzv_backend", "c10d", "--rdzv_endpoint", "localhost:0", str(script)]  # fmt: skip
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stdout.count("rank done") == 2


def _ordered(store):
    t = store.tensors(meta=True)
    order = torch.argsort(t["__context__"] * 1000 + t["__position__"].long())
    return {k: v[order] for k, v in t.items()}


@pytest.mark.slow
def test_two_process_harvest_equals_single_process(tmp_path):
    model_dir = tiny.build("llama-gqa", tmp_path / "m")
    single = run_harvest(_config(model_dir, tmp_path / "single", 16 * 21))
    _torchrun(tmp_path, model_dir, tmp_path / "multi", 16 * 21)
    multi = DiskStore(tmp_path / "multi")
    assert multi.manifest["segments"] == [{"contexts": [0, 21], "world": 2}]
    assert {s["rank"] for s in multi.manifest["shards"]} == {0, 1}
    for s in multi.manifest["shards"]:  # each rank wrote only its own contexts
        ctx = multi.shard(multi.manifest["shards"].index(s), meta=True)["__context__"]
        assert bool((ctx % 2 == s["rank"]).all())
    assert multi.n_tokens == single.n_tokens and single.n_tokens < 21 * 16
    a, b = _ordered(single), _ordered(multi)
    assert torch.equal(a["__context__"], b["__context__"]) and torch.equal(
        a["__position__"], b["__position__"]
    )
    for h in HOOKS:
        torch.testing.assert_close(a[h], b[h], rtol=0, atol=1e-6)
    # appending under torchrun continues the same store
    _torchrun(tmp_path, model_dir, tmp_path / "multi", 16 * 30)
    more = DiskStore(tmp_path / "multi")
    assert more.manifest["contexts_done"] == 30 and len(more.manifest["segments"]) == 2
    full = _ordered(run_harvest(_config(model_dir, tmp_path / "single", 16 * 30)))
    got = _ordered(more)
    assert torch.equal(full["__token__"], got["__token__"])
    torch.testing.assert_close(full[HOOKS[1]], got[HOOKS[1]], rtol=0, atol=1e-6)
