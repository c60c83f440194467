"""Test setup: JAX on CPU with 8 simulated devices, float32 matmuls at full precision."""

import os
import tempfile

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# One compilation cache per test session (subprocesses inherit it): identical programs,
# such as a tiny model's init, compile once.
os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR", tempfile.mkdtemp(prefix="kd_jax_test_xla_cache_")
)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")


@pytest.fixture(scope="session")
def devices():
    devs = jax.devices()
    assert len(devs) == 8, "tests expect 8 simulated CPU devices"
    return devs


@pytest.fixture(scope="session")
def builtin_dir(tmp_path_factory):
    """The built-in data and tokenizer, generated once per test session."""
    from kd_jax.data import builtin_paths

    path = tmp_path_factory.mktemp("builtin")
    os.environ["KD_JAX_BUILTIN_DIR"] = str(path / "b")
    builtin_paths.ensure()
    return path / "b"


@pytest.fixture(scope="session")
def tiny_config(builtin_dir):
    """A seconds-long run on built-in data: 8-row batches, 48 tokens, tiny models."""
    from configs import tiny_compare

    def make(arg="sft"):
        c = tiny_compare.get_config(arg)
        c.student.preset = "tiny-student-xs"
        if arg == "kd":
            c.teacher.preset = "tiny-student"
        c.data.max_length = 48
        c.data.batch_size = 8
        c.data.validation = ""
        c.data.validation_size = 16
        c.data.train = "builtin:chat/arith/human"
        c.data.num_examples = 0
        c.data.packing = True
        if arg == "kd":  # both loss terms, at a temperature other than 1
            c.kd.alpha, c.kd.temperature = 0.5, 2.0
        c.train.num_steps = 6
        c.train.log_every = 1
        c.train.eval_every = 3
        c.train.eval_batches = 1
        c.train.checkpoint_every = 3
        c.train.progress_bar = False
        c.train.async_checkpointing = False
        c.kd.chunk_size = 128
        c.optim.warmup_steps = 0
        return c

    return make


@pytest.fixture(scope="session")
def eval_model():
    """(model, tokenizer): one tiny random model over the built-in tokenizer, shared by the
    evaluation tests so that their compiled sampling programs are reused."""
    from kd_jax.data import builtin_paths, load_tokenizer
    from kd_jax.models import presets
    from kd_jax.models.init import create_model

    tok = load_tokenizer(str(builtin_paths.ensure() / "tokenizer"))
    return create_model(presets.get("tiny-student-xs", vocab_size=len(tok)), seed=0), tok
