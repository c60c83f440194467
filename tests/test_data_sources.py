"""Sources: paths, formats, Parquet/JSON lists, and bad data -> one clear line or a logged count."""

import json
import logging

import pytest

from kd_jax.data import DataError, read_records
from kd_jax.data.source_dispatch import open_source
from kd_jax.data.sources import expand_paths

CHAT = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}
ALPACA = {"instruction": "add 1 and 2", "output": "1 + 2 = 3", "answer": 3}


def write_lines(path, lines):
    """Writes dicts as JSON, str as text and bytes as they are, one per line."""
    with open(path, "wb") as f:
        for line in lines:
            if isinstance(line, dict):
                line = json.dumps(line)
            f.write((line.encode() if isinstance(line, str) else line) + b"\n")
    return str(path)


def test_chat_and_alpaca_records_are_read_and_normalized(tmp_path):
    path = write_lines(tmp_path / "a.jsonl", [CHAT, ALPACA, {**CHAT, "task": "t", "id": 7}])
    src = read_records(path)
    assert len(src) == 3
    assert src[0]["messages"] == CHAT["messages"]
    # Alpaca records gain an empty `input` and a string `answer`.
    assert src[1] == {
        "instruction": "add 1 and 2",
        "input": "",
        "output": "1 + 2 = 3",
        "answer": "3",
    }
    assert src[2]["task"] == "t" and src[2]["id"] == 7
    assert src.location(2) == f"{path} line 3"


def test_folder_glob_and_comma_list(tmp_path):
    (tmp_path / "d" / "sub").mkdir(parents=True)
    a = write_lines(tmp_path / "d" / "a.jsonl", [CHAT])
    b = write_lines(tmp_path / "d" / "sub" / "b.jsonl", [CHAT, CHAT])
    (tmp_path / "d" / "notes.txt").write_text("not data")
    assert expand_paths(str(tmp_path / "d")) == [a, b]
    assert expand_paths(str(tmp_path / "d" / "*.jsonl")) == [a]
    assert expand_paths(f"{a}, {b}") == [a, b]
    assert len(read_records(str(tmp_path / "d"))) == 3


