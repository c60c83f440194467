"""The `kd-jax` command line: one module per group of commands, one config-flag parser.

flags       `--config FILE[:arg]` and `--config.key=value` for every command that takes a
            config; `--workdir`
commands    train, quickstart, export, generate, data, sweep, report, miniature
model_jobs  eval, cache-teacher, synthesize, plan (commands that load or compile models
            outside training)
Library modules never import this package: it parses arguments and calls them.
"""
