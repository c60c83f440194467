"""Losses: every divergence against a float64 NumPy reference written from its formula, then
properties (KL(p, p) = 0, gjsd endpoints, no NaN), chunked == dense in value and gradient,
gradient accumulation, teacher-signal options, Study B's code transcribed, and errors."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kd_jax import losses
from kd_jax.losses import KINDS, KDLossConfig

TOL = dict(rtol=1e-5, atol=1e-5)
# The chunked tests compile many small programs: skipping LLVM's optimisations halves the
# compile time and keeps IEEE float semantics (XLA's graph passes still all run).
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def jit_run(fn, *args):
    return jax.jit(fn).lower(*args).compile(compiler_options=FAST_COMPILE)(*args)


CLEAN_KINDS = ("fkl", "rkl", "gjsd", "skew_fkl", "skew_rkl", "tvd")


# ----------------------------------------------------------------------------- references


def np_softmax(x):
    x = np.asarray(x, np.float64)
    e = np.exp(x - np.max(x))
    return e / e.sum()


def ref_kl(p, q):
    return sum(p[v] * math.log(p[v] / q[v]) for v in range(len(p)) if p[v] > 0)


def ref_divergence(s_row, t_row, kind, tau, beta, skew):
    """One token, float64, straight from the formulas in kd_jax/losses/__init__.py."""
    q = np_softmax(np.float64(s_row) / tau)  # student
    p = np_softmax(np.float64(t_row) / tau)  # teacher
    if kind == "fkl":
        return ref_kl(p, q)
    if kind == "rkl":
        return ref_kl(q, p)
    if kind == "gjsd":
        if beta == 0:
            return ref_kl(p, q)
        if beta == 1:
            return ref_kl(q, p)
        m = beta * p + (1 - beta) * q
        return beta * ref_kl(p, m) + (1 - beta) * ref_kl(q, m)
    if kind == "skew_fkl":
        return ref_kl(p, skew * p + (1 - skew) * q)
    if kind == "skew_rkl":
        return ref_kl(q, skew * q + (1 - skew) * p)
    if kind == "tvd":
        return 0.5 * sum(abs(p[v] - q[v]) for v in range(len(p)))
    if kind == "fkl_studyb":
        pe = p + 1e-9
        return sum(pe[v] * (math.log(pe[v]) - math.log(q[v])) for v in range(len(p)))
    if kind == "rkl_studyb":
        return sum((q[v] + 1e-9) * (math.log(q[v]) - math.log(p[v])) for v in range(len(p)))
    raise AssertionError(kind)


def ref_ce(s_row, target):
    return -math.log(np_softmax(np.float64(s_row))[target])


def ref_kd_loss(s, t, targets, mask, kind, tau, beta, skew, alpha, reduction):
    """Masked mean per real token ("token") or mean of per-row means over non-empty rows."""
    total, count, row_means = 0.0, 0, []
    for b in range(s.shape[0]):
        row_sum, row_count = 0.0, 0
        for i in range(s.shape[1]):
            if mask[b, i]:
                div = ref_divergence(s[b, i], t[b, i], kind, tau, beta, skew)
                row_sum += alpha * tau**2 * div + (1 - alpha) * ref_ce(s[b, i], targets[b, i])
                row_count += 1
        total, count = total + row_sum, count + row_count
        if row_count:
            row_means.append(row_sum / row_count)
    return total / count if reduction == "token" else float(np.mean(row_means))


def random_logits(seed, shape, scale=3.0):
    return np.random.default_rng(seed).normal(scale=scale, size=shape).astype(np.float32)


SHAPE = (3, 5, 41)  # most tests share it, so eager ops compile once
MASK = np.array([[1, 1, 1, 0, 0], [0, 0, 0, 0, 0], [1, 1, 1, 1, 1]], np.int32)  # empty row 1


# ----------------------------------------------------------------------------- divergences

PARAMS = [
    dict(temperature=1.0, beta=0.5, skew=0.1),
    dict(temperature=2.0, beta=0.1, skew=0.3),
    dict(temperature=0.7, beta=0.9, skew=0.0),
]


@pytest.mark.parametrize("params", PARAMS, ids=["tau1", "tau2", "tau0.7"])
@pytest.mark.parametrize("kind", KINDS)
def test_divergence_and_masked_loss_match_numpy_reference(kind, params):
    s, t = random_logits(0, SHAPE), random_logits(1, SHAPE)
    targets = np.random.default_rng(2).integers(0, 41, (3, 5))
    tau, beta, skew = params["temperature"], params["beta"], params["skew"]

    got = losses.token_divergence(jnp.asarray(s), jnp.asarray(t), kind, **params)
    want = [
        [ref_divergence(s[b, i], t[b, i], kind, tau, beta, skew) for i in range(5)]
        for b in range(3)
    ]
    np.testing.assert_allclose(got, want, **TOL)

    for reduction in ("token", "sequence"):
        cfg = KDLossConfig(kind=kind, alpha=0.6, reduction=reduction, **params)
        terms = losses.kd_loss_terms(s, t, targets, MASK, cfg=cfg)
        got = losses.reduce_terms(terms)["loss"]
        want = ref_kd_loss(s, t, targets, MASK, kind, tau, beta, skew, 0.6, reduction)
        np.testing.assert_allclose(got, want, **TOL)
        assert terms["denominator"] == (8 if reduction == "token" else 2)


def test_cross_entropy_matches_numpy_reference():
    s = random_logits(3, SHAPE)
    targets = np.random.default_rng(4).integers(0, 41, (3, 5))
    want = [[ref_ce(s[b, i], targets[b, i]) for i in range(5)] for b in range(3)]
    np.testing.assert_allclose(losses.cross_entropy(s, targets), want, **TOL)


@pytest.mark.parametrize("kind", KINDS)
def test_divergence_of_a_distribution_with_itself_is_zero(kind):
    x = jnp.asarray(random_logits(5, SHAPE))
    for tau in (1.0, 3.0):
        # The Study B variants are off by their 1e-9 smoothing, about V * 1e-9.
        np.testing.assert_allclose(losses.token_divergence(x, x, kind, tau), 0.0, atol=1e-6)


def test_gjsd_endpoints_are_fkl_and_rkl():
    s, t = jnp.asarray(random_logits(6, SHAPE)), jnp.asarray(random_logits(7, SHAPE))
    for tau in (1.0, 2.0):
        fkl = losses.token_divergence(s, t, "fkl", tau)
        rkl = losses.token_divergence(s, t, "rkl", tau)
        np.testing.assert_array_equal(losses.token_divergence(s, t, "gjsd", tau, beta=0.0), fkl)
        np.testing.assert_array_equal(losses.token_divergence(s, t, "gjsd", tau, beta=1.0), rkl)
    # Why the endpoints are defined, not taken from the formula: JSD = beta * fkl + O(beta^2)
    # tends to 0, while JSD / beta tends to fkl (and JSD / (1 - beta) to rkl). The rtol is the
    # O(beta) remainder at beta = 1e-6 for these scale-1 logits.
    p, q = np_softmax(random_logits(6, 50, 1.0)), np_softmax(random_logits(7, 50, 1.0))
    eps = 1e-6
    m = eps * p + (1 - eps) * q
    np.testing.assert_allclose(
        (eps * ref_kl(p, m) + (1 - eps) * ref_kl(q, m)) / eps, ref_kl(p, q), rtol=1e-4
    )
    m = (1 - eps) * p + eps * q
    np.testing.assert_allclose(
        ((1 - eps) * ref_kl(p, m) + eps * ref_kl(q, m)) / eps, ref_kl(q, p), rtol=1e-4
    )


@pytest.mark.parametrize("kind", CLEAN_KINDS)
def test_infinite_and_underflowing_logits_give_no_nan(kind):
    s, t = random_logits(8, (3, 5, 44)), random_logits(9, (3, 5, 44))
    s[..., :3] = t[..., :3] = -np.inf  # vocab rows both models exclude
    s[..., 3], t[..., 4] = -1e30, -1e30  # probabilities that underflow to exactly 0

    def value(s, t):
        return jnp.sum(losses.token_divergence(s, t, kind, 2.0))

    val, grads = jax.value_and_grad(value, argnums=(0, 1))(jnp.asarray(s), jnp.asarray(t))
    assert np.isfinite(val) and all(np.isfinite(g).all() for g in grads)
    # The -inf columns carry no probability: dropping them changes nothing.
    np.testing.assert_allclose(
        losses.token_divergence(s, t, kind, 2.0),
        losses.token_divergence(s[..., 3:], t[..., 3:], kind, 2.0),
        **TOL,
    )

    # Zero teacher probability where the student has mass: fkl stays finite, rkl is +inf.
    t2 = random_logits(10, (3, 5, 44))
    t2[..., :5] = -np.inf
    got = losses.token_divergence(jnp.asarray(s[..., 3:]), jnp.asarray(t2[..., 3:]), kind)
    assert not np.isnan(got).any()
    assert np.isinf(got).all() if kind == "rkl" else np.isfinite(got).all()


# ----------------------------------------------------------------------------- chunked == dense

B, T, DS, DT, V = 2, 7, 8, 6, 37  # 14 tokens; chunk 5 does not divide it


def hidden_inputs(seed, b=B, t=T, vs=V, vt=V):
    """(h_s, w_s, h_t, w_t, targets, mask) with logits of scale ~3 and a ~70% mask."""
    rng = np.random.default_rng(seed)

    def normal(*shape, scale=1.0):
        return jnp.asarray(rng.normal(scale=scale, size=shape), jnp.float32)

    h_s, w_s = normal(b, t, DS), normal(DS, vs, scale=3 / math.sqrt(DS))
    h_t, w_t = normal(b, t, DT), normal(DT, vt, scale=3 / math.sqrt(DT))
    targets = jnp.asarray(rng.integers(0, min(vs, vt), (b, t)), jnp.int32)
    mask = rng.random((b, t)) < 0.7
    mask[0, 0] = True
    return h_s, w_s, h_t, w_t, targets, jnp.asarray(mask, jnp.int32)


def value_and_grads(inputs, calls):
    """For each (fn, cfg, kwargs): the terms and the gradient of loss_sum w.r.t. (h_s, w_s,
    h_t, w_t). All calls share one jit, so the whole list costs one compile."""

    def run(h_s, w_s, h_t, w_t, targets, mask):
        out = []
        for fn, cfg, kw in calls:

            def loss(h_s, w_s, h_t, w_t, fn=fn, cfg=cfg, kw=kw):
                terms = fn(h_s, w_s, h_t, w_t, targets, mask, cfg=cfg, **kw)
                return terms["loss_sum"], terms

            grad_fn = jax.value_and_grad(loss, argnums=(0, 1, 2, 3), has_aux=True)
            (_, terms), grads = grad_fn(h_s, w_s, h_t, w_t)
            out.append((terms, grads))
        return out

    return jit_run(run, *inputs)


def assert_chunked_equals_dense(inputs, cfgs, chunk_size=5, **kw):
    calls = []
    for cfg in cfgs:
        calls += [(losses.dense_kd_loss, cfg, kw), (losses.chunked_kd_loss, cfg, kw)]
        calls[-1] = (losses.chunked_kd_loss, cfg, dict(kw, chunk_size=chunk_size))
    results = value_and_grads(inputs, calls)
    for cfg, (dense, g_dense), (chunk, g_chunk) in zip(
        cfgs, results[::2], results[1::2], strict=True
    ):
        for key in dense:
            np.testing.assert_allclose(chunk[key], dense[key], **TOL, err_msg=f"{key} {cfg}")
        for name, gd, gc in zip(("h_s", "w_s"), g_dense[:2], g_chunk[:2], strict=True):
            assert gc.dtype == gd.dtype and gc.shape == gd.shape
            np.testing.assert_allclose(gc, gd, **TOL, err_msg=f"d {name} {cfg}")
            assert np.abs(gd).max() > 0
        for name, g in zip(("h_t", "w_t") * 2, g_dense[2:] + g_chunk[2:], strict=True):
            if g is not None:
                assert not np.any(g), f"teacher gradient {name} is not exactly zero, {cfg}"


@pytest.mark.parametrize("kind", KINDS)
def test_chunked_equals_dense_for_both_reductions_and_teacher_gets_no_gradient(kind):
    cfgs = [
        KDLossConfig(kind=kind, alpha=0.7, temperature=2.0, beta=0.3, reduction=reduction)
        for reduction in ("token", "sequence")
    ]
    assert_chunked_equals_dense(hidden_inputs(0), cfgs)


def test_closed_form_forward_kl_equals_autodiff():
    """fkl on full teacher logits takes losses/fused.py's closed-form gradient in chunks."""
    cfgs = [
        KDLossConfig(kind="fkl", alpha=alpha, temperature=tau, scale_by_tau_sq=scale)
        for alpha, tau, scale in [
            (1.0, 1.0, True),
            (0.5, 1.0, True),
            (0.3, 0.5, False),
            (0.9, 4.0, True),
        ]
    ]
    assert_chunked_equals_dense(hidden_inputs(3), cfgs)


