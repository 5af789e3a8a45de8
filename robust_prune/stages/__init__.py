"""The pipeline's research-question stages (robust_prune.pipeline runs them):

  critical.py  RQ1/RQ2: importance scores of both networks on one batch,
               clean and under PGD (OUT/critical.json)
  transfer.py  reverse testing, extended to more test images when the
               verify stage's give too few examples (OUT/transfer.json)
  ablation.py  the causal test: the original without its most accuracy-
               critical, most robustness-critical or random neurons
               (OUT/ablation.json, OUT/ablation/)
"""
