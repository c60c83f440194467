"""Study A's general evaluations against their official scorers, on the real files.

IFEval: the GPT-4 responses google-research ships, per example against the official
code's verdicts and lm-eval's procedure, and the four published numbers. BBH: the
authors' Codex chain-of-thought outputs. GPQA: lm-eval's own filters and exact match.
Sources of every file: tests/fixtures/studya/SOURCES.md.
"""

import json
import os
import re
import shutil

import pytest

from kd_jax.evaluation import bbh, gpqa, ifeval, run_eval
from kd_jax.evaluation.responses import score_responses
from kd_jax.main import main as cli


def _eval(argv: list[str]) -> int:
    """`kd-jax eval ARGV` as a user runs it."""
    return cli(["eval", *argv])


HERE = os.path.dirname(__file__)
STUDYA = os.path.join(HERE, "fixtures", "studya")
IFEVAL_INPUT = os.path.join(STUDYA, "ifeval", "input_data_gpt4_20231107_145030.jsonl")
IFEVAL_GPT4 = os.path.join(STUDYA, "ifeval", "input_response_data_gpt4_20231107_145030.jsonl")
# keywords:letter_frequency with "#" (1122) and "!" (1129): the official code checks a
# random letter instead (see kd_jax/evaluation/ifeval.py), so no fixed verdict exists.
RANDOM_IN_OFFICIAL = {"1122", "1129"}


def _jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(x) for x in f if x.strip()]


def _write_jsonl(path, records):
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)
    return str(path)


def _predictions(out, task):
    return _jsonl(os.path.join(out, "predictions", f"{task}.jsonl"))


# ---- IFEval --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gpt4_scored(tmp_path_factory):
    """The GPT-4 responses scored through `kd-jax eval --responses` (no model)."""
    tmp = tmp_path_factory.mktemp("ifeval")
    key = {r["prompt"]: r["key"] for r in _jsonl(IFEVAL_INPUT)}
    responses = [
        {"task": "ifeval", "key": key[r["prompt"]], "response": r["response"]}
        for r in _jsonl(IFEVAL_GPT4)
    ]
    root = tmp / "root"
    root.mkdir()
    shutil.copy(IFEVAL_INPUT, root / "input_data.jsonl")
    path = _write_jsonl(tmp / "responses.jsonl", responses)
    rc = _eval(
        [
            "--responses",
            path,
            "--tasks",
            "ifeval",
            "--data-root",
            str(root),
            "--out",
            str(tmp / "out"),
            "--no-progress",
        ]
    )
    assert rc == 0
    scores = json.loads((tmp / "out" / "scores.json").read_text())["tasks"]["ifeval"]
    return scores, _predictions(tmp / "out", "ifeval")


def test_ifeval_per_example_verdicts_equal_the_official_run(gpt4_scored):
    _, rows = gpt4_scored
    with open(os.path.join(STUDYA, "ifeval", "official_verdicts_podtech.json")) as f:
        official = json.load(f)
    assert len(rows) == 541 and len(official) == 540  # the official run lacks key 2785
    differ = set()
    for row in rows:
        want = official.get(row["id"])
        if want is None:
            continue
        if (row["follow_strict"], row["follow_loose"]) != (want["strict"], want["loose"]):
            differ.add(row["id"])
    assert differ <= RANDOM_IN_OFFICIAL  # every other prompt: the same verdict list


def test_ifeval_four_numbers_equal_the_published_ones(gpt4_scored):
    scores, rows = gpt4_scored
    pct = {k: round(100 * scores[k], 2) for k in ifeval.METRICS}
    # Zhou et al. 2023, Table 3, GPT-4: prompt-strict 76.89, inst-strict 83.57.
    assert (pct["prompt_strict"], pct["inst_strict"]) == (76.89, 83.57)
    assert scores["n"] == 541 and sum(len(r["follow_strict"]) for r in rows) == 834
    # Loose, published 79.30 / 85.37: the official loose pass drew, for both ill-posed
    # letter checks, a letter the response lacks; kd_jax's seeded draw passes one of
    # them (79.48 / 85.49, measured). With those two verdicts as in the official run:
    instructions = {str(r["key"]): r["instruction_id_list"] for r in _jsonl(IFEVAL_INPUT)}
    fixed = []
    for r in rows:
        r = dict(r)
        if r["id"] in RANDOM_IN_OFFICIAL:
            pairs = zip(instructions[r["id"]], r["follow_loose"], strict=True)
            r["follow_loose"] = [v and i != "keywords:letter_frequency" for i, v in pairs]
        fixed.append(r)
    loose = {k: round(100 * ifeval.METRICS[k](fixed), 2) for k in ("prompt_loose", "inst_loose")}
    assert loose == {"prompt_loose": 79.30, "inst_loose": 85.37}
    assert (pct["prompt_loose"], pct["inst_loose"]) == (79.48, 85.49)


