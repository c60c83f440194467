"""The shipped tiny bases: each is its preset, speaks the built-in tokenizer, writes the formats."""

import re
from pathlib import Path

import pytest

from kd_jax.data import builtin_paths, load_tokenizer, read_records
from kd_jax.errors import MissingFileError
from kd_jax.models import builtin_bases, hf_io, presets
from kd_jax.models.loader import load_trained
from kd_jax.quickstart import chat_prompts
from kd_jax.sampling import SamplingConfig, generate_text

SHAPE = ("hidden_size", "intermediate_size", "num_layers", "num_heads", "num_kv_heads", "head_dim")


@pytest.mark.parametrize("name", sorted(builtin_bases.manifest()))
def test_a_shipped_base_is_its_preset_with_the_builtin_tokenizer(builtin_dir, name):
    folder = Path(builtin_bases.path(name))
    cfg = hf_io.read_config(folder)
    preset = presets.get(name, vocab_size=cfg.vocab_size)
    assert {k: getattr(cfg, k) for k in SHAPE} == {k: getattr(preset, k) for k in SHAPE}
    tokenizer = Path(builtin_paths.resolve("builtin:tokenizer"))
    assert (folder / "tokenizer.json").read_bytes() == (tokenizer / "tokenizer.json").read_bytes()
    assert cfg.vocab_size == len(load_tokenizer(str(tokenizer)))
    assert builtin_bases.manifest()[name]["config"] == f"configs/pretrain.py:{name}"


def test_the_shipped_bases_write_the_answer_format(builtin_dir):
    """Pretrained, not random: greedy replies to held-out comparison questions end in the
    task's "The answer is X ." (right or wrong: the bases copy digits imperfectly)."""
    test = read_records(builtin_paths.resolve("builtin:chat/compare/test"))
    records = [test[i] for i in range(40)]
    for name in ("tiny-teacher", "tiny-student-l"):
        model, tok_dir = load_trained(builtin_bases.path(name))
        tokenizer = load_tokenizer(tok_dir)
        cfg = SamplingConfig.for_tokenizer(tokenizer, max_new_tokens=32)
        outs = generate_text(model, tokenizer, chat_prompts(records, tokenizer), cfg)
        answered = [o for o in outs if re.search(r"the answer is \d+ \.$", o.strip().lower())]
        assert len(answered) >= 36, (name, outs[:4])


def test_a_missing_base_names_the_command_that_makes_it():
    with pytest.raises(MissingFileError, match="configs/pretrain.py:tiny-nope"):
        builtin_bases.path("tiny-nope")


def test_ship_exports_a_pretraining_run_and_records_it(builtin_dir, tmp_path, monkeypatch):
    from configs import pretrain
    from kd_jax import train

    config = pretrain.get_config("tiny-student-xs,runlocal")
    config.train.num_steps = config.train.eval_every = config.train.checkpoint_every = 3
    config.train.progress_bar = False
    train.run(config, tmp_path / "run")
    monkeypatch.setattr(builtin_bases, "ROOT", tmp_path / "bases")
    builtin_bases.ship(tmp_path / "run")
    folder = Path(builtin_bases.path("tiny-student-xs"))
    assert (folder / "model.safetensors").exists() and (folder / "tokenizer.json").exists()
    entry = builtin_bases.manifest()["tiny-student-xs"]
    assert entry["config"] == "configs/pretrain.py:tiny-student-xs"
    assert entry["steps"] == entry["final_step"] == 3 and entry["seed"] == 0
