"""Statistics and analysis for the report: pure functions of result records.

  stats       Wilson intervals, exact McNemar, Wilcoxon signed-rank, median
              with an order-statistic CI, Newcombe differences of proportions
  curves      per-image verdicts over radii, robustness bands, consistency
              checks, paired verdict tables
  distortion  minimum adversarial distortion intervals, summaries, CDF bands,
              paired comparison
  findings    sentences that claim only what the intervals carry
"""

from robust_prune.analysis import curves
from robust_prune.analysis import distortion
from robust_prune.analysis import findings
from robust_prune.analysis import stats

__all__ = ["curves", "distortion", "findings", "stats"]
