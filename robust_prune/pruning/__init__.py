"""MILP neuron-importance pruning (issue 4): scores, structural pruning,
baselines, critical-neuron analysis and the prune -> retrain loop.

    eq10             the scored network, its MILP rows (ElAraby et al. eq. 10:
                     `scored_relu_rows`) and the objective
                     (`importance_objective`, `objective_costs`)
    importance_milp  the importance MILP of one batch (`build_importance_milp`)
    descent          `pattern_descent`, the MILP's primal heuristic
    importance       `importance_scores`: descent start, solve, refine,
                     fallback (and the package's names for all of the above)
    batch            the batch: first correct images per class, checks
    structure        keep masks, physical removal, baselines
    methods          the ranking methods (milp, robust_milp, lp, magnitude,
                     random) and their keep masks at equal widths
    critical         critical-neuron sets and `critical_analysis`
    options          `PruneOptions`
    rounds           the prune -> retrain rounds
    loop             `run_pruning`, the entry of the prune binary
"""
