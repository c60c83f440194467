"""Packing is invisible to the model: packed, padded and lone examples give the same loss."""

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kd_jax.data import DataConfig, build_tokenizer, make_pipeline, write_builtin_data
from kd_jax.models import Decoder, presets


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("pack_model")
    write_builtin_data(str(root / "data"), seed=1, scale=0.01, families=("arith",))
    tok_dir = build_tokenizer(str(root / "tok"))
    base = dict(
        train=str(root / "data" / "chat" / "arith" / "train.jsonl"),
        tokenizer=tok_dir,
        max_length=160,
        batch_size=2,
    )
    # Two open rows: the first packed batch then holds the first examples of the order,
    # which the padded pipeline below yields first too.
    packed = make_pipeline(DataConfig(packing=True, num_packing_bins=2, **base))
    padded = make_pipeline(DataConfig(packing=False, **base), tokenizer=packed.tokenizer)
    model = Decoder(
        presets.get(
            "tiny-llama", vocab_size=len(packed.tokenizer), dtype="float32", param_dtype="float32"
        ),
        rngs=flax.nnx.Rngs(0),
    )
    return packed, padded, model


@flax.nnx.jit
def forward(model, inputs_BxT, positions_BxT, segment_ids_BxT):
    return model(inputs_BxT, positions=positions_BxT, segment_ids=segment_ids_BxT)


def per_example_loss(model, batch) -> dict[tuple, float]:
    """Mean next-token cross-entropy over each example's supervised targets, keyed by tokens."""
    logits_BxTxV = forward(
        model,
        jnp.asarray(batch["inputs"]),
        jnp.asarray(batch["positions"]),
        jnp.asarray(batch["segment_ids"]),
    )
    logp_BxTxV = jax.nn.log_softmax(logits_BxTxV.astype(jnp.float32), axis=-1)
    nll_BxT = -np.asarray(
        jnp.take_along_axis(logp_BxTxV, jnp.asarray(batch["targets"])[..., None], -1)[..., 0]
    )
    out = {}
    for r, seg in enumerate(batch["segment_ids"]):
        for s in range(1, seg.max() + 1):
            sel = seg == s
            mask = batch["loss_mask"][r][sel]
            key = tuple(batch["inputs"][r][sel].tolist())
            out[key] = float((nll_BxT[r][sel] * mask).sum() / mask.sum())
    return out


def test_packed_batch_gives_the_same_per_example_loss(setup):
    packed, padded, model = setup
    batch = next(packed.train_iterator())
    assert (batch["segment_ids"].max(axis=1) >= 2).all(), "rows must hold several examples"
    from_packed = per_example_loss(model, batch)

    # The same examples unpacked: one per row, padded to the same length, in one batch.
    rows = []
    for r, seg in enumerate(batch["segment_ids"]):
        for s in range(1, seg.max() + 1):
            sel = seg == s
            n = int(sel.sum())
            row = {k: np.zeros_like(batch[k][r]) for k in batch}
            for k in ("inputs", "targets", "loss_mask"):
                row[k][:n] = batch[k][r][sel]
            row["positions"][:n] = np.arange(n)
            row["segment_ids"][:n] = 1
            rows.append(row)
    unpacked = {k: np.stack([row[k] for row in rows]) for k in batch}
    alone = per_example_loss(model, unpacked)
    assert from_packed.keys() == alone.keys()
    for key, loss in from_packed.items():
        np.testing.assert_allclose(loss, alone[key], rtol=1e-5, atol=1e-5)

    # One example with no padding at all: padding changes nothing either.
    n = int((unpacked["segment_ids"][0] > 0).sum())
    exact = per_example_loss(model, {k: v[:1, :n] for k, v in unpacked.items()})
    (key,) = exact
    np.testing.assert_allclose(exact[key], from_packed[key], rtol=1e-5, atol=1e-5)

    # And padded rows from the pipeline (one example per row) agree too.
    from_padded = {}
    it = padded.train_iterator()
    while len(from_padded) < 12:
        from_padded.update(per_example_loss(model, next(it)))
    assert from_packed.keys() <= from_padded.keys()
    for key in from_packed:
        np.testing.assert_allclose(from_packed[key], from_padded[key], rtol=1e-5, atol=1e-5)
