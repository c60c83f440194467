"""Mistakes a new user makes end in one line `kd-jax: error: ...`, exit status 2, and no
traceback: each case is run through the command line as a user would type it."""

import json

import pytest

from kd_jax.main import main as cli
from tests.hf_fixtures import llama_config, make_hf_model


def _fails_with(capsys, argv, *phrases):
    assert cli(argv) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("kd-jax: error:")]
    assert len(errors) == 1, err
    assert "Traceback" not in err
    for phrase in phrases:
        assert phrase in errors[0], errors[0]
    return errors[0]


@pytest.fixture
def hf_model(tmp_path):
    folder = tmp_path / "model"
    make_hf_model(llama_config(num_hidden_layers=1), folder)
    (tmp_path / "prompts.txt").write_text("hello\n")
    return folder


def _generate(folder):
    prompts = folder.parent / "prompts.txt"
    return ["generate", "--model", str(folder), "--prompts", str(prompts), "--out", "/dev/null"]


def test_truncated_safetensors_file(capsys, hf_model):
    weights = hf_model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    _fails_with(capsys, _generate(hf_model), "model.safetensors is truncated", "again")


def test_safetensors_header_corrupt(capsys, hf_model):
    weights = hf_model / "model.safetensors"
    raw = bytearray(weights.read_bytes())
    raw[8:16] = b"\xff" * 8
    weights.write_bytes(bytes(raw))
    _fails_with(capsys, _generate(hf_model), "corrupt safetensors header")


def test_config_json_that_is_not_json(capsys, hf_model):
    (hf_model / "config.json").write_text('{"architectures": ["LlamaForCausalLM"],')
    _fails_with(capsys, _generate(hf_model), "config.json is not valid JSON", "line 1")


def test_misspelt_config_key_names_the_nearest(capsys, tmp_path):
    argv = ["train", "--config", "configs/tiny_compare.py:sft", "--config.kd.temprature=2"]
    line = _fails_with(capsys, [*argv, "--workdir", str(tmp_path / "w")], "temprature")
    assert "Did you mean kd.temperature?" in line
    assert not (tmp_path / "w").exists()


def test_config_value_of_the_wrong_type(capsys, tmp_path):
    argv = ["train", "--config", "configs/tiny_compare.py:sft", "--config.train.num_steps=ten"]
    _fails_with(capsys, [*argv, "--workdir", str(tmp_path)], "train.num_steps takes an integer")


def test_missing_config_file(capsys, tmp_path):
    argv = ["train", "--config", "configs/nope.py", "--workdir", str(tmp_path)]
    _fails_with(capsys, argv, "configs/nope.py does not exist", "--config")


def test_missing_config_flag(capsys, tmp_path):
    _fails_with(capsys, ["train", "--workdir", str(tmp_path)], "--config is required")


def test_teacher_cache_that_is_not_one(capsys, tmp_path, builtin_dir):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "meta.json").write_text(
        json.dumps({"key": {"teacher": "another"}, "k": 4, "complete": True})
    )
    argv = [
        "train",
        "--config",
        "configs/tiny_compare.py:kd",
        f"--config.kd.teacher_cache={cache}",
        "--config.data.packing=False",
        "--config.teacher.preset=tiny-teacher",
        "--config.train.num_steps=1",
        "--workdir",
        str(tmp_path / "w"),
    ]
    _fails_with(capsys, argv, f"Teacher cache {cache} was built for another teacher")