@pytest.mark.parametrize("case", ["topk", "noise", "vocab_alignment", "sft", "chunk_sizes"])
def test_chunked_equals_dense_with_teacher_options(case):
    inputs = hidden_inputs(1)
    if case == "topk":
        assert_chunked_equals_dense(inputs, [KDLossConfig(kind="rkl", teacher_top_k=6, alpha=0.5)])
    elif case == "noise":
        cfg = KDLossConfig(kind="fkl", teacher_noise_std=2.0)
        assert_chunked_equals_dense(inputs, [cfg], rng=jax.random.key(3))
    elif case == "vocab_alignment":
        cfg = KDLossConfig(kind="skew_rkl", vocab_size=37, alpha=0.5)
        assert_chunked_equals_dense(hidden_inputs(1, vs=40, vt=43), [cfg])
    elif case == "sft":
        h_s, w_s, _, _, targets, mask = inputs
        sft_inputs = (h_s, w_s, None, None, targets, mask)
        assert_chunked_equals_dense(sft_inputs, [KDLossConfig(alpha=0.0)])
    elif case == "chunk_sizes":
        # 1000: one chunk of all 14 tokens, no padding; 1: one token per chunk.
        for chunk_size in (1000, 1):
            assert_chunked_equals_dense(inputs, [KDLossConfig("gjsd")], chunk_size=chunk_size)


