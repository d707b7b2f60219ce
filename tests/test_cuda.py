"""The CUDA path of every embedding layer and backbone trains like the CPU path.

Skipped on machines without a GPU (CI has none); run on the device machine with
``pytest tests/test_cuda.py``. Sampling and initialization run on the host from
the same seed, so a run trained on CUDA must score like the same run trained on
the CPU, up to float reduction order.
"""

from __future__ import annotations

import json

import pytest
import torch
from helpers import copy_run, invoke_ok, read_manifest

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

SHAPE = ["--dim", "16", "--layers", "2"]
TRAINING = ["--batch-size", "4096", "--lr", "0.02", "--seed", "7"]

# (embedding, backbone, codebook size): c = 250 makes LEGCF on LightGCN
# propagate explicitly instead of through the operator P.
LAYERS = [
    ("legcf", "lightgcn", 50),
    ("legcf", "lightgcn", 250),
    ("legcf", "ngcf", 50),
    ("legcf", "lrgccf", 50),
    ("full", "lightgcn", 0),
    ("full", "ngcf", 0),
    ("qr", "lrgccf", 0),
    ("pep", "ngcf", 0),
]


def train(run_dir, embedding, backbone, codebook, device):
    """pretrain (and refine where the layer has one) on ``device``; returns test metrics."""
    if embedding == "legcf":
        invoke_ok("partition", run_dir, "-c", codebook, "-t", 2, "--seed", 7)
    layer = ["--embedding", embedding, "--backbone", backbone, *SHAPE]
    invoke_ok("pretrain", run_dir, *layer, "--epochs", 3, *TRAINING, "--device", device)
    if embedding in ("legcf", "pep"):
        invoke_ok("refine", run_dir, "--epochs", 2, *TRAINING, "--device", device)
    return json.loads(invoke_ok("evaluate", run_dir, "--json", "--device", "cpu").stdout)


@pytest.mark.parametrize(("embedding", "backbone", "codebook"), LAYERS)
def test_cuda_training_matches_cpu(tmp_path, prepared_run, embedding, backbone, codebook):
    on_cpu = train(copy_run(prepared_run, tmp_path / "cpu"), embedding, backbone, codebook, "cpu")
    cuda_dir = copy_run(prepared_run, tmp_path / "cuda")
    on_cuda = train(cuda_dir, embedding, backbone, codebook, "cuda")
    assert read_manifest(cuda_dir)["stages"]["pretrain"]["config"]["device"].startswith("cuda")
    for metric in ("ndcg@20", "recall@20"):
        assert on_cuda[metric] == pytest.approx(on_cpu[metric], abs=5e-3), metric
    # Scoring a run on the GPU gives the CPU's figures.
    scored_on_cuda = json.loads(invoke_ok("evaluate", cuda_dir, "--json", "--device", "cuda").stdout)
    for metric in ("ndcg@10", "recall@10", "ndcg@20", "recall@20"):
        assert scored_on_cuda[metric] == pytest.approx(on_cuda[metric], abs=1e-5), metric
