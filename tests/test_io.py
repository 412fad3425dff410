"""Atomic writers: a failed write leaves the old file, and files get the usual permissions."""

import os

import pytest

from yapo_interp.io import atomic_path, read_jsonl, write_json, write_text


def test_failed_write_keeps_the_previous_file(tmp_path):
    target = write_text(tmp_path / "result.json", "old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as temporary:
            temporary.write_text("half")
            raise RuntimeError("crash mid-write")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]  # no temporary left behind


def test_written_files_are_readable_by_others(tmp_path):
    path = write_json(tmp_path / "a.json", {"x": 1})
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~_current_umask()


def _current_umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_jsonl_reader_ignores_a_line_cut_by_a_crash(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_text('{"step": 1}\n{"step": 2}\n{"st')
    assert read_jsonl(path) == [{"step": 1}, {"step": 2}]
