"""MILP neuron-importance pruning (issue 4): scores, structural pruning,
baselines, critical-neuron analysis and the prune -> retrain loop."""
