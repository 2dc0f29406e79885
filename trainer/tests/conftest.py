import os
import sys
from pathlib import Path

import pytest

# Tests never reach a model hub: every model is a tiny, randomly initialised config.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).parent))

import synth  # noqa: E402


@pytest.fixture(scope="session")
def food_root(tmp_path_factory):
    return synth.food101(tmp_path_factory.mktemp("food101"))


@pytest.fixture(scope="session")
def upmc_root(tmp_path_factory):
    return synth.upmc(tmp_path_factory.mktemp("upmc"), per_class=14)


@pytest.fixture(scope="session")
def recipe_root(tmp_path_factory):
    return synth.recipe1m(
        tmp_path_factory.mktemp("recipe1m"), recipes=30, partition_of=lambda i: "val" if i % 5 == 0 else "train"
    )