ADVERSARIAL = [
    "",  # empty: nothing is followed, strict or loose
    "   \n ",
    "Sure, here it is:\n" + "word " * 400,  # a preamble line the loose variants drop
    "**TITLE**\n" + "all lower case text here, with commas, many commas.",
    "<<a title>>\nSection 1\nfoo\nSECTION 2\nbar\nP.S. done",
    '*highlighted* *twice* and json: {"a": 1}',
]


def test_ifeval_verdicts_equal_lm_eval_on_every_response():
    from lm_eval.tasks.ifeval import utils as reference

    docs = _jsonl(IFEVAL_INPUT)
    gpt4 = {r["prompt"]: r["response"] for r in _jsonl(IFEVAL_GPT4)}
    checked = 0
    for n, doc in enumerate(docs):
        responses = [gpt4[doc["prompt"]]] + ([ADVERSARIAL[n % len(ADVERSARIAL)]] if n < 120 else [])
        for response in responses:
            if str(doc["key"]) in RANDOM_IN_OFFICIAL:
                continue
            want = reference.process_results(doc, [response])
            got = ifeval.verdicts(response, ifeval.gold(doc))
            assert got["follow_strict"] == want["inst_level_strict_acc"], (doc["key"], response)
            assert got["follow_loose"] == want["inst_level_loose_acc"], (doc["key"], response)
            checked += 1
    assert checked >= 539 + 118


def test_ifeval_finds_punkt_offline_or_fails_in_one_clear_line(tmp_path, monkeypatch):
    import nltk

    kwargs = {"relation": "at least", "num_sentences": 2}
    example = {
        "key": 1,
        "prompt": "p",
        "kwargs": [kwargs],
        "instruction_id_list": ["length_constraints:number_sentences"],
    }
    monkeypatch.setattr(nltk.data, "path", [str(tmp_path)])  # no NLTK data anywhere
    ifeval._registry.cache_clear()
    try:
        # kd_jax's bundled punkt_tab: sentences are counted with no download.
        assert ifeval.verdicts("One sentence. Two sentences.", example)["follow_strict"] == [True]
        ifeval._registry.cache_clear()
        monkeypatch.setattr(nltk.data, "path", [str(tmp_path)])
        monkeypatch.setattr(ifeval, "BUNDLED_NLTK_DATA", str(tmp_path / "absent"))
        with pytest.raises(ifeval.IFEvalError) as e:
            ifeval.verdicts("x", example)
    finally:
        ifeval._registry.cache_clear()
    assert "\n" not in str(e.value) and "NLTK_DATA" in str(e.value)
    assert "nltk.downloader punkt_tab" in str(e.value)


# ---- BBH -----------------------------------------------------------------------------------


def _reference_bbh(text, target):
    """The rule as the issue states it, written the obvious way."""
    text = re.split(r"\n\s*\nQ:", text)[0]
    parts = text.split("the answer is")
    if len(parts) < 2:
        return False
    answer = parts[-1].split("\n")[0].strip()
    answer = answer[:-1].strip() if answer.endswith(".") else answer
    return answer == target


