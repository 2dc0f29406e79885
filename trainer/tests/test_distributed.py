"""Two processes under torchrun (gloo on CPU): gathered negatives carry gradients, and DDP keeps
every rank's weights identical, both in a focused worker and in the real `retrieval` command."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent


def torchrun(*args, cwd=HERE):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # --standalone: a local rendezvous on a free port, so parallel runs do not collide.
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *map(str, args)]
    # A new session lets a timeout kill the workers with torchrun.
    p = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd, env=env, start_new_session=True
    )
    try:
        stdout, stderr = p.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        stdout, stderr = p.communicate()
        raise AssertionError(f"torchrun timed out:\n{stdout[-3000:]}\n{stderr[-5000:]}") from None
    r = subprocess.CompletedProcess(cmd, p.returncode, stdout, stderr)
    assert r.returncode == 0, f"torchrun failed:\n{r.stdout[-3000:]}\n{r.stderr[-5000:]}"
    return r


def test_gathered_negatives_and_identical_weights(tmp_path):
    torchrun(HERE / "dist_worker.py", tmp_path)
    ranks = [json.loads((tmp_path / f"rank{k}.json").read_text()) for k in range(2)]
    for r in ranks:
        assert r["gather_ok"], r
        assert r["grad_nonzero"] and r["grad_max_err"] < 1e-6, r
        assert r["weights_identical"] and r["weights_changed"], r
        # The group's threads ran, and none is left once finish_distributed returns.
        assert len(r["threads_running"]) > len(r["threads_before"]), r
        assert r["threads_after"] == r["threads_before"], r
    assert ranks[0]["loss"] != pytest.approx(ranks[1]["loss"])  # each rank has its own queries


def test_retrieval_command_under_torchrun(recipe_root, tmp_path):
    out = tmp_path / "run"
    r = torchrun(
        "-m",
        "dishcam_trainer",
        "retrieval",
        "--data",
        recipe_root,
        "--image-model",
        "tiny_clip_vit",
        "--text-model",
        "tiny_bert",
        "--vocab-size",
        "200",
        "--dim",
        "16",
        "--epochs",
        "2",
        "--batch-size",
        "4",
        "--val-split",
        "val",
        "--quiet",
        "--weights-digest",
        "--out",
        out,
    )
    digests = [(out / f"weights-rank{k}.sha256").read_text() for k in range(2)]
    assert digests[0] == digests[1]
    result = json.loads(r.stdout.strip().splitlines()[-1])
    assert result["bag_size"] == 6  # evaluation gathered all 6 validation pairs from both ranks
    rows = (out / "log.csv").read_text().splitlines()
    assert len(rows) == 3
