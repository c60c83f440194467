"""Pipeline: batch contract, epochs, nested subsets, exact resume, host sharding, mesh, TFDS."""

import json
import logging

import jax
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from kd_jax.data import (
    ROW_KEYS,
    DataConfig,
    DataError,
    build_tokenizer,
    load_tokenizer,
    make_pipeline,
    split_indices,
    time_batches,
    write_builtin_data,
)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipe")
    write_builtin_data(str(root / "data"), seed=0, scale=0.02, families=("arith", "sort"))
    tok_dir = build_tokenizer(str(root / "tok"))
    return {
        "root": root,
        "arith": str(root / "data" / "chat" / "arith" / "train.jsonl"),  # 400 records
        "sort": str(root / "data" / "alpaca" / "sort" / "train.jsonl"),  # 80 records
        "tok_dir": tok_dir,
        "tok": load_tokenizer(tok_dir),
    }


def pipeline(env, **kw):
    kw.setdefault("train", env["arith"])
    kw.setdefault("max_length", 96)
    kw.setdefault("batch_size", 4)
    extra = {k: kw.pop(k) for k in ("sharding", "process_index", "process_count") if k in kw}
    return make_pipeline(DataConfig(tokenizer=env["tok_dir"], **kw), tokenizer=env["tok"], **extra)


def segments(batch):
    """(row, segment id, slice) for every example in a host batch."""
    for r, seg in enumerate(batch["segment_ids"]):
        for s in range(1, seg.max() + 1):
            idx = np.flatnonzero(seg == s)
            assert (np.diff(idx) == 1).all(), "a segment must be contiguous"
            yield r, s, slice(idx[0], idx[-1] + 1)


def example_key(batch, r, sl):
    return tuple(batch["inputs"][r, sl].tolist())


def take(it, n):
    return [next(it) for _ in range(n)]


@pytest.mark.parametrize("packing", [True, False])
def test_batch_contract(env, packing):
    p = pipeline(env, packing=packing, num_examples=60)
    # Every segment must equal the tokenization of one record, field for field.
    reference = {}
    for i in p.train_indices:
        ex = p.example_fn(p.source[i])
        reference[tuple(ex["inputs"].tolist())] = ex
    batches = take(p.train_iterator(), 6)
    n_segments = 0
    for b in batches:
        assert set(b) == set(ROW_KEYS)
        assert all(v.shape == (4, 96) for v in b.values())
        assert {k: v.dtype for k, v in b.items()} == {
            "inputs": np.int32,
            "targets": np.int32,
            "loss_mask": np.float32,
            "positions": np.int32,
            "segment_ids": np.int32,
        }
        pad = b["segment_ids"] == 0
        for k in ROW_KEYS:
            assert not b[k][pad].any(), f"{k} must be 0 on padding"
        for r, _, sl in segments(b):
            n_segments += 1
            ex = reference[example_key(b, r, sl)]
            np.testing.assert_array_equal(b["targets"][r, sl], ex["targets"])
            np.testing.assert_array_equal(b["loss_mask"][r, sl], ex["loss_mask"])
            np.testing.assert_array_equal(b["positions"][r, sl], np.arange(sl.stop - sl.start))
            # targets[t] is the next input of the same example; never across a boundary.
            np.testing.assert_array_equal(b["targets"][r, sl][:-1], b["inputs"][r, sl][1:])
            assert b["loss_mask"][r, sl.stop - 1] == 0
            assert b["loss_mask"][r, sl].sum() > 0
    assert n_segments > 24 if packing else n_segments == 24


def test_epochs_cover_every_example_once_and_reshuffle(env):
    p = pipeline(env, packing=False, num_examples=40)
    rows = [
        example_key(b, r, sl) for b in p.train_iterator(num_epochs=2) for r, _, sl in segments(b)
    ]
    assert len(rows) == 80
    first, second = rows[:40], rows[40:]
    assert len(set(first)) == 40 and set(first) == set(second) and first != second
    # Packing drops nothing either: one packed epoch holds each example once.
    packed = pipeline(env, packing=True, num_examples=40, batch_size=1)
    keys = [example_key(b, r, sl) for b in packed.train_iterator(1) for r, _, sl in segments(b)]
    assert sorted(keys) == sorted(first)


