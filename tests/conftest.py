import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the suite never reaches a model hub

import pytest
import torch

from yapo_interp.testing import tiny_model, tiny_sae


@pytest.fixture(scope="session")
def model():
    """A 3-layer random HookedTransformer with a character tokenizer (shared: do not mutate)."""
    return tiny_model()


@pytest.fixture(scope="session")
def sae(model):
    """A random standard (ReLU) SAE on blocks.1.hook_resid_post of ``model``."""
    return tiny_sae(model, layer=1)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors: one thread is much faster than several on a shared, busy CPU.
    Modules opt in with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
