"""Prompt files: JSONL and one-prompt-a-line text, GenEval's own format, errors that name the file and line."""

from __future__ import annotations

import json

import pytest

from tafs.prompts import (Prompt, PromptFileError, by_category, categories_of, check_metadata, read_prompt_file,
                          write_prompt_file)


def test_jsonl_round_trip(tmp_path):
    prompts = [Prompt("a red ring", {"objects": [{"shape": "ring", "color": "red"}]}, "colors"),
               Prompt("two crosses", {}, "counting"), Prompt("a photo of a cat")]
    path = tmp_path / "p.jsonl"
    assert write_prompt_file(path, prompts) == 3
    back = read_prompt_file(path)
    assert back == prompts and [p.line for p in back] == [1, 2, 3]
    assert json.loads(path.read_text().splitlines()[2]) == {"prompt": "a photo of a cat"}


def test_text_file_one_prompt_a_line(tmp_path):
    path = tmp_path / "p.txt"
    path.write_text("a cat\n\n  a dog on a sofa  \n")
    got = read_prompt_file(path)
    assert [p.text for p in got] == ["a cat", "a dog on a sofa"] and [p.line for p in got] == [1, 3]
    assert all(p.category is None and p.metadata == {} for p in got)


def test_geneval_metadata_lines_read_as_they_are(tmp_path):
    """Keys other than prompt/category/metadata are the metadata (GenEval's evaluation_metadata.jsonl)."""
    line = {"tag": "counting", "include": [{"class": "cup", "count": 3}], "prompt": "a photo of three cups"}
    path = tmp_path / "geneval.jsonl"
    path.write_text(json.dumps(line) + "\n")
    (p,) = read_prompt_file(path)
    assert p.text == "a photo of three cups" and p.metadata == {"tag": "counting", "include": line["include"]}


@pytest.mark.parametrize("text, needle", [
    ("", "no prompts (the file is empty)"),
    ("\n\n", "no prompts"),
    ('{"prompt": "ok"}\n{"prompt": "broken"\n', ":2: not valid JSON"),
    ('{"prompt": "ok"}\n["a list"]\n', ":2: expected a JSON object"),
    ('{"text": "no prompt key"}\n', ":1: 'prompt' must be a non-empty string"),
    ('{"prompt": "x", "metadata": [1]}\n', ":1: 'metadata' must be a JSON object"),
    ('{"prompt": "x", "category": 3}\n', ":1: 'category' must be a string"),
])
def test_bad_files_name_file_and_line(tmp_path, text, needle):
    path = tmp_path / "bad.jsonl"
    path.write_text(text)
    with pytest.raises(PromptFileError) as err:
        read_prompt_file(path)
    assert str(path) in str(err.value) and needle in str(err.value)


def test_missing_and_binary_files(tmp_path):
    with pytest.raises(PromptFileError, match="prompt file not found"):
        read_prompt_file(tmp_path / "nope.jsonl")
    path = tmp_path / "bin.txt"
    path.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(PromptFileError, match="not UTF-8"):
        read_prompt_file(path)


def test_check_metadata_names_line_and_reward(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "a ring", "metadata": {"objects": []}}\n\n{"prompt": "a cross"}\n')
    prompts = read_prompt_file(path)
    check_metadata(prompts, {"clip": ()}, str(path))  # needs nothing
    with pytest.raises(PromptFileError) as err:
        check_metadata(prompts, {"toy_dense": ("objects",)}, str(path))
    msg = str(err.value)
    assert f"{path}:3" in msg and "'a cross'" in msg and "['objects']" in msg and "toy_dense" in msg


def test_categories_in_order_of_appearance():
    ps = [Prompt("a", category="y"), Prompt("b", category="x"), Prompt("c", category="y")]
    assert categories_of(ps) == ["y", "x"]
    assert {k: [p.text for p in v] for k, v in by_category(ps).items()} == {"y": ["a", "c"], "x": ["b"]}
    assert list(by_category([Prompt("a")])) == [None]