def test_cached_topk_equals_online_topk():
    """The offline-cache path (teacher top-k values and indices) gives the online top-k loss."""
    inputs = hidden_inputs(2)
    h_s, w_s, h_t, w_t, targets, mask = inputs
    t_logits = jnp.einsum("btd,dv->btv", h_t, w_t)
    # A cache may store temperature-1 log-probs instead of logits: same result.
    cache = {"teacher_topk": losses.teacher_topk(jax.nn.log_softmax(t_logits), 4)}
    online = KDLossConfig(kind="fkl", teacher_top_k=4, temperature=2.0)
    cached = KDLossConfig(kind="fkl", temperature=2.0)

    def online_teacher(h_s, w_s, _no_h_t, _no_w_t, targets, mask, **kw):
        return losses.chunked_kd_loss(h_s, w_s, h_t, w_t, targets, mask, **kw)

    (want, g_want), *got = value_and_grads(
        (h_s, w_s, None, None, targets, mask),
        [
            (online_teacher, online, {"chunk_size": 5}),
            (losses.chunked_kd_loss, cached, dict(cache, chunk_size=5)),
            (losses.dense_kd_loss, cached, cache),
        ],
    )
    for terms, grads in got:
        np.testing.assert_allclose(terms["loss_sum"], want["loss_sum"], **TOL)
        np.testing.assert_allclose(grads[1], g_want[1], **TOL)


