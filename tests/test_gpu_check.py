"""benchmarks/gpu_check.py imports and runs its attention parity at the dry-run shape on
CPU (the GPU flash kernel in Pallas interpret mode)."""

import importlib.util
import os

PATH = os.path.join(os.path.dirname(__file__), os.pardir, "benchmarks", "gpu_check.py")


def test_gpu_check_attention_rows_at_the_dry_run_shape():
    spec = importlib.util.spec_from_file_location("gpu_check", PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rows = {r[0]: r[1:] for r in module.attention_rows(module.DRY, repeats=1)}
    assert max(rows["float32"][:4]) < 1e-5  # out, dq, dk, dv
    assert max(rows["bfloat16"][:4]) < 3e-2  # bf16 keeps 8 significant bits