def test_bbh_prompts_are_the_codex_inputs_and_verdicts_match_on_its_outputs(tmp_path):
    from kd_jax.evaluation import resolve

    root = os.path.join(STUDYA, "bbh")
    responses, agree_lm_eval, per_task = [], 0, {}
    for name in bbh.TASKS:
        records = bbh.loader(name)(os.path.join(root, "bbh", f"{name}.json"))
        with open(os.path.join(root, "cot-prompts", f"{name}.txt"), encoding="utf-8") as f:
            body = f.read().split("-----\n", 1)[1]
        assert records[0]["prompt"] == (
            body + "\n\nQ: " + records[0]["input"] + "\nA: Let's think step by step."
        )
        outputs = json.load(open(os.path.join(root, "code-davinci-002-cot", f"{name}.json")))
        responses += [
            {"task": f"bbh_{name}", "id": o["index"], "response": o["prediction"]}
            for o in outputs["outputs"]
        ]
    path = _write_jsonl(tmp_path / "codex.jsonl", responses)
    doc = score_responses(path, str(tmp_path / "out"), tasks="bbh", data_root=root)
    assert len(resolve("bbh")) == 27
    for name in bbh.TASKS:
        rows = _predictions(tmp_path / "out", f"bbh_{name}")
        outputs = json.load(open(os.path.join(root, "code-davinci-002-cot", f"{name}.json")))
        assert len(rows) == 40
        for row, out in zip(rows, outputs["outputs"], strict=True):
            assert row["gold"] == out["target"]
            assert row["correct"] == _reference_bbh(out["prediction"], out["target"])
            one_cue = out["prediction"].count("the answer is") == 1
            if one_cue and out["prediction"].rstrip().endswith("."):
                # lm-eval's cot_fewshot filter and exact match agree on well-formed outputs.
                m = re.findall(r"(?<=the answer is )(.*)(?=.)", out["prediction"])
                agree_lm_eval += (m[0] == out["target"]) == row["correct"]
                assert (m[0] == out["target"]) == row["correct"], (name, out["prediction"])
        per_task[name] = doc["tasks"][f"bbh_{name}"]["accuracy"]
    assert agree_lm_eval == 1049  # of 1080 outputs, those with one cue and a final "."
    mean = sum(per_task.values()) / 27
    assert abs(doc["average"]["accuracy"] - mean) < 1e-12
    print("codex first-40 accuracy per task", per_task, "mean", mean)


BBH_CASES = [  # (generation, target, correct)
    ("Step one. So the answer is (B).", "(B)", True),
    ("Step one. So the answer is (C).", "(B)", False),
    ("I cannot tell.", "(B)", False),  # malformed: no cue
    ("", "(B)", False),
    ("So the answer is (A). Wait, no: the answer is (B).", "(B)", True),  # the last cue wins
    ("So the answer is (B).\n\nQ: next question\nA: So the answer is (C).", "(B)", True),
    ("The answer is (B).", "(B)", False),  # the cue is lower-case, as in every prompt
    ("So the answer is  apple banana .\nmore text", "apple banana", True),
    ("So the answer is (B)", "(B)", True),
    ("So the answer is (B)...", "(B)", False),
]


@pytest.mark.parametrize("generation,target,want", BBH_CASES)
def test_bbh_correct_wrong_malformed_adversarial(generation, target, want):
    pred = bbh.extract(bbh.response("", generation))
    assert bbh.correct(pred, target) == want == _reference_bbh(generation, target)


# ---- GPQA ----------------------------------------------------------------------------------

GPQA_CSV = os.path.join(STUDYA, "gpqa", "gpqa_diamond_MADE_UP.csv")


def test_gpqa_reads_the_csv_and_shuffles_per_question(tmp_path):
    records = gpqa.load(GPQA_CSV)
    assert len(records) == 5
    for r in records:
        letter = "ABCD".index(r["answer"][1])
        assert r["choices"][letter] == gpqa.clean(
            next(
                row["Correct Answer"] for row in _csv_rows(GPQA_CSV) if row["Record ID"] == r["id"]
            )
        )
    # Reversing the file changes no question's letters: the seed is per question.
    import csv

    rows = _csv_rows(GPQA_CSV)
    with open(tmp_path / "r.csv", "w", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, list(rows[0]))
        w.writeheader()
        w.writerows(reversed(rows))
    again = {r["id"]: r for r in gpqa.load(str(tmp_path / "r.csv"))}
    assert all(again[r["id"]]["choices"] == r["choices"] for r in records)
    assert len({r["answer"] for r in records}) > 1  # not always the same letter
    p = gpqa.prompt(records[0], None)
    assert p.startswith("What is the correct answer to this question:[MADE-UP]")
    assert p.endswith("\nLet's think step by step: ") and "\n(D) " in p


def _csv_rows(path):
    import csv

    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def _gpqa_responses(records):
    out = []
    for r in records:
        gold, wrong = r["answer"], "(A)" if r["answer"] != "(A)" else "(B)"
        right_text = r["choices"]["ABCD".index(gold[1])]
        out += [
            f"Reasoning... The answer is {gold}.",  # correct, both filters
            f"Reasoning... The answer is {wrong}.",  # wrong
            "I am not sure about this one",  # malformed: nothing to extract
            f"{wrong} looks tempting but the answer is {gold}",  # last "(X)" wins (faithful)
            f"The answer is {gold}. On reflection {wrong}.",  # strict: first cue wins
            f"It must be {right_text}.",  # choice text only: flexible's fallback
            f"Final answer: {gold[1]}",  # ": X" fallback
            "",
        ]
    return out