def test_gradient_accumulation_equals_full_batch():
    h_s, w_s, h_t, w_t, targets, mask = hidden_inputs(4, b=4, t=6)
    mask = mask.at[2].set(0)  # an empty row in the second half

    def loss_sum(w_s, rows, cfg):
        terms = losses.chunked_kd_loss(
            h_s[rows], w_s, h_t[rows], w_t, targets[rows], mask[rows], chunk_size=5, cfg=cfg
        )
        return terms["loss_sum"], terms

    def full_and_halves(w_s):
        out = {}
        for reduction in ("token", "sequence"):
            cfg = KDLossConfig(kind="gjsd", alpha=0.8, temperature=2.0, reduction=reduction)
            grad = jax.value_and_grad(loss_sum, has_aux=True)
            out[reduction] = [
                grad(w_s, rows, cfg) for rows in (slice(0, 4), slice(0, 2), slice(2, 4))
            ]
        return out

    for reduction, results in jit_run(full_and_halves, w_s).items():
        ((_, full), g_full), ((_, half1), g1), ((_, half2), g2) = results
        denominator = losses.loss_denominator(mask, reduction)
        summed = jax.tree.map(jnp.add, half1, half2)
        assert summed["denominator"] == full["denominator"] == denominator
        np.testing.assert_allclose(
            losses.reduce_terms(summed)["loss"], losses.reduce_terms(full)["loss"], **TOL
        )
        np.testing.assert_allclose((g1 + g2) / denominator, g_full / denominator, **TOL)


