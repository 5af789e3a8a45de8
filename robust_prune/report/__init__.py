"""The paper's tables and figures, generated from result files.

    python -m robust_prune.report --out_dir=OUT

reads what the pipeline wrote into OUT (`original/`, `pruned/`,
`verify_original.jsonl`, `verify_pruned.jsonl` (the paper radius),
`verify_{net}_delta{r}.jsonl` (the curve's other radii), `transfer.json`,
`pipeline.json`) and writes `report.md`, CSV tables and PNG figures there.
Nothing in the report is typed by hand: every number comes from those files.
A results file that fails validation stops the report with its file:line,
and every output is rendered before the first is written (all or none).

  tables.py    counts, rates, per-class tables, statistics (pure)
  science.py   the robustness curve, minimum distortion, RQ3 (pure; from
               robust_prune.analysis)
  figures.py   the PNG figures (bytes)
  markdown.py  report.md
  files.py     reading OUT, writing the report
"""

from robust_prune.report.files import (build_summary, csv_text, read_curve,
                                       read_records, render_files,
                                       results_name, write_csv, write_report)
from robust_prune.report.figures import (plot_counts_and_transfer,
                                         plot_example_grid, plot_heatmaps)
from robust_prune.report.markdown import render_markdown
from robust_prune.report.tables import (NETWORKS, NUM_CLASSES, PAPER, SEARCHED,
                                        confusion_counts, decided_by_counts,
                                        describe, generation_seconds,
                                        per_class_table, search_statistics,
                                        status_counts, verified_robust_accuracy)
