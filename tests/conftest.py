import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the suite never reaches a model hub

import pytest

from yapo_interp.testing import tiny_model, tiny_sae


@pytest.fixture(scope="session")
def model():
    """A 3-layer random HookedTransformer with a character tokenizer (shared: do not mutate)."""
    return tiny_model()


@pytest.fixture(scope="session")
def sae(model):
    """A random standard (ReLU) SAE on blocks.1.hook_resid_post of ``model``."""
    return tiny_sae(model, layer=1)