def test_chunked_loss_on_a_sharded_batch_equals_unsharded(devices):
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    h_s, w_s, h_t, w_t, targets, mask = hidden_inputs(5, b=8, t=5)
    cfg = KDLossConfig(kind="rkl", alpha=0.5)
    calls = [(losses.chunked_kd_loss, cfg, {"chunk_size": 16})]
    ((want, g_want),) = value_and_grads((h_s, w_s, h_t, w_t, targets, mask), calls)
    batch = NamedSharding(Mesh(np.array(devices), ("data",)), PartitionSpec("data"))
    h_s, h_t, targets, mask = (jax.device_put(x, batch) for x in (h_s, h_t, targets, mask))
    ((got, g_got),) = value_and_grads((h_s, w_s, h_t, w_t, targets, mask), calls)
    np.testing.assert_allclose(got["loss_sum"], want["loss_sum"], **TOL)
    for a, b in zip(g_got[:2], g_want[:2], strict=True):
        np.testing.assert_allclose(a, b, **TOL)


def test_bfloat16_inputs_give_bfloat16_gradients_as_close_to_float32_as_dense():
    inputs = hidden_inputs(6)
    inputs16 = tuple(x.astype(jnp.bfloat16) if x.dtype == jnp.float32 else x for x in inputs)
    cfg = KDLossConfig(kind="fkl", alpha=0.5)
    ((_, g_ref),) = value_and_grads(inputs, [(losses.dense_kd_loss, cfg, {})])
    results = value_and_grads(
        inputs16,
        [(losses.dense_kd_loss, cfg, {}), (losses.chunked_kd_loss, cfg, {"chunk_size": 5})],
    )
    for _, grads in results:
        for g, ref in zip(grads[:2], g_ref[:2], strict=True):
            assert g.dtype == jnp.bfloat16
            # bf16 keeps 8 significant bits (~0.4%); both paths round the same matmul inputs.
            assert np.abs(np.float32(g) - ref).max() <= 1e-2 * np.abs(ref).max()


