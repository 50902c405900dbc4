"""Shared fixtures: tiny configs and a seeded RNG, so every test builds its models from configs, offline."""

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


torch.set_num_threads(1)  # two test workers share the two cores


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