def test_tokenized_cache_changes_nothing_but_cost(env):
    cached = pipeline(env, num_examples=40)
    calls = []
    fn = cached.example_fn
    cached.example_fn = lambda record: calls.append(1) or fn(record)
    with_cache = list(cached.train_iterator(num_epochs=3))
    assert len(calls) == 40  # each example tokenized once over three epochs
    without = list(pipeline(env, num_examples=40, cache_examples=0).train_iterator(3))
    assert len(with_cache) == len(without)
    for a, b in zip(with_cache, without, strict=True):
        for key in ROW_KEYS:
            np.testing.assert_array_equal(a[key], b[key])


def test_seed_changes_order_only(env):
    a = next(pipeline(env, packing=False, seed=0).train_iterator())
    b = next(pipeline(env, packing=False, seed=1).train_iterator())
    assert not np.array_equal(a["inputs"], b["inputs"])


def test_nested_subsets_and_stable_validation():
    small, val_s = split_indices(5000, num_examples=1000, validation_size=100, seed=7)
    large, val_l = split_indices(5000, num_examples=3000, validation_size=100, seed=7)
    assert len(small) == 1000 and len(large) == 3000 and len(val_s) == 100
    assert set(small) <= set(large)
    assert np.array_equal(val_s, val_l) and not set(val_l) & set(large)
    everything, _ = split_indices(5000, validation_size=100, seed=7)
    assert len(everything) == 4900
    other, other_val = split_indices(5000, num_examples=1000, validation_size=100, seed=8)
    assert set(other) != set(small) and set(other_val) != set(val_s)
    assert np.array_equal(
        small, split_indices(5000, num_examples=1000, validation_size=100, seed=7)[0]
    )
    with pytest.raises(DataError, match="data.num_examples=4950 but only 4900"):
        split_indices(5000, num_examples=4950, validation_size=100)


def test_pipeline_subsets_nest(env):
    small = pipeline(env, num_examples=50, validation_size=20, subset_seed=3)
    large = pipeline(env, num_examples=200, validation_size=20, subset_seed=3)
    assert set(small.train_indices) < set(large.train_indices)
    assert np.array_equal(small.val_indices, large.val_indices)


@pytest.mark.parametrize("packing,threads", [(True, 0), (False, 0), (True, 2)])
def test_resume_is_exact(env, packing, threads):
    k, more = 5, 7
    kw = dict(packing=packing, num_threads=threads)
    uninterrupted = take(pipeline(env, **kw).train_iterator(), k + more)

    it = pipeline(env, **kw).train_iterator()
    take(it, k)
    state = json.loads(json.dumps(it.get_state()))  # what a checkpoint stores
    fresh = pipeline(env, **kw).train_iterator()
    fresh.set_state(state)
    resumed = take(fresh, more)
    for want, got in zip(uninterrupted[k:], resumed, strict=True):
        for key in ROW_KEYS:
            np.testing.assert_array_equal(want[key], got[key])
    assert fresh.stats.batches == k + more
    with pytest.raises(DataError, match="restart the data"):
        fresh.set_state({**state, "version": 0})


def test_resume_with_worker_processes(env):
    it = pipeline(env, num_workers=2).train_iterator()
    take(it, 2)
    state = json.loads(json.dumps(it.get_state()))
    want = take(it, 2)  # what the uninterrupted run goes on with
    it.close()
    fresh = pipeline(env, num_workers=2).train_iterator()
    fresh.set_state(state)
    for w, got in zip(want, take(fresh, 2), strict=True):
        for key in ROW_KEYS:
            np.testing.assert_array_equal(w[key], got[key])
    fresh.close()


def test_hosts_get_disjoint_shards_that_cover_the_data(env):
    def one_epoch(p):
        return [example_key(b, r, sl) for b in p.train_iterator(1) for r, _, sl in segments(b)]

    seen = []
    for host in range(2):
        p = pipeline(env, packing=False, num_examples=28, process_index=host, process_count=2)
        assert p.host_batch == 2
        seen.append(one_epoch(p))
    assert len(seen[0]) == len(seen[1]) == 14 and not set(seen[0]) & set(seen[1])
    everything = one_epoch(pipeline(env, packing=False, num_examples=28))
    assert set(seen[0]) | set(seen[1]) == set(everything)
    with pytest.raises(DataError, match="not divisible by the 3 processes"):
        pipeline(env, process_index=0, process_count=3)