def test_chunked_program_memory_scales_with_the_chunk_not_the_batch():
    """From the compiled programs' memory analysis: dense holds several [B*T, V] float32
    tensors; chunked temporaries are a few [chunk, V] and do not grow with the batch."""
    t, v, chunk = 128, 4096, 16
    cfg = KDLossConfig(kind="gjsd", alpha=0.5)

    def temp_bytes(fn, b, **kw):
        def loss(h_s, w_s, h_t, w_t, targets, mask):
            return fn(h_s, w_s, h_t, w_t, targets, mask, cfg=cfg, **kw)["loss_sum"]

        f32, i32 = jnp.float32, jnp.int32
        shapes = [((b, t, DS), f32), ((DS, v), f32), ((b, t, DT), f32), ((DT, v), f32)]
        specs = [jax.ShapeDtypeStruct(*x) for x in shapes + [((b, t), i32)] * 2]
        grad = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
        compiled = grad.lower(*specs).compile(compiler_options=FAST_COMPILE)
        return compiled.memory_analysis().temp_size_in_bytes

    logits_bytes = 4 * t * v * 4  # one [B*T, V] float32 tensor at B = 4
    assert temp_bytes(losses.dense_kd_loss, 4) >= 2 * logits_bytes
    small = temp_bytes(losses.chunked_kd_loss, 4, chunk_size=chunk)
    large = temp_bytes(losses.chunked_kd_loss, 8, chunk_size=chunk)
    assert small < logits_bytes / 2
    assert large - small < chunk * v * 4  # doubling B*T adds less than one [chunk, V] block


# ----------------------------------------------------------------------------- teacher signal


def test_teacher_noise_is_keyed_per_token_and_has_the_requested_scale():
    logits = jnp.zeros((64, 1000))
    rng = jax.random.key(7)
    noisy = losses.add_teacher_noise(logits, rng, 2.0)
    np.testing.assert_array_equal(noisy, losses.add_teacher_noise(logits, rng, 2.0))
    assert abs(float(jnp.std(noisy)) / 2.0 - 1) < 0.03 and abs(float(jnp.mean(noisy))) < 0.05
    np.testing.assert_array_equal(losses.add_teacher_noise(logits, rng, 0.0), logits)
    # Token 10's row is the same whichever group of tokens it is drawn with (chunk-invariant).
    alone = losses.teacher_noise(rng, jnp.array([10]), 1000)
    np.testing.assert_array_equal(alone[0], noisy[10] / 2.0)
    assert not np.allclose(noisy[10], noisy[11])
    with pytest.raises(ValueError, match="sigma must be a finite number >= 0; got -1"):
        losses.add_teacher_noise(logits, rng, -1.0)
    with pytest.raises(ValueError, match="needs an rng key"):
        losses.add_teacher_noise(logits, None, 1.0)


def test_topk_divergence_matches_the_documented_formula():
    s, t = random_logits(11, SHAPE), random_logits(12, SHAPE)
    k, tau = 5, 2.0
    values, indices = losses.teacher_topk(jnp.asarray(t), k)
    np.testing.assert_array_equal(indices, np.argsort(-t, axis=-1)[..., :k])
    got = losses.topk_token_divergence(s, values, indices, "skew_fkl", tau, skew=0.2)
    for b in range(3):
        for i in range(5):
            top = np.argsort(-t[b, i])[:k]
            # Both distributions renormalised over the teacher's top-k support.
            want = ref_divergence(s[b, i, top], t[b, i, top], "skew_fkl", tau, 0.5, 0.2)
            np.testing.assert_allclose(got[b, i], want, **TOL)
    full = losses.topk_token_divergence(s, *losses.teacher_topk(jnp.asarray(t), 41), "fkl", tau)
    np.testing.assert_allclose(full, losses.token_divergence(s, t, "fkl", tau), **TOL)
    for bad in (0, 42, 2.5):
        with pytest.raises(ValueError, match=r"top-k must be an integer in \[1, 41\]"):
            losses.teacher_topk(jnp.asarray(t), bad)
    with pytest.raises(ValueError, match="must both be"):
        losses.topk_token_divergence(s, values, indices[..., :3], "fkl")


