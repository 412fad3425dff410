"""The checks every command makes before loading a model (``yapo_interp.cli``): device, output
folder, layer range from the configuration alone; each failure is one line naming the fix."""

import json

import pytest
import torch

from yapo_interp.cli import check_device, check_layers, check_writable, known_n_layers
from yapo_interp.errors import UserError


def _no_model(*args, **kwargs):
    raise AssertionError("the model must not be loaded")


def test_cuda_on_a_machine_without_cuda_is_refused_in_one_line(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # also on a CUDA machine
    with pytest.raises(UserError) as error:
        check_device("cuda")
    assert str(error.value).startswith("--device cuda: CUDA is not available on this machine")
    assert str(error.value).endswith("use --device cpu.")
    assert check_device("cpu") == "cpu"


def test_a_device_torch_does_not_know_is_refused():
    with pytest.raises(UserError, match="'gpu0' is not a torch device"):
        check_device("gpu0")


def test_out_below_a_regular_file_is_refused(tmp_path):
    blocker = tmp_path / "results.csv"
    blocker.write_text("")
    with pytest.raises(UserError, match=f"{blocker} is a file, not a folder"):
        check_writable(blocker / "run")
    with pytest.raises(UserError, match=f"{blocker} is a file, not a folder"):
        check_writable(blocker)
    assert check_writable(tmp_path / "new" / "deeper") == tmp_path / "new" / "deeper"
    assert not (tmp_path / "new").exists()  # checking writes nothing


def test_an_out_that_cannot_be_written_is_refused_with_the_reason(tmp_path, monkeypatch):
    import tempfile

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", refuse)  # what a read-only folder answers
    with pytest.raises(UserError) as error:
        check_writable(tmp_path / "run")
    assert str(error.value) == (f"--out {tmp_path / 'run'}: cannot write in {tmp_path} "
                                "(Permission denied); choose a folder you can write to with "
                                "--out.")


def test_layers_are_checked_from_the_configuration_alone(tmp_path):
    assert known_n_layers("embedded") == 18
    folder = tmp_path / "hf-model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"num_hidden_layers": 4}))
    assert known_n_layers(str(folder)) == 4
    check_layers(str(folder), [0, 3])
    with pytest.raises(UserError, match=rf"--layer 4 is out of range for {folder}, which has "
                                        r"layers 0\.\.3; choose one of them\."):
        check_layers(str(folder), [4])
    with pytest.raises(UserError, match="--layer -1: layers are numbered from 0"):
        check_layers("embedded", [-1])
    assert known_n_layers("no-such-model-anywhere") is None
    check_layers("no-such-model-anywhere", [99])  # unknowable here: the model load checks it


def test_train_checks_its_flags_before_loading_the_model(tmp_path, monkeypatch):
    from yapo_interp import models
    from yapo_interp.train import main

    monkeypatch.setattr(models, "load_model", _no_model)
    csv = tmp_path / "behaviour.csv"
    csv.write_text("question,matching,not_matching\nq1, (A), (B)\nq2, (B), (A)\n")
    common = ["--behaviour-csv", str(csv), "--out", str(tmp_path / "run")]
    with pytest.raises(UserError, match="--max-pairs must be at least 1"):
        main(["--method", "bipo", "--max-pairs", "-1", "--layer", "1"] + common)
    with pytest.raises(UserError, match=r"--layer 40 is out of range for embedded"):
        main(["--method", "bipo", "--layer", "40"] + common)
    with pytest.raises(UserError, match="--layer 5: no SAE is shipped for layer 5"):
        main(["--method", "yapo", "--layer", "5"] + common)
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="--device cuda: CUDA is not available"):
            main(["--method", "bipo", "--layer", "1", "--device", "cuda"] + common)