def test_json_list_and_parquet(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    jpath = tmp_path / "math_10k.json"  # LLM-Adapters ships a JSON list
    jpath.write_text(json.dumps([ALPACA, ALPACA, {"instruction": "x"}]))
    with pytest.raises(DataError, match=r"math_10k.json item 3: missing or empty `output`"):
        read_records(str(jpath))
    assert read_records(str(jpath), skip_bad_lines=True).location(1) == f"{jpath} item 2"
    table = pa.Table.from_pylist([CHAT, {"messages": CHAT["messages"] * 2}])
    ppath = tmp_path / "train-00000.parquet"
    pq.write_table(table, ppath)
    src = read_records(str(ppath), fmt="chat")
    assert len(src) == 2 and len(src[1]["messages"]) == 4
    assert src.location(1) == f"{ppath} row 2"
    assert src[1]["messages"][3] == {"role": "assistant", "content": "yo"}


BAD_CASES = [
    ('{"messages": [', "malformed JSON"),
    (json.dumps({"conversation": []}), "neither `messages`"),
    (json.dumps({"messages": [{"role": "tool", "content": "x"}]}), "unknown role 'tool'"),
    (
        json.dumps(
            {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": " "}]}
        ),
        "empty assistant turn",
    ),
    (b'{"messages": "caf\xe9"}', "not valid UTF-8"),
    (json.dumps({"messages": [{"role": "user", "content": "q"}]}), "no assistant turn"),
]


@pytest.mark.parametrize("bad,problem", BAD_CASES)
def test_bad_line_raises_one_line_naming_file_line_and_fix(tmp_path, bad, problem):
    path = write_lines(tmp_path / "bad.jsonl", [CHAT, CHAT, bad, CHAT])
    with pytest.raises(DataError) as err:
        read_records(path)
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith(f"{path} line 3: ")
    assert problem in msg
    assert "skip_bad_lines=True" in msg


def test_missing_messages_with_chat_format(tmp_path):
    path = write_lines(tmp_path / "a.jsonl", [ALPACA])
    with pytest.raises(DataError, match=r"line 1: missing `messages`"):
        read_records(path, fmt="chat")


def test_missing_file_and_bad_format_name(tmp_path):
    with pytest.raises(DataError, match=r"nope.jsonl: no such file or folder; check data.train"):
        read_records(str(tmp_path / "nope.jsonl"))
    with pytest.raises(DataError, match="unknown data.format 'sharegpt'"):
        read_records(str(tmp_path), fmt="sharegpt")
    with pytest.raises(DataError, match="holds no .jsonl"):
        open_source(str(tmp_path))


def test_skip_bad_lines_counts_and_logs_every_skip(tmp_path, caplog):
    lines = [CHAT] + [b for b, _ in BAD_CASES] + [CHAT, ALPACA]
    path = write_lines(tmp_path / "mixed.jsonl", lines)
    with caplog.at_level(logging.WARNING, logger="kd_jax.data"):
        src = read_records(path, skip_bad_lines=True)
    assert len(src) == 3
    assert src.num_skipped == len(BAD_CASES)
    warning = " ".join(r.getMessage() for r in caplog.records)
    assert f"skipped {len(BAD_CASES)} bad line(s) of {len(BAD_CASES) + 3}" in warning
    assert f"{path} line 2" in warning


def test_all_lines_bad_is_an_error_even_when_skipping(tmp_path):
    path = write_lines(tmp_path / "bad.jsonl", ["{", "{"])
    with pytest.raises(DataError, match="no valid record"):
        read_records(path, skip_bad_lines=True)


def test_hf_datasets_folders_read_like_jsonl(tmp_path):
    """`save_to_disk` folders (one Dataset, or a DatasetDict's splits) give the records the
    same rows give as JSONL; a bad row is one line naming folder, row and fix."""
    import datasets

    rows = [CHAT, {**CHAT, "task": "t"}, {"messages": CHAT["messages"][::-1], "task": "u"}]
    jsonl = read_records(write_lines(tmp_path / "a.jsonl", rows))
    # A table has a column for every field: row 1's missing task is a null there.
    datasets.Dataset.from_list([{**CHAT, "task": None}, *rows[1:]]).save_to_disk(
        str(tmp_path / "one")
    )
    one = open_source(str(tmp_path / "one"))
    assert len(one) == 3 and [one[i] for i in range(3)] == [jsonl[i] for i in range(3)]
    assert one.location(2) == f"{tmp_path / 'one'} row 3"

    splits = {"train": rows[:1], "validation": rows[1:]}
    datasets.DatasetDict(
        {k: datasets.Dataset.from_list(v) for k, v in splits.items()}
    ).save_to_disk(str(tmp_path / "dict"))
    assert len(open_source(str(tmp_path / "dict"))) == 1, "a DatasetDict defaults to train"
    assert open_source(f"{tmp_path / 'dict'}#validation")[1] == jsonl[2]
    with pytest.raises(DataError, match=r"has no split 'test' \(it has train, validation\)"):
        open_source(f"{tmp_path / 'dict'}#test")

    bad = [CHAT, {"messages": [{"role": "robot", "content": "x"}]}]
    datasets.Dataset.from_list(bad).save_to_disk(str(tmp_path / "bad"))
    with pytest.raises(DataError) as e:
        open_source(str(tmp_path / "bad"))
    msg = str(e.value)
    assert msg.startswith(f"{tmp_path / 'bad'} row 2: ") and "\n" not in msg
    assert "role" in msg and "skip_bad_lines" in msg
    assert len(open_source(str(tmp_path / "bad"), skip_bad_lines=True)) == 1


def test_hf_datasets_folder_without_the_package(tmp_path, monkeypatch):
    import sys

    import datasets

    datasets.Dataset.from_list([CHAT]).save_to_disk(str(tmp_path / "one"))
    monkeypatch.setitem(sys.modules, "datasets", None)  # import datasets -> ImportError
    with pytest.raises(DataError, match="`datasets` package is not installed; pip install"):
        open_source(str(tmp_path / "one"))
