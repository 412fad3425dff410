import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the suite never reaches a model hub

import jaxtyping
import pytest
import torch
from jaxtyping import install_import_hook

# The pure-math modules run with their jaxtyping annotations checked (beartype) in every test: a
# tensor whose shape or dtype contradicts an annotation, or two arguments that disagree on a
# named axis (yapo_interp.axes), fails the test. Installed before anything imports them.
SHAPE_CHECKED = ("yapo_interp.objective", "yapo_interp.steering", "yapo_interp.metrics",
                 "yapo_interp.logprobs", "yapo_interp.attribution.encode",
                 "yapo_interp.attribution.compare", "yapo_interp.attribution.effect")
# is_pep484_tower: an int is a float, as PEP 484 reads an annotation ``float``
install_import_hook(SHAPE_CHECKED,
                    "beartype.beartype(conf=beartype.BeartypeConf(is_pep484_tower=True))")

from yapo_interp.testing import tiny_model, tiny_sae  # noqa: E402  (after the hook)


@pytest.fixture(scope="session")
def model():
    """A 3-layer random HookedTransformer with a character tokenizer (shared: do not mutate)."""
    return tiny_model()


@pytest.fixture(scope="session")
def sae(model):
    """A random standard (ReLU) SAE on blocks.1.hook_resid_post of ``model``."""
    return tiny_sae(model, layer=1)


@pytest.fixture
def unchecked_shapes():
    """The shape checks off for one test: for the tests of a function's own check of its
    arguments (its one-line ``UserError``), which the annotations would otherwise pre-empt."""
    jaxtyping.config.update("jaxtyping_disable", True)
    yield
    jaxtyping.config.update("jaxtyping_disable", False)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors: one thread is much faster than several on a shared, busy CPU.
    Modules opt in with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
