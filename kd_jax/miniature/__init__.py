"""The miniature study suite: both studies' findings reproduced (or not) on a CPU.

    kd-jax miniature --workdir runs/mini            # the full suite (docs/)
    kd-jax miniature --workdir runs/mini_smoke --smoke
    kd-jax miniature --workdir runs/mini --docs docs  # also write docs/miniature.md

conditions  the runs: teachers, students per finding, the low-resource recipes (read it
            for what each finding compares)
suite       runs them on the sweep machinery (kd_jax.sweep), plus the teacher cache and
            the synthetic data they need; resumes; timings
findings    findings (a)-(d) with 95% CIs, the Markdown report and its figures
"""
