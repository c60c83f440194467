"""Experiment configs: `get_config(arg)` files for ml_collections config flags."""
