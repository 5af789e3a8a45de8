"""The ablation sweeps (research questions 3-4), one definition per sweep.

Each sweep is a list of variants, each variant a {flag name: value} change
of the base configuration (`launch/ablations/run_ablation.py` runs them)."""

from __future__ import annotations

# Ablations (research questions 3-4): one pipeline run per variant, each
# variant a {flag name: value} change of the base configuration.
# RQ4's architectures: ElAraby et al.'s FC baseline (50-20), 100-100,
# LeNet-300-100, their FC4 (200-100-100), FC2 (1000), and a deeper/wider one.
ARCHITECTURES = ((50, 20), (100, 100), (300, 100), (200, 100, 100), (1000,),
                 (500, 500, 500))
# Standard, Madry PGD at 0.1, and PGD with Xiao et al.'s verification-friendly
# ReLU-stability regulariser and L1 decay (their MNIST weights).
TRAINING_RECIPES = (dict(train_epsilon=0.0), dict(train_epsilon=0.1),
                    dict(train_epsilon=0.1, rs_weight=2e-3, l1_weight=2e-5))
# RQ4's pruning methods (PruneStage.method), compared at EQUAL per-layer
# widths on the base network (by default the 300-100 PGD network, trained
# once for all of them) with the same retraining (--retrain, default
# finetune). How the widths are fixed: the `milp` variant runs first and its
# threshold chooses the widths (e.g. 138-70 on the 300-100 network); the
# runner reads them from that variant's pipeline.json (stages.prune
# .widths_after) and runs every other method with --prune_widths set to
# them, each keeping its top-ranked neurons per layer. The MILP at those
# widths keeps exactly the neurons its threshold kept, so it is not rerun.
PRUNING_METHODS = ("milp", "robust_milp", "lp", "magnitude", "random")
# {sweep: its reference variant}: the variants of these sweeps other than the
# reference run at the widths the reference pruned to.
EQUAL_WIDTHS_REFERENCE = {"pruning": dict(prune_method="milp")}
SWEEPS = {
    "pruning": [dict(prune_method=m) for m in PRUNING_METHODS],
    "architectures": [dict(hidden=h) for h in ARCHITECTURES],
    "recipes": list(TRAINING_RECIPES),
    "rq4": [dict(hidden=h, **r) for h in ARCHITECTURES
            for r in TRAINING_RECIPES],
    "delta": [dict(delta=d) for d in (0.02, 0.05, 0.08, 0.1)],
    "widths": [dict(hidden=h) for h in ((100,), (100, 100), (300, 100),
                                        (300, 100, 100))],
    "threshold": [dict(threshold=t) for t in (0.001, 0.01, 0.1, 0.5)],
    "training": [dict(train_epsilon=e) for e in (0.0, 0.1)],
    "retrain": [dict(retrain=r) for r in ("scratch", "finetune", "rewind")],
}
QUICK_SWEEPS = {
    # on the quick base (--quick: a 32-16 network, 5 images): the reference,
    # the robustness-aware MILP and the baseline it must beat
    "pruning": [dict(prune_method=m) for m in ("milp", "robust_milp",
                                               "magnitude")],
    "rq4": [dict(hidden=h, **r) for h in ((16,), (24, 12))
            for r in (dict(train_epsilon=0.1),
                      dict(train_epsilon=0.1, rs_weight=2e-3,
                           l1_weight=2e-5))],
    "delta": [dict(delta=d) for d in (0.02, 0.05, 0.1)],
    "widths": [dict(hidden=h) for h in ((16,), (24, 12), (32, 16, 8))],
}
