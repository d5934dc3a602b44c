"""Distributed training (DDP under torchrun) on CPU with gloo and 2 processes, synthetic data.

- every method: after several steps, the parameters, the teachers and the method's buffers are identical on
  both ranks, although each rank drew different samples (so the gradients were all-reduced and the cross-rank
  statistics — A&D's difficulty weights, dual-contrast's prototypes and winner — agree);
- supervised: a 2-process run (1 patch per rank) takes the same steps as a 1-process run with the same global
  batch (2 patches), gradients and updates compared in float64. The comparison uses instance norm and one
  case drawn identically every time (whole-volume patch, no augmentation): BatchNorm statistics would be per rank (unless SyncBatchNorm, CUDA only) and the
  batch soft-Dice is not a mean over samples, so only identical samples make the two runs exactly comparable;
- a 2-process `semiseg train --gpus 2` run cancelled with SIGTERM writes its checkpoint and `--resume` continues
  it at the same iteration (each rank its own sample stream);
- a rank that stalls makes the others fail after --dist-timeout with a clear error, not hang.

This file is also the worker that torchrun starts (`python -m torch.distributed.run ... test_distributed.py`).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
ENGINE = HERE.parent / "SemiSegTogether"

# Small settings per method: n_filters 4 (the networks' minimum that keeps 32³ patches meaningful),
# A&D with 2 DDIM steps; dual-contrast is the heaviest, so every method runs only 3 iterations.
METHOD_OPTIONS = {
    "supervised": {"n_filters": 4},
    "mean-teacher": {"n_filters": 4},
    "ad": {"n_filters": 4, "sample_steps": 2},
    "versemi": {"n_filters": 4, "stage1_fraction": 0.34},  # stage 1 at step 0, stage 2 from step 1
    "dual-contrast": {"n_filters": 4},
}
ITERATIONS = 3


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ENGINE), env.get("PYTHONPATH", "")])
    env["OMP_NUM_THREADS"] = "1"
    env.pop("RANK", None)
    env.pop("WORLD_SIZE", None)
    return env


def _torchrun(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *args]
    return subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=timeout)


# ---------------------------------------------------------------------------------------------------------------
# The worker (runs inside torchrun)
# ---------------------------------------------------------------------------------------------------------------
def _config(data: Path, out: Path, method: str, **changes):
    from semiseg.train import TrainConfig
    base = TrainConfig(data=str(data), out=str(out), method=method, method_options=dict(METHOD_OPTIONS[method]),
                       iterations=ITERATIONS, batch_labeled=2, batch_unlabeled=1, patch=[32, 32, 32],
                       device="cpu", progress=False, val_every=ITERATIONS, amp=False)
    return replace(base, **changes)


def _worker_methods(data: Path, single: Path, work: Path) -> None:
    """Train every method for a few steps; each rank saves its whole method state."""
    from semiseg import distributed
    from semiseg.errors import ConfigError
    from semiseg.events import EventWriter
    from semiseg.train import _Trainer
    rank = int(os.environ["RANK"])
    for method in METHOD_OPTIONS:
        cfg = _config(data, work / f"{method}.semiseg", method, val_cases=1,  # validation under DDP too
                      events=str(work / f"{method}.events") if rank == 0 else None)
        trainer = _Trainer(cfg, EventWriter(cfg.events))
        init = {k: v.clone() for k, v in trainer.method.state_dict().items()}
        trainer.run()
        torch.save({"state": trainer.method.state_dict(), "init": init, "world_size": trainer.world_size,
                    "stream_rank": trainer.labeled_stream.rank, "stream": trainer.labeled_stream.state(),
                    "ddp": type(trainer.method.step_net).__name__},
                   work / f"{method}.rank{rank}.pt")
    # supervised, global batch 2 = 2 ranks × 1 patch, identical samples (see the module docstring)
    torch.save(_supervised_float64(single, work / "sup2.semiseg", batch_labeled=1), work / f"sup2.rank{rank}.pt")
    # --sync-bn on CPU is refused on every rank alike (SyncBatchNorm needs CUDA), not half-way into a step
    try:
        _Trainer(_config(data, work / "syncbn.semiseg", "supervised", sync_bn=True), EventWriter(None))
        (work / f"syncbn.rank{rank}").write_text("accepted", encoding="utf-8")
    except ConfigError as exc:
        (work / f"syncbn.rank{rank}").write_text(str(exc), encoding="utf-8")
    _worker_helpers(work, rank)
    distributed.cleanup()


def _supervised_float64(data: Path, out: Path, batch_labeled: int) -> dict:
    """Two supervised steps in float64; returns the initial and final state and each step's gradients.

    float64, because in float32 the two runs differ by rounding alone, amplified through the network: with
    the same samples, 2 × 1 patches all-reduced and one batch of 2 patches summed in another order give
    step-1 gradients 0.6 % apart and 2-step updates 4.5 % apart on an AVX2 CPU (in float64: 6e-9 and 6e-9).
    """
    from semiseg.events import EventWriter
    from semiseg.train import _Trainer
    cfg = _config(data, out, "supervised", batch_labeled=batch_labeled, iterations=2, augment="none",
                  fg_ratio=1.0, method_options={"n_filters": 4, "norm": "instance"})
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # the network is built in float64 (before DDP wraps it) ...
    try:
        torch.manual_seed(0)
        trainer = _Trainer(cfg, EventWriter(None))
        # ... and its float32 input patches are cast on the way in
        trainer.method.net.register_forward_pre_hook(lambda _, args: tuple(a.double() for a in args))
        names = {id(p): n for n, p in trainer.method.named_parameters()}
        grads: list[dict] = []
        trainer.optimisation.optimizer.register_step_pre_hook(lambda opt, *_: grads.append(
            {names[id(p)]: p.grad.clone() for g in opt.param_groups for p in g["params"] if p.grad is not None}))
        init = {k: v.clone() for k, v in trainer.method.state_dict().items()}
        trainer.run()
    finally:
        torch.set_default_dtype(default)
    return {"init": init, "final": trainer.method.state_dict(), "grads": grads}


def _worker_helpers(work: Path, rank: int) -> None:
    """The cross-rank helpers and the dual-contrast statistics on rank-specific tensors."""
    from semiseg import distributed
    from semiseg.methods import MethodContext, build_method
    from semiseg.methods.dual_contrast import prototype_contrast
    g = torch.Generator().manual_seed(100 + rank)
    out: dict = {}
    # variable-size gather, keeping the local gradient
    x = torch.randn(2 + rank, 3, generator=g, requires_grad=True)
    cat = distributed.all_gather_cat(x)
    cat.sum().backward()
    out["gather"], out["gather_grad"] = cat.detach(), x.grad.clone()
    out["mean"] = distributed.all_reduce_mean(torch.tensor([float(rank + 1)]))
    out["max"] = distributed.all_reduce_max(torch.tensor([rank == 1, False]))
    out["object"] = distributed.broadcast_object({"from": rank})
    # prototypes of the global batch: each rank's features, one prototype term
    feats = torch.randn(1, 4, 6, 6, 6, generator=g)
    target = torch.randint(0, 3, (1, 6, 6, 6), generator=g)
    ignore = torch.rand(1, 6, 6, 6, generator=g) > 0.6
    out["features"], out["target"], out["ignore"] = feats, target, ignore
    out["prototype"] = prototype_contrast(feats, target, ignore, target, 3, push=True)["prototype"]
    # the winner of dual-contrast: the same subnetwork on every rank, by the global mean Dice loss
    torch.manual_seed(0)
    m = build_method("dual-contrast", MethodContext(n_classes=2, options={"n_filters": 4}))
    winners = []
    for trial in range(4):
        torch.manual_seed(1000 * trial + rank)
        lab = {"image": torch.randn(1, 1, 32, 32, 32), "label": (torch.rand(1, 32, 32, 32) > 0.7).long()}
        with torch.no_grad():
            t = m.loss_terms(lab, None, 0)
        winners.append([float(t["winner"]), float(t["dice_vnet"]), float(t["dice_resnet"])])
    out["winners"] = torch.tensor(winners)
    torch.save(out, work / f"helpers.rank{rank}.pt")


def _worker_stall(data: Path, work: Path) -> None:
    """Rank 1 stalls before its second step; rank 0 must fail after --dist-timeout with a clear error."""
    from semiseg import train as train_mod
    rank = int(os.environ["RANK"])
    original = train_mod._Trainer._step

    def step(self, it):
        if rank == 1 and it == 1:
            # stuck (as in a hung data read) until torchrun stops it after rank 0's failure
            t = time.time()
            while not self._cancel and time.time() - t < 120:
                time.sleep(0.05)
        return original(self, it)

    train_mod._Trainer._step = step
    cfg = _config(data, work / "stall.semiseg", "supervised", iterations=4, dist_timeout=4.0,
                  events=str(work / "stall.events") if rank == 0 else None)
    t0 = time.time()
    try:
        train_mod.train(cfg)
    except Exception as exc:  # noqa: BLE001 — written for the test to read
        (work / f"stall.rank{rank}").write_text(json.dumps({"type": type(exc).__name__, "message": str(exc),
                                                            "seconds": time.time() - t0}), encoding="utf-8")
        raise


if __name__ == "__main__":
    torch.set_num_threads(1)
    sys.path.insert(0, str(ENGINE))
    mode = sys.argv[1]
    if mode == "methods":
        _worker_methods(Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]))
    elif mode == "stall":
        _worker_stall(Path(sys.argv[2]), Path(sys.argv[3]))
    sys.exit(0)


# ---------------------------------------------------------------------------------------------------------------
# The tests
# ---------------------------------------------------------------------------------------------------------------
import pytest  # noqa: E402

from semiseg.synthetic import make_dataset  # noqa: E402


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp-data")
    # 4 labeled (3 train + 1 validation), 2 unlabeled, 2 domains (A&D records the domains it sees)
    return make_dataset(root / "ds", n_labeled=4, n_unlabeled=2, n_test=0, shape=(32, 32, 32), seed=0,
                        labeled_domains=("scanner-a", "scanner-b"))


@pytest.fixture(scope="module")
def single_case(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("ddp-one") / "ds", n_labeled=1, n_unlabeled=0, n_test=0,
                        shape=(32, 32, 32), seed=1)


@pytest.fixture(scope="module")
def method_runs(data, single_case, tmp_path_factory):
    work = tmp_path_factory.mktemp("ddp-methods")
    proc = _torchrun(str(Path(__file__).resolve()), "methods", str(data), str(single_case), str(work))
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-6000:]
    return work


def _load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.mark.parametrize("method", list(METHOD_OPTIONS))
def test_ranks_stay_identical(method_runs, method):
    r0, r1 = (_load(method_runs / f"{method}.rank{r}.pt") for r in (0, 1))
    assert r0["world_size"] == r1["world_size"] == 2
    assert r0["ddp"] == r1["ddp"] == "DistributedDataParallel"  # the method's passes went through DDP
    # each rank drew its own samples (per-rank seeds), yet ...
    assert (r0["stream_rank"], r1["stream_rank"]) == (0, 1)
    assert r0["stream"]["state"] != r1["stream"]["state"]
    # ... every parameter, teacher and statistic is the same on both ranks after the steps
    s0, s1 = r0["state"], r1["state"]
    assert s0.keys() == s1.keys()
    for key in s0:
        assert torch.equal(s0[key], s1[key]), f"{method}: {key} differs between ranks"
    # and training moved the weights (the comparison is not between two untouched initialisations)
    moved = [k for k, v in r0["init"].items() if v.is_floating_point() and not torch.equal(v, s0[k])]
    assert len(moved) > len(s0) // 4, f"{method}: hardly any weight changed"
    # rank 0 wrote the events (validation at the end, a checkpoint, done) and the model package
    events = [json.loads(line) for line in (method_runs / f"{method}.events").read_text(encoding="utf-8").splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds[0] == "start" and events[0]["world_size"] == 2 and kinds[-1] == "done"
    assert "validation" in kinds and "checkpoint" in kinds
    assert (method_runs / f"{method}.semiseg" / "model.json").is_file()


def test_method_statistics_are_global(method_runs):
    # A&D recorded the domains both ranks' batches carried; its difficulty weights moved away from the start
    s0 = _load(method_runs / "ad.rank0.pt")["state"]
    assert bool(s0["seen_domains"][0].any())
    assert not torch.equal(s0["difficulty.weights"], torch.full_like(s0["difficulty.weights"],
                                                                    float(s0["difficulty.weights"].numel())))


def _relative_difference(a: dict, b: dict) -> float:
    diff = sum(float(((a[k] - b[k]) ** 2).sum()) for k in a)
    norm = sum(float((a[k] ** 2).sum()) for k in a)
    assert norm > 0
    return (diff / norm) ** 0.5


def test_supervised_two_processes_match_one(method_runs, single_case, tmp_path):
    """What DDP guarantees: with the same global batch, each step's gradient is the one-process gradient
    (averaged, not summed, over ranks), so the optimiser takes the same steps. Measured in float64 (see
    `_supervised_float64`): a sum instead of the average, or a learning rate scaled by the world size, is off
    by ~100 %; float64 rounding is ~1e-8."""
    one = _supervised_float64(single_case, tmp_path / "sup1.semiseg", batch_labeled=2)
    two = _load(method_runs / "sup2.rank0.pt")
    for key in one["init"]:
        assert torch.equal(one["init"][key], two["init"][key]), f"{key}: different initialisation"
    assert len(one["grads"]) == len(two["grads"]) == 2 and one["grads"][0].keys() == two["grads"][0].keys()
    # each step's gradient: step 1 from the same weights; step 2 from weights that step 1 moved alike
    for step in range(2):
        assert _relative_difference(one["grads"][step], two["grads"][step]) < 1e-5, f"step {step + 1}"
    # the updates: same learning rate, momentum and weight decay on both sides
    floats = [k for k, v in one["init"].items() if v.is_floating_point()]
    update = {name: {k: run["final"][k] - run["init"][k] for k in floats} for name, run in (("one", one), ("two", two))}
    assert _relative_difference(update["one"], update["two"]) < 1e-5


def test_helpers_and_global_prototypes(method_runs):
    from semiseg.methods.dual_contrast import prototype_contrast
    r0, r1 = (_load(method_runs / f"helpers.rank{r}.pt") for r in (0, 1))
    assert r0["gather"].shape == (5, 3) and torch.equal(r0["gather"], r1["gather"])
    assert torch.equal(r0["gather_grad"], torch.ones(2, 3)) and torch.equal(r1["gather_grad"], torch.ones(3, 3))
    assert float(r0["mean"]) == float(r1["mean"]) == 1.5
    assert r0["max"].tolist() == r1["max"].tolist() == [True, False]
    assert r0["object"] == r1["object"] == {"from": 0}
    # the prototype term on each rank is the one of the two ranks' voxels together (one process, one batch)
    joint = prototype_contrast(torch.cat([r0["features"], r1["features"]]), torch.cat([r0["target"], r1["target"]]),
                               torch.cat([r0["ignore"], r1["ignore"]]), torch.cat([r0["target"], r1["target"]]), 3,
                               push=True)["prototype"]
    alone = prototype_contrast(r0["features"], r0["target"], r0["ignore"], r0["target"], 3, push=True)["prototype"]
    assert torch.allclose(r0["prototype"], joint, atol=1e-6) and torch.allclose(r1["prototype"], joint, atol=1e-6)
    assert not torch.allclose(alone, joint, atol=1e-4)  # the local prototypes would differ
    # dual-contrast's winner: the same on both ranks, chosen by the mean of the two ranks' Dice losses
    w0, w1 = r0["winners"], r1["winners"]
    assert torch.equal(w0[:, 0], w1[:, 0])
    mean_v, mean_r = (w0[:, 1] + w1[:, 1]) / 2, (w0[:, 2] + w1[:, 2]) / 2
    assert w0[:, 0].tolist() == [0.0 if float(v) < float(r) else 1.0 for v, r in zip(mean_v, mean_r)]


def test_sync_bn_refused_on_cpu(method_runs):
    for r in (0, 1):
        text = (method_runs / f"syncbn.rank{r}").read_text(encoding="utf-8")
        assert "SyncBatchNorm runs on CUDA only" in text, text


def _child_pids(pid: int) -> list[int]:
    """The processes whose parent is `pid` (from /proc/*/stat; the command name may hold spaces and brackets)."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text(encoding="utf-8").rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # the process ended meanwhile
        if parent == pid:
            children.append(int(stat.parent.name))
    return children


def _status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text(encoding="utf-8").splitlines()
    return {key: value.strip() for key, _, value in (line.partition(":") for line in lines)}


def _stopped(pid: int) -> bool:
    return _status(pid)["State"].startswith("T")


def _sigterm_pending(pid: int) -> bool:
    status = _status(pid)
    return any(int(status[key], 16) & (1 << (signal.SIGTERM - 1)) for key in ("SigPnd", "ShdPnd"))


def _wait_for(condition, pids: list[int], what: str) -> None:
    deadline = time.time() + 20  # torchrun sends SIGKILL 30 s after SIGTERM
    while not all(condition(pid) for pid in pids):
        assert time.time() < deadline, f"the ranks {pids}: not {what} within 20 s"
        time.sleep(0.02)


def _cancel_while_ranks_paused(launcher: subprocess.Popen) -> None:
    """SIGTERM to `semiseg train --gpus 2` (what the Slicer trainer's Cancel does), delivered while its ranks are
    stopped, so that they cannot finish all iterations while the signal travels launcher → torchrun → ranks: a
    40-iteration run reached its export before the signal once, on a loaded machine."""
    (torchrun,) = _child_pids(launcher.pid)
    ranks = _child_pids(torchrun)
    assert len(ranks) == 2, ranks
    for pid in ranks:
        os.kill(pid, signal.SIGSTOP)
    try:
        # SIGSTOP takes effect asynchronously: a SIGTERM that came first would be handled, not left pending.
        _wait_for(_stopped, ranks, "stopped")
        launcher.send_signal(signal.SIGTERM)
        _wait_for(_sigterm_pending, ranks, "holding the SIGTERM that torchrun passes on")
    finally:
        for pid in ranks:
            os.kill(pid, signal.SIGCONT)


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="pauses the ranks through /proc (Linux)")
def test_cancel_and_resume_two_processes(data, tmp_path):
    out, work, events = tmp_path / "m.semiseg", tmp_path / "m.work", tmp_path / "events.jsonl"
    args = [sys.executable, "-m", "semiseg", "train", "--gpus", "2", "--data", str(data), "--method", "mean-teacher",
            "--out", str(out), "--workdir", str(work), "--events", str(events), "--iterations", "40",
            "--patch", "32,32,32", "--device", "cpu", "--batch-labeled", "1", "--batch-unlabeled", "1",
            "--val-every", "1000", "--quiet", "--option", "n_filters=4", "--dist-timeout", "60"]
    proc = subprocess.Popen(args, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if events.exists() and any('"iteration"' in line and json.loads(line).get("iteration", 0) >= 2
                                   for line in events.read_text(encoding="utf-8").splitlines() if line.strip()):
            break
        time.sleep(0.2)
    assert proc.poll() is None, "the run ended before it could be cancelled: " + proc.communicate()[1][-3000:]
    _cancel_while_ranks_paused(proc)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode != 0
    first = [json.loads(line) for line in events.read_text(encoding="utf-8").splitlines()]
    assert first[-1]["event"] == "error" and "cancelled at iteration" in first[-1]["message"], first[-1]
    state = _load(work / "last.pt")
    stopped = int(state["iteration"])
    assert 2 <= stopped < 40 and state["world_size"] == 2
    # both ranks' streams are in the checkpoint, each at the same number of batches, with different positions
    ranks = state["ranks"]
    assert [r["streams"]["labeled"]["rank"] for r in ranks] == [0, 1]
    assert ranks[0]["streams"]["labeled"]["batches"] == ranks[1]["streams"]["labeled"]["batches"] == stopped
    assert ranks[0]["streams"]["labeled"]["state"] != ranks[1]["streams"]["labeled"]["state"]
    assert not out.exists()

    resumed = subprocess.run(args + ["--resume"], env=_env(), capture_output=True, text=True, timeout=240)
    assert resumed.returncode == 0, resumed.stderr[-5000:]
    lines = [json.loads(line) for line in events.read_text(encoding="utf-8").splitlines()]
    starts = [e for e in lines if e["event"] == "start"]
    assert len(starts) == 2 and starts[1]["start_iteration"] == stopped and starts[1]["resumed"]
    after = [e["iteration"] for e in lines[lines.index(starts[1]):] if e["event"] == "iteration"]
    assert after[0] == stopped + 1 and after[-1] == 40
    assert lines[-1]["event"] == "done"
    assert int(_load(work / "last.pt")["iteration"]) == 40
    assert (out / "model.json").is_file()
    assert "wrote" in resumed.stdout and resumed.stdout.count("wrote") == 1  # rank 0 reports, once

    # a different process count cannot resume it
    one_process = args[:4] + args[6:] + ["--resume", "--overwrite"]
    assert "--gpus" not in one_process
    single = subprocess.run(one_process, env=_env(), capture_output=True, text=True, timeout=300)
    assert single.returncode == 2 and "2 process(es)" in single.stderr, single.stderr[-2000:]


def test_stalled_rank_fails_with_clear_error(data, tmp_path):
    proc = _torchrun(str(Path(__file__).resolve()), "stall", str(data), str(tmp_path), timeout=240)
    assert proc.returncode != 0
    report = json.loads((tmp_path / "stall.rank0").read_text(encoding="utf-8"))
    assert report["type"] == "DistributedError", report
    assert "--dist-timeout 4 s" in report["message"] and "rank 0 of 2" in report["message"]
    # timed inside the worker (process start-up on a loaded machine is not the point): rank 1 stalls for 120 s,
    # so a rank 0 that waited for it instead of timing out would report at least that
    assert report["seconds"] < 100, report
    events = [json.loads(line) for line in (tmp_path / "stall.events").read_text(encoding="utf-8").splitlines()]
    assert events[-1]["event"] == "error" and "did not answer" in events[-1]["message"]
