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


def test_read_text_drops_a_bom_and_names_the_line_that_is_not_utf8(tmp_path):
    from yapo_interp.errors import UserError
    from yapo_interp.io import read_json, read_text

    path = tmp_path / "notes.txt"
    path.write_bytes(b"\xef\xbb\xbfone\ntwo\n")
    assert read_text(path) == "one\ntwo\n"
    path.write_bytes(b"\xef\xbb\xbf{\"a\": 1}")
    assert read_json(path) == {"a": 1}
    path.write_bytes(b"\xef\xbb\xbfone\ntwo\nthr\xe9e\n")
    with pytest.raises(UserError) as error:
        read_text(path)
    assert str(error.value) == f"{path}:3: not UTF-8 (save it as UTF-8)"
