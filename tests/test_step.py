"""The jitted train step: teacher isolation, sharding invariance, accumulation, NaN skips."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from kd_jax import step as step_lib
from kd_jax import train
from kd_jax.optim import learning_rate_schedule, make_optimizer


def _setup(config):
    r = train.setup(config)
    batch = next(r.pipeline.train_iterator())
    opt = make_optimizer(config.optim, 10)
    sched = learning_rate_schedule(config.optim, 10)
    step = functools.partial(
        step_lib.train_step, optimizer=opt, schedule=sched, grad_accum=1, **r.loss_kw
    )
    return r, batch, opt, step


def _host(tree):
    return jax.tree.map(lambda x: np.asarray(jax.device_get(x)), tree)


def test_teacher_gets_zero_gradient_and_stays_fixed(tiny_config):
    r, batch, opt, step = _setup(tiny_config("kd"))
    t_params, t_frozen = r.context["teacher"]

    def loss_wrt_teacher(tp):
        terms = step_lib.loss_terms(
            r.student.trainable,
            r.student.frozen,
            (tp, t_frozen),
            batch,
            jax.random.key(0),
            **r.loss_kw,
        )
        return terms["loss_sum"]

    grads = jax.grad(loss_wrt_teacher)(t_params)
    assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree.leaves(grads))
    before = _host(t_params)
    state = step_lib.init_state(r.student.trainable, opt)
    new_state, metrics = jax.jit(step)(state, batch, jax.random.key(0), r.context)
    assert float(metrics["divergence"]) > 0
    for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(_host(t_params)), strict=True):
        np.testing.assert_array_equal(a, b)
    moved = [
        np.abs(a - b).max()
        for a, b in zip(
            jax.tree.leaves(_host(state["params"])),
            jax.tree.leaves(_host(new_state["params"])),
            strict=True,
        )
    ]
    assert max(moved) > 0


def test_eight_devices_equal_one_device(tiny_config):
    config = tiny_config("kd")
    config.mesh.update(data=2, fsdp=2, tensor=2)
    r8, batch8, opt, step8 = _setup(config)
    state8 = step_lib.init_state(r8.student.trainable, opt)
    out8 = jax.jit(step8)(state8, batch8, jax.random.key(1), r8.context)

    one = jax.devices()[:1]
    host = lambda t: jax.device_put(_host(t), one[0])  # noqa: E731
    context1 = host(r8.context)
    state1 = step_lib.init_state(host(r8.student.trainable), opt)
    out1 = jax.jit(step8)(state1, host(batch8), jax.random.key(1), context1)
    assert r8.student.trainable["embed"]["embedding"].sharding.mesh.size == 8
    for a, b in zip(jax.tree.leaves(_host(out8)), jax.tree.leaves(_host(out1)), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("method", ["sft", "kd"])
def test_gradient_accumulation_equals_full_batch(tiny_config, method):
    """4 micro-batches give the full batch's metrics and gradients. The update is plain SGD
    at lr 1 (params move by exactly -grad): Adam's first step, g / (|g| + eps), would turn
    float rounding in gradients near eps = 1e-8 into parameter differences up to ~lr."""
    r, batch, _, step = _setup(tiny_config(method))
    sgd = optax.sgd(1.0)
    state = step_lib.init_state(r.student.trainable, sgd)
    full_step = functools.partial(step.func, **{**step.keywords, "optimizer": sgd})
    full = jax.jit(full_step)(state, batch, jax.random.key(2), r.context)
    acc_step = functools.partial(full_step.func, **{**full_step.keywords, "grad_accum": 4})
    accum = jax.jit(acc_step)(state, batch, jax.random.key(2), r.context)
    for k in ("loss", "ce", "divergence", "grad_norm", "num_tokens"):
        np.testing.assert_allclose(float(full[1][k]), float(accum[1][k]), rtol=1e-5, atol=1e-6)
    for a, b in zip(jax.tree.leaves(_host(full[0])), jax.tree.leaves(_host(accum[0])), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_sft_is_kd_with_alpha_zero(tiny_config):
    sft = tiny_config("sft")
    kd = tiny_config("kd")
    kd.kd.alpha = 0.0
    outs = []
    for config in (sft, kd):
        r, batch, opt, step = _setup(config)
        state = step_lib.init_state(r.student.trainable, opt)
        outs.append(jax.jit(step)(state, batch, jax.random.key(3), r.context))
    np.testing.assert_allclose(float(outs[0][1]["loss"]), float(outs[1][1]["loss"]), rtol=1e-6)
    for a, b in zip(
        jax.tree.leaves(_host(outs[0][0])), jax.tree.leaves(_host(outs[1][0])), strict=True
    ):
        np.testing.assert_allclose(a, b, atol=1e-7)


def test_non_finite_step_is_skipped_and_counted(tiny_config):
    r, batch, opt, step = _setup(tiny_config("sft"))
    state = step_lib.init_state(r.student.trainable, opt)
    bad = dict(batch)
    bad["loss_mask"] = batch["loss_mask"] * jnp.nan  # poisons loss and gradient
    jstep = jax.jit(step)
    before = _host(state)
    state, metrics = jstep(state, bad, jax.random.key(0), r.context)
    assert int(metrics["bad_steps"]) == 1 and int(metrics["skipped"]) == 1
    for a, b in zip(
        jax.tree.leaves(before["params"]), jax.tree.leaves(_host(state["params"])), strict=True
    ):
        np.testing.assert_array_equal(a, b)
    state, metrics = jstep(state, bad, jax.random.key(0), r.context)
    assert int(metrics["bad_steps"]) == 2
    state, metrics = jstep(state, batch, jax.random.key(0), r.context)
    assert int(metrics["bad_steps"]) == 0 and int(metrics["skipped"]) == 2
    assert np.isfinite(float(metrics["loss"]))


def test_lora_trains_only_adapters(tiny_config):
    config = tiny_config("sft")
    config.student.lora.enabled = True
    config.student.lora.rank = 2
    r, batch, opt, step = _setup(config)
    names = {
        "/".join(map(str, p)) for p, _ in jax.tree_util.tree_leaves_with_path(r.student.trainable)
    }
    assert names and all("lora_" in n for n in names)
    state = step_lib.init_state(r.student.trainable, opt)
    new_state, _ = jax.jit(step)(state, batch, jax.random.key(0), r.context)
    assert "embed" in r.context["frozen"]