def test_vocab_alignment_truncates_padding_rows_and_rejects_a_too_small_vocab():
    student, teacher = jnp.ones((2, 3, 151936)), jnp.ones((2, 3, 152064))
    s, t = losses.align_vocab(student, teacher, vocab_size=151665)
    assert s.shape[-1] == t.shape[-1] == 151665
    with pytest.raises(ValueError, match=r"sizes \[151936, 152064\] to the tokenizer's 152000"):
        losses.align_vocab(student, teacher, vocab_size=152000)
    with pytest.raises(ValueError, match="vocab_size must be a positive integer"):
        losses.align_vocab(student, vocab_size=0)

    s, t = random_logits(13, (3, 5, 44)), random_logits(14, (3, 5, 47))
    targets, mask = np.zeros((3, 5), np.int32), np.ones((3, 5), np.int32)
    cfg = KDLossConfig(kind="fkl", vocab_size=41)
    got = losses.kd_loss_terms(s, t, targets, mask, cfg=cfg)["loss_sum"]
    want = losses.token_divergence(s[..., :41], t[..., :41], "fkl").sum()
    np.testing.assert_allclose(got, want, **TOL)
    with pytest.raises(ValueError, match="Student vocab 44 and teacher vocab 47 differ"):
        losses.kd_loss_terms(s, t, targets, mask, cfg=KDLossConfig())
    with pytest.raises(ValueError, match="must have the same shape; align the vocabularies"):
        losses.token_divergence(s, t, "fkl")


# ----------------------------------------------------------------------------- Study B's code


def study_b_sequence_kl(student, teacher, temperature, pad_mask, reverse):
    """NumPy transcription of sequence_kl_divergence / sequence_reverse_kl_divergence in
    LCS2-IIITD/KD_generalization generative/kd_trainer.py (float64)."""
    s = student / temperature
    t = teacher / temperature
    s = s - s.max(-1, keepdims=True)
    t = t - t.max(-1, keepdims=True)
    s_logp = s - np.log(np.exp(s).sum(-1, keepdims=True))
    t_logp = t - np.log(np.exp(t).sum(-1, keepdims=True))
    if reverse:
        kl = ((np.exp(s_logp) + 1e-9) * (s_logp - t_logp)).sum(-1)
    else:
        target = np.exp(t_logp) + 1e-9  # F.kl_div(input, target) = target (log target - input)
        kl = (target * (np.log(target) - s_logp)).sum(-1)
    kl = kl * pad_mask
    sequence_loss = kl.sum(-1) / pad_mask.sum(-1)
    return sequence_loss.mean() * temperature**2


def study_b_generalized_jsd(student, teacher, labels, beta):
    """Their generalized_jsd_loss: M = beta p_S + (1 - beta) p_T (= ours at beta 0.5), pooled."""
    s_logp = student - np.log(np.exp(student).sum(-1, keepdims=True))
    t_logp = teacher - np.log(np.exp(teacher).sum(-1, keepdims=True))
    m_logp = np.logaddexp(s_logp + np.log(beta), t_logp + np.log(1 - beta))
    kl_t = (np.exp(t_logp) * (t_logp - m_logp)).sum(-1)
    kl_s = (np.exp(s_logp) * (s_logp - m_logp)).sum(-1)
    jsd = beta * kl_t + (1 - beta) * kl_s
    mask = labels != -100
    return jsd[mask].sum() / mask.sum()


