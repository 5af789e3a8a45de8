"""robust_prune: adversarial training, MILP pruning and exact MILP verification
of ReLU MNIST classifiers."""
