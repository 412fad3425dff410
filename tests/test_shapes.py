"""The jaxtyping annotations of the pure-math modules are checked while the tests run
(``tests/conftest.py`` installs the hook): a wrong shape fails. And every annotation of the
package names its axes from the one vocabulary, ``yapo_interp.axes.AXES``."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from jaxtyping import TypeCheckError

import yapo_interp
from yapo_interp import logprobs, metrics, objective, steering
from yapo_interp.attribution import compare, effect, encode
from yapo_interp.axes import AXES
from yapo_interp.errors import UserError

JAXTYPING_TYPES = {"Float", "Int", "Bool", "Shaped", "Num", "Real", "Integer", "Inexact",
                   "Float32", "Float64", "Int64", "UInt8", "Key"}


def annotation_axes(root: Path = Path(yapo_interp.__file__).parent) -> dict[str, set[str]]:
    """Every axis name used in a jaxtyping annotation below ``root``, with the files using it."""
    used: dict[str, set[str]] = {}
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name)
                    and node.value.id in JAXTYPING_TYPES and isinstance(node.slice, ast.Tuple)
                    and len(node.slice.elts) == 2 and isinstance(node.slice.elts[1], ast.Constant)
                    and isinstance(node.slice.elts[1].value, str)):
                continue
            for dimension in node.slice.elts[1].value.split():
                if dimension == "...":
                    continue
                # modifiers (*variadic, #broadcast, _unchecked, name=size) and sums of names
                for name in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", dimension.split("=")[0]):
                    used.setdefault(name.strip("_") or name, set()).add(
                        str(path.relative_to(root.parent)))
    return used


def test_every_annotation_names_its_axes_from_the_vocabulary():
    used = annotation_axes()
    assert {"batch", "pos", "d_model", "d_sae", "d_vocab"} <= set(used)  # the walk finds them
    unknown = {name: sorted(files) for name, files in used.items() if name not in AXES}
    assert not unknown, f"axis names missing from yapo_interp.axes.AXES: {unknown}"


def test_the_shape_checks_are_on_for_the_pure_math_modules():
    for module in (objective, steering, metrics, logprobs, encode, compare, effect):
        assert module.__name__ in sys.modules
    # each module rejects a wrong shape with jaxtyping's error, before its own code runs
    with pytest.raises(TypeCheckError):  # d_model of h and v disagree
        steering.dense_intervention(torch.zeros(2, 3, 4), torch.zeros(5), 1.0)
    with pytest.raises(TypeCheckError):  # one batch axis, four of them
        objective.preference_loss(torch.zeros(4), torch.zeros(4), torch.zeros(4),
                                  torch.zeros(3), direction=1, beta=1.0)
    with pytest.raises(TypeCheckError):  # the options of one question are a vector
        metrics.answer_probability(np.zeros((2, 3)), 0)
    with pytest.raises(TypeCheckError):  # one row index per value
        logprobs.sum_per_row(torch.zeros(5), torch.zeros(4, dtype=torch.long), 2)
    with pytest.raises(TypeCheckError):  # a d_model vector against rows of another width
        encode.cosine_code(torch.zeros(7), torch.zeros(16, 8))
    with pytest.raises(TypeCheckError):  # the two codes come from one SAE
        compare.compare_codes(torch.zeros(5), torch.zeros(6))
    with pytest.raises(TypeCheckError):  # dataclass fields are checked too: d_sae disagrees
        effect.EffectCodes("bipo", 1, 1.0, effect=torch.zeros(8), gated=None,
                           share=torch.zeros(9), mean_shift=torch.zeros(4), decoded_r2=0.0,
                           mean_r2=0.0, n_tokens=1)
    # right shapes pass
    assert steering.dense_intervention(torch.zeros(2, 3, 4), torch.ones(4), 2.0).sum() == 48
    assert logprobs.sum_per_row(torch.ones(4), torch.tensor([0, 0, 1, 1]), 2).tolist() == [2, 2]


@pytest.mark.usefixtures("unchecked_shapes")
def test_with_the_checks_off_a_function_reports_a_bad_shape_itself():
    with pytest.raises(UserError, match="same SAE"):
        compare.compare_codes(torch.zeros(5), torch.zeros(6))