@pytest.mark.parametrize("temperature", [1.0, 2.0, 5.0])
def test_study_b_variants_equal_their_code(temperature):
    s, t = random_logits(15, SHAPE), random_logits(16, SHAPE)
    mask = np.array([[1] * 5, [0, 0, 1, 1, 1], [0, 0, 0, 0, 1]], np.int32)  # left padding
    targets = np.zeros((3, 5), np.int32)
    for kind, reverse in (("fkl_studyb", False), ("rkl_studyb", True)):
        cfg = KDLossConfig(kind=kind, temperature=temperature, reduction="sequence")
        got = losses.reduce_terms(losses.kd_loss_terms(s, t, targets, mask, cfg=cfg))["loss"]
        want = study_b_sequence_kl(np.float64(s), np.float64(t), temperature, mask, reverse)
        np.testing.assert_allclose(got, want, **TOL)
    labels = np.where(mask == 1, 0, -100)
    got = losses.reduce_terms(losses.kd_loss_terms(s, t, targets, mask, cfg=KDLossConfig("gjsd")))
    want = study_b_generalized_jsd(np.float64(s), np.float64(t), labels, 0.5)
    np.testing.assert_allclose(got["loss"], want, **TOL)


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(kind="kl"), "Unknown divergence kind 'kl'; choose one of fkl, rkl, gjsd"),
        (dict(temperature=0.0), "temperature must be a finite number > 0; got 0.0"),
        (dict(temperature=-1), "temperature must be a finite number > 0; got -1"),
        (dict(temperature=float("inf")), "temperature must be a finite number > 0; got inf"),
        (dict(beta=1.5), r"beta must be in \[0, 1\] \(0 = fkl, 1 = rkl\); got 1.5"),
        (dict(skew=1.0), r"skew must be in \[0, 1\) \(DistiLLM uses 0.1\); got 1.0"),
        (dict(alpha=-0.1), r"alpha must be in \[0, 1\] \(0 = SFT\); got -0.1"),
        (dict(reduction="mean"), "Unknown reduction 'mean'; choose one of token, sequence"),
        (dict(teacher_top_k=-3), "teacher_top_k must be an integer >= 0"),
        (dict(teacher_noise_std=-1.0), "teacher_noise_std must be a finite number >= 0"),
        (dict(vocab_size=0), "vocab_size must be a positive integer; got 0"),
    ],
)
def test_bad_config_values_raise_one_clear_sentence(kwargs, message):
    with pytest.raises(ValueError, match=message):
        KDLossConfig(**kwargs)


def test_bad_calls_raise_one_clear_sentence():
    h_s, w_s, h_t, w_t, targets, mask = hidden_inputs(0)
    call = losses.chunked_kd_loss
    with pytest.raises(ValueError, match="chunk_size must be a positive integer; got 0"):
        call(h_s, w_s, h_t, w_t, targets, mask, chunk_size=0, cfg=KDLossConfig())
    with pytest.raises(ValueError, match="alpha = 1.0 needs a teacher"):
        call(h_s, w_s, None, None, targets, mask, chunk_size=4, cfg=KDLossConfig())
    with pytest.raises(ValueError, match="teacher_noise_std > 0 needs an rng key"):
        call(
            h_s, w_s, h_t, w_t, targets, mask, chunk_size=4, cfg=KDLossConfig(teacher_noise_std=1.0)
        )
    with pytest.raises(ValueError, match=r"targets \(2, 6\) and mask \(2, 7\) must both be"):
        call(h_s, w_s, h_t, w_t, targets[:, :6], mask, chunk_size=4, cfg=KDLossConfig())
    with pytest.raises(ValueError, match=r"Expected h_s \[B, T, D\] and w_s \[D, V\]"):
        call(h_s, w_s.T, h_t, w_t, targets, mask, chunk_size=4, cfg=KDLossConfig())
    with pytest.raises(ValueError, match="Pass both h_t and w_t, or neither"):
        call(h_s, w_s, h_t, None, targets, mask, chunk_size=4, cfg=KDLossConfig())
    values, indices = jnp.zeros((2, 7, 3)), jnp.zeros((2, 7, 3), jnp.int32)
    with pytest.raises(ValueError, match="act on full teacher logits, not on a cached top-k"):
        call(
            h_s,
            w_s,
            None,
            None,
            targets,
            mask,
            chunk_size=4,
            cfg=KDLossConfig(teacher_top_k=2),
            teacher_topk=(values, indices),
        )
    with pytest.raises(ValueError, match=r"must both be \[B, T, K\]"):
        call(
            h_s,
            w_s,
            None,
            None,
            targets,
            mask,
            chunk_size=4,
            cfg=KDLossConfig(),
            teacher_topk=(values, indices[:1]),
        )
    with pytest.raises(ValueError, match="Unknown divergence kind 'js'"):
        losses.token_divergence(h_s, h_s, "js")
