"""All-or-nothing outputs get the permissions a plain mkdir/open would give (the umask's), not temp files' 0700."""

from __future__ import annotations

import os
import stat

import pytest
from helpers import write_jsonl

from icrm.outputs import staged_directory, staged_file


@pytest.fixture(params=[0o022, 0o027])
def umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_staged_outputs_follow_the_umask(tmp_path, umask):
    with staged_directory(tmp_path / "dir", "test") as staging:
        (staging / "file.txt").write_text("x")
    with staged_file(tmp_path / "file.json") as tmp:
        tmp.write_text("{}")
    assert mode(tmp_path / "dir") == 0o777 & ~umask
    assert mode(tmp_path / "dir" / "file.txt") == mode(tmp_path / "file.json") == 0o666 & ~umask


def test_explain_output_folder_follows_the_umask(tmp_path, cli, tiny_rm, umask):
    tiny_rm.save_pretrained(tmp_path / "rm")
    data = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "hello", "chosen": "the lazy dog", "rejected": "fox"}])
    result = cli("explain", "--model", tmp_path / "rm", "--data", data, "--output", tmp_path / "pages")
    assert result.exit_code == 0, result.output
    assert mode(tmp_path / "pages") == 0o777 & ~umask == mode(tmp_path / "rm")  # like a directory made by mkdir
