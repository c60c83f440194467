"""Evaluation: tasks and answer extraction, log-likelihood scoring, fidelity, statistics.

tasks     the registry (Study B's 14 tasks, the built-in CPU tasks) and prompts
extract   Study B's faithful extraction and the strict alternative
metrics   accuracy, chrF, ROUGE-L, corpus BLEU
loglik    the reference `loglikelihood` for kd_jax models; multiple choice
fidelity  agreement, rationale BLEU, token KL(teacher || student), top-1 agreement
stats     t-test, ANOVA, Spearman, bootstrap CIs, Study B's aggregation
harness   `evaluate(...)`: predictions JSONL and scores JSON/CSV
ifeval, bbh, gpqa   Study A's general evaluations (registered by study_a_tasks)
responses `score_responses`: score a file of responses without a model
"""

# Imported for its registrations: Study A's tasks join the registry with the package.
from kd_jax.evaluation import study_a_tasks  # noqa: F401
from kd_jax.evaluation.extract import MODES
from kd_jax.evaluation.fidelity import (
    agreement,
    fidelity_from_predictions,
    rationale_bleu,
    token_kl,
    top1_agreement,
    write_fidelity,
)
from kd_jax.evaluation.generation import make_generate
from kd_jax.evaluation.harness import evaluate
from kd_jax.evaluation.loglik import make_loglikelihood, model_logits_fn
from kd_jax.evaluation.tasks import (
    GROUPS,
    TASKS,
    EvalError,
    PromptOptions,
    Task,
    chat_renderer,
    get_task,
    register,
    resolve,
)

__all__ = [
    "GROUPS",
    "MODES",
    "TASKS",
    "EvalError",
    "PromptOptions",
    "Task",
    "agreement",
    "chat_renderer",
    "evaluate",
    "fidelity_from_predictions",
    "get_task",
    "make_generate",
    "make_loglikelihood",
    "model_logits_fn",
    "rationale_bleu",
    "register",
    "resolve",
    "token_kl",
    "top1_agreement",
    "write_fidelity",
]