def test_batches_land_on_the_mesh(env, devices):
    mesh = Mesh(np.array(devices).reshape(4, 2), ("data", "fsdp"))
    sharding = NamedSharding(mesh, PartitionSpec(("data", "fsdp"), None))
    host = next(pipeline(env, batch_size=8).train_iterator())
    on_mesh = next(pipeline(env, batch_size=8, sharding=sharding).train_iterator())
    for key in ROW_KEYS:
        assert isinstance(on_mesh[key], jax.Array) and on_mesh[key].sharding == sharding
        assert on_mesh[key].shape == (8, 96)
        np.testing.assert_array_equal(np.asarray(on_mesh[key]), host[key])
    val = pipeline(env, batch_size=8, validation_size=10, sharding=sharding).validation_batches()
    assert val[0]["inputs"].sharding == sharding


def test_validation_batches_hold_each_example_once(env):
    p = pipeline(env, validation_size=10, num_examples=100)
    batches = p.validation_batches()
    assert len(batches) == 3  # 10 examples in rows of 4: the last batch has 2 empty rows
    keys = [example_key(b, r, sl) for b in batches for r, _, sl in segments(b)]
    want = [tuple(p.example_fn(p.source[i])["inputs"].tolist()) for i in p.val_indices]
    assert keys == want
    assert not batches[-1]["segment_ids"][2:].any() and not batches[-1]["loss_mask"][2:].any()
    hosts = [
        pipeline(env, validation_size=9, process_index=h, process_count=2).validation_batches()
        for h in range(2)
    ]
    assert len(hosts[0]) == len(hosts[1]) == 3  # 5 and 4 examples, batches of 2 rows
    separate = pipeline(env, validation=env["sort"], format="auto").validation_batches()
    assert sum(1 for b in separate for _ in segments(b)) == 80


def test_alpaca_records_and_study_b_options(env):
    p = pipeline(env, train=env["sort"], train_on_inputs=True, alpaca_template="kd_generalization")
    b = next(p.train_iterator())
    assert p.info["alpaca_template"] == "kd_generalization" and p.info["train_on_inputs"]
    for r, _, sl in segments(b):
        assert b["loss_mask"][r, sl][:-1].all()  # prompt tokens are trained too


def test_truncation_is_counted_and_logged(env, caplog):
    it = pipeline(env, max_length=24, packing=False).train_iterator()
    with caplog.at_level(logging.WARNING, logger="kd_jax.data"):
        take(it, 3)
    stats = it.get_state()["stats"]
    assert stats["truncated"] == 12 and stats["truncated_fraction"] == 1.0
    assert "truncated" in caplog.text


def test_stats_and_steps_per_epoch(env):
    p = pipeline(env, packing=False, num_examples=40)
    assert p.steps_per_epoch() == 10
    it = p.train_iterator()
    take(it, 2)
    s = it.stats.summary()
    assert s["rows"] == 8 and s["examples"] == 8 and 0 < s["packing_efficiency"] < 1
    timing = time_batches(it, 3)
    assert timing["batches"] == 3 and timing["seconds_per_batch"] > 0
    assert it.stats.batches == 2 + 1 + 3  # time_batches discards one warm-up batch
    packed = pipeline(env, packing=True, num_examples=40)
    assert 1 <= packed.steps_per_epoch() < 10


def test_tfds_arrayrecord_path_gives_the_same_batches(env):
    from kd_jax.data.tfds_source import prepare_tfds

    folder = prepare_tfds(str(env["root"] / "tfds"), "arith", train=env["arith"])
    assert prepare_tfds(str(env["root"] / "tfds"), "arith", train=env["arith"]) == folder
    a = take(pipeline(env, validation_size=10).train_iterator(), 3)
    b = take(pipeline(env, train=f"tfds:{folder}", validation_size=10).train_iterator(), 3)
    for x, y in zip(a, b, strict=True):
        for key in ROW_KEYS:
            np.testing.assert_array_equal(x[key], y[key])


def test_tokenization_errors_name_the_record(env):
    tok = load_tokenizer(env["tok_dir"])  # a private copy: its template is changed below
    # Starts with the message count, so no shorter conversation renders as a prefix.
    tok.chat_template = "{{ messages | length }}" + tok.chat_template
    p = make_pipeline(DataConfig(train=env["arith"], tokenizer=env["tok_dir"]), tokenizer=tok)
    with pytest.raises(DataError, match=r"train.jsonl line \d+: the chat template .* renders"):
        next(p.train_iterator())


def test_config_from_mapping(env):
    cfg = DataConfig.from_mapping({"train": env["arith"], "max_length": 64})
    assert cfg.max_length == 64 and cfg.packing
    with pytest.raises(DataError, match=r"unknown data config key\(s\) \['max_len'\]"):
        DataConfig.from_mapping({"max_len": 64})
    with pytest.raises(DataError, match="data.max_length=1 is too small"):
        DataConfig(max_length=1)
