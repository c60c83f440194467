"""Built-in tasks and tokenizer: determinism, checkable answers, ambiguity, noise, HF loading."""

import collections
import filecmp
import json
import random
import re

import pytest

from kd_jax.data import (
    build_tokenizer,
    extract_answer,
    is_correct,
    synthetic_tasks,
    write_builtin_data,
)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("builtin")
    write_builtin_data(str(out), seed=3, scale=0.05)
    return out


def read(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def test_every_file_has_task_answer_and_a_correct_final_reply(data_dir):
    manifest = json.loads((data_dir / "manifest.json").read_text())
    assert set(manifest["counts"]) == {
        f"{fam}/{split}" for fam, sizes in synthetic_tasks.DEFAULT_SIZES.items() for split in sizes
    }
    for key, path in manifest["files"].items():
        fmt, family, split = key.split("/")
        records = read(path)
        assert len(records) == manifest["counts"][f"{family}/{split}"] > 0
        for r in records:
            assert r["task"] == family
            reply = r["messages"][-1]["content"] if fmt == "chat" else r["output"]
            if fmt == "chat":
                assert [m["role"] for m in r["messages"]][:2] == ["user", "assistant"]
            # Only noisy human records may state a wrong answer.
            assert is_correct(reply, r["answer"]) != r.get("noisy", False)


def test_arith_answers_are_the_arithmetic_of_the_question():
    rng = random.Random(0)
    for _ in range(300):
        p = synthetic_tasks.gen_arith(rng)
        q, reply = p.turns[0]
        numbers = [int(x) for x in re.findall(r"\d+", q)]
        signs = [1] + [
            -1 if any(v in s for v in synthetic_tasks.LOSS_VERBS) else 1
            for s in q.split(" . ")[1:-1]
        ]
        assert sum(s * n for s, n in zip(signs, numbers, strict=True)) == int(p.answer)
        # Every equation in the rationale is true arithmetic.
        equations = re.findall(r"((?:\d+ [+-] )+\d+) = (\d+)", reply)
        assert equations
        for lhs, rhs in equations:
            tokens = lhs.split()
            value = int(tokens[0])
            for op, n in zip(tokens[1::2], tokens[2::2], strict=True):
                value += int(n) if op == "+" else -int(n)
            assert value == int(rhs), reply


def test_questions_admit_several_rationales():
    rng = random.Random(1)
    styles_seen = collections.Counter()
    multi = 0
    for _ in range(200):
        name, obj = "Max", "books"
        steps = [("+", rng.randint(1, 9)), ("-", rng.randint(1, 5)), ("+", rng.randint(1, 9))]
        start = rng.randint(10, 40)
        answer = start + steps[0][1] - steps[1][1] + steps[2][1]
        styles = synthetic_tasks._arith_rationales(name, obj, start, steps, answer)
        multi += len(set(styles.values())) >= 5
        styles_seen.update(styles)
        for text in styles.values():
            assert text.rstrip(" .").endswith(str(answer))
    assert multi == 200
    # In generated data one question text maps to more than one reply.
    by_question = collections.defaultdict(set)
    for p in synthetic_tasks.generate("compare", "train", 3000, seed=0):
        by_question[p.turns[0][0]].add(p.turns[0][1])
    assert any(len(r) > 1 for r in by_question.values())


def test_human_data_is_smaller_terser_and_noisier(data_dir):
    train = read(data_dir / "chat" / "arith" / "train.jsonl")
    human = read(data_dir / "chat" / "arith" / "human.jsonl")
    assert len(human) < len(train)
    mean_len = lambda rs: sum(len(r["messages"][1]["content"]) for r in rs) / len(rs)
    assert mean_len(human) < mean_len(train)
    big = synthetic_tasks.generate("arith", "human", 4000, seed=0)
    noisy = sum(p.noisy for p in big) / len(big)
    assert 0.03 < noisy < 0.07  # HUMAN_NOISE = 0.05
    assert not any(p.noisy for p in synthetic_tasks.generate("arith", "train", 1000, seed=0))


def test_deterministic_multi_turn_and_test_split_disjoint(data_dir, tmp_path):
    write_builtin_data(str(tmp_path), seed=3, scale=0.05)
    for sub in ("chat/arith/train.jsonl", "alpaca/cipher/human.jsonl", "chat/sort/test.jsonl"):
        assert filecmp.cmp(data_dir / sub, tmp_path / sub, shallow=False)
    train = read(data_dir / "chat" / "arith" / "train.jsonl")
    assert any(len(r["messages"]) == 4 for r in train)  # follow-up turns exist
    for family in synthetic_tasks.FAMILIES:
        test_q = {r["instruction"] for r in read(data_dir / "alpaca" / family / "test.jsonl")}
        train_q = {r["instruction"] for r in read(data_dir / "alpaca" / family / "train.jsonl")}
        assert not test_q & train_q
    other = synthetic_tasks.generate("arith", "train", 50, seed=4)
    assert [p.turns for p in other] != [
        p.turns for p in synthetic_tasks.generate("arith", "train", 50, 3)
    ]


def test_cipher_translation_is_consistent():
    inverse = {z: e for e, z in synthetic_tasks.ZORBIC.items()}

    def english_base(w):
        if w == "children":
            return "child"
        for cand in (w, w[:-1], w + "s"):  # "cats" -> "cat", "see" -> "sees"
            if cand in synthetic_tasks.ZORBIC:
                return cand
        raise AssertionError(w)

    def zorbic_base(w):
        return w if w in inverse else w.removesuffix("ki")

    for p in synthetic_tasks.generate("cipher", "train", 300, seed=0):
        q = p.turns[0][0]
        src = q.split(" : ", 1)[1].removesuffix(" .").split()
        english, zorbic = (src, p.answer.split()) if "Zorbic" in q else (p.answer.split(), src)
        assert sorted(synthetic_tasks.ZORBIC[english_base(w)] for w in english) == sorted(
            zorbic_base(w) for w in zorbic
        )
        assert inverse[zorbic[-1]] in synthetic_tasks._VERBS  # the verb goes last
        assert sum(w not in inverse for w in zorbic) == sum(  # plurals: "miroki"
            english_base(w) != w and english_base(w) not in synthetic_tasks._VERBS for w in english
        )


def test_extract_answer():
    assert extract_answer("3 + 4 = 7 . So the answer is 7 .") == "7"
    assert extract_answer("The answer is 1 . No , the answer is 2 3 .") == "2 3"
    assert extract_answer("no answer here") is None
    assert not is_correct("The answer is 8 .", "7")


def test_tokenizer_loads_with_autotokenizer_and_spells_numbers(tmp_path):
    from transformers import AutoTokenizer

    path = build_tokenizer(str(tmp_path / "a"))
    tok = AutoTokenizer.from_pretrained(path)
    assert 300 <= len(tok) <= 1000
    assert (tok.pad_token, tok.bos_token, tok.eos_token) == ("<pad>", "<s>", "<|end|>")
    assert tok.convert_tokens_to_ids("</s>") != tok.unk_token_id
    texts = [f"has {n} pens" for n in range(1000)]
    encoded = tok(texts, add_special_tokens=False)["input_ids"]
    for n, ids in enumerate(encoded):  # one token per digit, the same digits every time
        assert len(ids) == 2 + len(str(n)) and tok.unk_token_id not in ids
    assert tok.batch_decode(encoded) == texts
    text = "Mia starts with 17 stamps . She sells 9 . The answer is 8 ."
    ids = tok(text)["input_ids"]
    assert ids[0] == tok.bos_token_id and tok.decode(ids, skip_special_tokens=True) == text
    for word in (
        synthetic_tasks.NAMES + synthetic_tasks.OBJECTS + list(synthetic_tasks.ZORBIC.values())
    ):
        assert len(tok(" " + word, add_special_tokens=False)["input_ids"]) == 1, word
    chat = [{"role": "user", "content": "Hi ."}, {"role": "assistant", "content": "Yes ."}]
    assert (
        tok.apply_chat_template(chat, tokenize=False)
        == "<s><|user|>Hi .<|end|><|assistant|>Yes .<|end|>"
    )
    assert tok.apply_chat_template(chat[:1], tokenize=False, add_generation_prompt=True).endswith(
        "<|assistant|>"
    )
    gen = json.loads((tmp_path / "a" / "generation_config.json").read_text())
    assert tok.eos_token_id in gen["eos_token_id"]
    # Same inputs, same files.
    build_tokenizer(str(tmp_path / "b"))
    assert filecmp.cmp(
        tmp_path / "a" / "tokenizer.json", tmp_path / "b" / "tokenizer.json", shallow=False
    )
