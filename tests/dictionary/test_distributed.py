"""Distributed training under torchrun (gloo, CPU, 2 processes) against a single process.

Run as a test it launches ``torchrun --nproc_per_node 2`` on this very file; run as a script
(``__main__``) it is the worker: it trains every scenario and writes each rank's final
state, so the test can check that ranks agree with each other and with one process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from train_stubs import ListSource, toy_data, toy_sae  # noqa: E402

from mechscope.dictionary import DictionaryConfig  # noqa: E402
from mechscope.dictionary.train import TrainConfig, train  # noqa: E402

BATCH = 64  # global batch; each of the 2 ranks gets 32 rows (rows r::2)


def _tensors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(11)
    return {"a": toy_data(n=512, seed=3), "b": toy_data(n=512, seed=4) @ torch.randn(8, 8, generator=g)}


def _dicts(scenario: str) -> list:
    if scenario == "ddp-relu-f64":
        return [toy_sae(seed=2, hook="a", dtype="float64")]
    if scenario == "ddp-relu-f32":
        return [toy_sae(seed=2, hook="a")]
    if scenario.startswith(("ddp-topk", "ddp-batchtopk")):
        arch = scenario.split("-")[1]
        dtype = "float64" if scenario.endswith("f64") else "float32"
        return [
            DictionaryConfig(architecture=arch, d_in=8, d_sae=32, k=3, hook_name="a", aux_k=4, dtype=dtype)
        ]
    if scenario == "per-dictionary":
        return [toy_sae(seed=1, hook="a"), toy_sae(seed=2, hook="b", d_sae=12),
                DictionaryConfig(architecture="topk", d_in=8, d_sae=24, k=2, hook_name="b")]  # fmt: skip
    raise ValueError(scenario)


SCENARIOS = (
    "ddp-relu-f64",
    "ddp-relu-f32",
    "ddp-topk",
    "ddp-topk-noaux-f64",
    "ddp-batchtopk",
    "per-dictionary",
)


def _config(out: Path, scenario: str) -> TrainConfig:
    return TrainConfig(
        lr=1e-2, batch_size=BATCH, total_tokens=BATCH * 16, output_dir=out / scenario, progress=False,
        checkpoint_every=5, log_every=4, lr_warmup_steps=2, sparsity_coefficient=0.1, sparsity_warmup_steps=3,
        init_batches=2, dead_window_tokens=10**9 if "noaux" in scenario else 3 * BATCH,
        distributed="per_dictionary" if scenario == "per-dictionary" else "ddp",
    )  # fmt: skip


def _run(out: Path, scenario: str) -> dict[str, torch.Tensor]:
    """Train one scenario; one intra-op thread like each worker, so CPU kernels reduce in the same order."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        res = train(_dicts(scenario), ListSource(_tensors()), _config(out, scenario))
    finally:
        torch.set_num_threads(threads)
    return {
        f"{n}.{k}": v.detach().clone() for n, d in res.dictionaries.items() for k, v in d.state_dict().items()
    }


def _worker(out: Path) -> None:
    torch.distributed.init_process_group("gloo")
    rank = torch.distributed.get_rank()
    from safetensors.torch import save_file

    for scenario in SCENARIOS:
        save_file(_run(out, scenario), str(out / f"{scenario}.rank{rank}.safetensors"))
    torch.distributed.destroy_process_group()


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ddp")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE.parents[1] / "src")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           __file__, "--worker", str(out)]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return out


def _load(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


def _max_rel_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max() / (b[k].abs().max() + 1e-12)) for k in a)


@pytest.mark.parametrize("scenario", ["ddp-relu-f64", "ddp-relu-f32", "ddp-topk", "ddp-batchtopk"])
def test_ddp_ranks_hold_identical_weights(two_ranks, scenario):
    r0 = _load(two_ranks / f"{scenario}.rank0.safetensors")
    r1 = _load(two_ranks / f"{scenario}.rank1.safetensors")
    for k in r0:
        assert torch.equal(r0[k], r1[k]), k  # BatchTopK's threshold included


@pytest.mark.parametrize(
    ("scenario", "tol"),
    [
        # fp64: only the summation order differs (a mean over 64 rows against the average of
        # two means over 32); measured 2e-15 after 16 Adam steps
        ("ddp-relu-f64", 1e-12),
        # fp32: the same rounding differences (about 1e-7 per step); measured 4e-7
        ("ddp-relu-f32", 1e-5),
        # TopK without dead latents (AuxK off): fp64, measured 4e-16
        ("ddp-topk-noaux-f64", 1e-12),
        # TopK with AuxK on (latents die after 3 steps): AuxK divides by the variance of the
        # residual over the LOCAL batch, so the ranks' aux gradients are not the global one;
        # measured 5e-4 (the same in fp64, so it is this, not rounding)
        ("ddp-topk", 2e-3),
    ],
)
def test_ddp_matches_single_process_on_the_same_global_batch(two_ranks, tmp_path, scenario, tol):
    single = _run(tmp_path, scenario)
    ddp = _load(two_ranks / f"{scenario}.rank0.safetensors")
    diff = _max_rel_diff(ddp, single)
    assert diff < tol, (scenario, diff)
    # rank 0 wrote the saved dictionaries, the history and the summary; rank 1 wrote nothing of its own
    out = two_ranks / scenario
    summary = json.loads((out / "train.json").read_text())
    assert summary["world"] == 2 and summary["steps"] == 16
    assert not list(out.glob("*rank1*"))


def test_ddp_dead_tracking_is_global(two_ranks, tmp_path):
    # the dead fraction logged under DDP equals the single-process one (fired masks all-reduced)
    _run(tmp_path, "ddp-topk")
    lines = lambda p: [json.loads(s) for s in (p / "ddp-topk" / "metrics.jsonl").read_text().splitlines()]  # noqa: E731
    ddp, single = lines(two_ranks), lines(tmp_path)
    assert [r["dead_fraction"] for r in ddp] == [r["dead_fraction"] for r in single]
    assert [r["l0"] for r in ddp] == pytest.approx([r["l0"] for r in single])
    assert [r["fvu"] for r in ddp] == pytest.approx([r["fvu"] for r in single], rel=1e-3)


def test_one_dictionary_per_rank_equals_single_process(two_ranks, tmp_path):
    single = _run(tmp_path, "per-dictionary")
    r0 = _load(two_ranks / "per-dictionary.rank0.safetensors")
    r1 = _load(two_ranks / "per-dictionary.rank1.safetensors")
    assert {k.split(".")[0] for k in r0} == {"0-relu-a", "2-topk-b"} and {k.split(".")[0] for k in r1} == {
        "1-relu-b"
    }
    merged = {**r0, **r1}
    assert merged.keys() == single.keys()
    for k in single:
        assert torch.equal(merged[k], single[k]), k
    out = two_ranks / "per-dictionary"
    assert {p.name for p in (out / "dictionaries").iterdir()} == {"0-relu-a", "1-relu-b", "2-topk-b"}
    assert (out / "metrics-rank1.jsonl").exists() and (out / "checkpoints" / "rank-1").is_dir()


if __name__ == "__main__" and "--worker" in sys.argv:
    _worker(Path(sys.argv[sys.argv.index("--worker") + 1]))