@pytest.mark.parametrize("mode", ["faithful", "strict"])
def test_gpqa_verdicts_equal_lm_eval_filters(tmp_path, mode):
    from lm_eval.api.metrics import exact_match_hf_evaluate
    from lm_eval.filters.extraction import MultiChoiceRegexFilter, RegexFilter

    records = gpqa.load(GPQA_CSV)
    texts = _gpqa_responses(records)
    k = len(texts) // len(records)
    # One responses file per variant (ids are per question); score each through the CLI.
    for v in range(k):
        responses = [
            {"task": "gpqa_diamond", "id": r["id"], "response": texts[i * k + v]}
            for i, r in enumerate(records)
        ]
        root = tmp_path / f"root{v}"
        root.mkdir()
        shutil.copy(GPQA_CSV, root / "gpqa_diamond.csv")
        path = _write_jsonl(tmp_path / f"r{v}.jsonl", responses)
        out = tmp_path / f"out{v}"
        assert (
            _eval(
                [
                    "--responses",
                    path,
                    "--data-root",
                    str(root),
                    "--mode",
                    mode,
                    "--out",
                    str(out),
                    "--no-progress",
                ]
            )
            == 0
        )
        rows = _predictions(out, "gpqa_diamond")
        if mode == "faithful":
            flt = MultiChoiceRegexFilter(
                regex_pattern=r"(\([A-Z]\))",
                group_select=-1,
                ignore_case=True,
                ignore_punctuation=True,
            )
        else:
            flt = RegexFilter(regex_pattern=r"(?<=The answer is )(.*)(?=.)", group_select=0)
        docs = [{"choices": r["choices"]} for r in records]
        extracted = flt.apply([[x["response"]] for x in responses], docs)
        for row, got, rec in zip(rows, extracted, records, strict=True):
            want = exact_match_hf_evaluate(
                [got[0]], [rec["answer"]], ignore_case=True, ignore_punctuation=True
            )["exact_match"]
            assert row["correct"] == bool(want), (mode, v, row["response"], got)
            if row["prediction"] is not None:
                assert row["prediction"] == got[0]


# ---- the two paths give the same predictions ------------------------------------------------


def test_model_run_and_responses_file_write_identical_predictions(tmp_path, eval_model):
    from kd_jax.evaluation import chat_renderer, evaluate, make_generate, resolve
    from kd_jax.evaluation.study_a_tasks import FIXTURES

    model, tok = eval_model
    names = "arith,ifeval,bbh_boolean_expressions,gpqa_diamond"
    tasks = resolve(names)
    roots = run_eval.data_roots(tasks, FIXTURES)
    # Two prompts per call and two length buckets: two compiled programs, a few seconds.
    generate = make_generate(model, tok, max_new_tokens=6, temperature=0.0, batch_size=2)
    evaluate(
        tasks,
        generate,
        None,
        str(tmp_path / "model"),
        data_root=roots,
        limit=2,
        render_chat=chat_renderer(tok),
        progress=False,
        batch_size=2,
    )
    given = tmp_path / "model" / "responses.jsonl"
    assert len(_jsonl(given)) == 2 * 4
    argv = ["--responses", str(given), "--tasks", names, "--data-root", FIXTURES]
    rc = _eval([*argv, "--limit", "2", "--out", str(tmp_path / "file"), "--no-progress"])
    assert rc == 0
    for t in tasks:
        a = (tmp_path / "model" / "predictions" / f"{t.name}.jsonl").read_bytes()
        b = (tmp_path / "file" / "predictions" / f"{t.name}.jsonl").read_bytes()
        assert a == b, t.name
    assert given.read_bytes() == (tmp_path / "file" / "responses.jsonl").read_bytes()


def test_a_responses_file_missing_an_example_is_one_line(tmp_path, capsys):
    from kd_jax.evaluation.study_a_tasks import FIXTURES

    path = _write_jsonl(
        tmp_path / "r.jsonl", [{"task": "gpqa_diamond", "id": "FIXTURE01", "response": "(A)"}]
    )
    argv = ["--data-root", FIXTURES, "--out", str(tmp_path), "--no-progress"]
    rc = _eval(["--responses", path, *argv])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err and "id FIXTURE02" in err
    (tmp_path / "bad.jsonl").write_text('{"task": "ifeval"}\n')
    rc = _eval(["--responses", str(tmp_path / "bad.jsonl"), *argv])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "bad.jsonl:1" in err and "\n" not in err
