"""The report's figures, rendered to PNG bytes (written with the rest of the
report, all or nothing)."""

from __future__ import annotations

import io as io_lib
from typing import Mapping, Sequence

import numpy as np

from robust_prune.report.tables import NUM_CLASSES


def pyplot():
  """matplotlib.pyplot on the Agg backend (no display needed)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def png_bytes(plt, fig) -> bytes:
  """The figure as PNG bytes (laid out, then closed)."""
  buffer = io_lib.BytesIO()
  try:
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=120)
  finally:
    plt.close(fig)
  return buffer.getvalue()


def plot_counts_and_transfer(summary: Mapping) -> bytes:
  plt = pyplot()
  fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
  nets = list(summary["networks"])
  axes[0].bar(nets, [summary["networks"][n]["counts"]["adversarial"]
                     for n in nets], color=["tab:blue", "tab:orange"])
  # Found by PGD, the branch and bound or the MILP, whichever decided.
  axes[0].set_title("adversarial examples found (verified)")
  reverse = [summary["networks"][n]["reverse_accuracy"] for n in nets]
  names = [f"{n} on\n{'pruned' if n == 'original' else 'original'}'s"
           for n in nets]
  axes[1].bar(names, [100 * (a or 0.0) for a in reverse],
              color=["tab:blue", "tab:orange"])
  for i, a in enumerate(reverse):
    if a is None:  # no examples to test on: no bar, not a 0% bar
      axes[1].text(i, 1, "n/a\n(no examples)", ha="center", va="bottom")
  axes[1].set_title("reverse-testing accuracy (%)")
  return png_bytes(plt, fig)


def plot_heatmaps(confusions: Mapping[str, np.ndarray]) -> bytes:
  plt = pyplot()
  fig, axes = plt.subplots(1, len(confusions), figsize=(5 * len(confusions), 4.3))
  axes = np.atleast_1d(axes)
  for ax, (net, counts) in zip(axes, confusions.items()):
    im = ax.imshow(counts, cmap="viridis")
    for t in range(NUM_CLASSES):
      for y in range(NUM_CLASSES):
        if counts[t, y]:
          ax.text(y, t, str(counts[t, y]), ha="center", va="center",
                  color="w", fontsize=7)
    ax.set_xlabel("image label")
    ax.set_ylabel("target label")
    ax.set_xticks(range(NUM_CLASSES))
    ax.set_yticks(range(NUM_CLASSES))
    ax.set_title(f"{net}: adversarial examples")
    fig.colorbar(im, ax=ax, fraction=0.046)
  return png_bytes(plt, fig)


def plot_example_grid(records: Sequence[Mapping], images: np.ndarray,
                      max_rows: int = 8) -> bytes:
  """Original | adversarial | difference, with true and target labels."""
  plt = pyplot()
  found = [r for r in records if r["status"] == "adversarial"][:max_rows]
  for r in found:
    if not 0 <= r["image_index"] < len(images):
      raise ValueError(f"an adversarial record of image {r['image_index']} "
                       f"is not one of the {len(images)} test images")
  rows = max(len(found), 1)
  fig, axes = plt.subplots(rows, 3, figsize=(5.4, 1.9 * rows), squeeze=False)
  for ax in axes.ravel():
    ax.axis("off")
  for row, r in zip(axes, found):
    x = np.asarray(images[r["image_index"]]).reshape(28, 28)
    x_adv = np.asarray(r["x_adv"]).reshape(28, 28)
    row[0].imshow(x, cmap="gray", vmin=0, vmax=1)
    row[0].set_title(f"{r.get('network', '')} #{r['image_index']} label "
                     f"{r['label']}", fontsize=8)
    row[1].imshow(x_adv, cmap="gray", vmin=0, vmax=1)
    row[1].set_title(f"adversarial -> {r['target']}", fontsize=8)
    diff = x_adv - x
    bound = max(float(np.abs(diff).max()), 1e-6)
    row[2].imshow(diff, cmap="seismic", vmin=-bound, vmax=bound)
    row[2].set_title(f"difference (max {bound:.3f})", fontsize=8)
  if not found:
    axes[0, 1].text(0.5, 0.5, "no adversarial examples", ha="center")
  return png_bytes(plt, fig)


COLORS = {"original": "tab:blue", "pruned": "tab:orange"}


def plot_curve(curve: Mapping) -> bytes:
  """Both networks' robust-accuracy bands against delta: the proven lower
  bound (verified robust), the upper bound (1 - proven non-robust), and
  the undecided images between them shaded."""
  plt = pyplot()
  fig, ax = plt.subplots(figsize=(5.5, 3.8))
  for net, rows in curve["bands"].items():
    x = [r["delta"] for r in rows]
    low = [100 * (r["lower_bound"] or 0.0) for r in rows]
    high = [100 * (r["upper_bound"] or 0.0) for r in rows]
    color = COLORS.get(net)
    ax.fill_between(x, low, high, color=color, alpha=0.2)
    ax.plot(x, low, "o-", color=color, label=f"{net}: proven robust")
    ax.plot(x, high, "s--", color=color, label=f"{net}: 1 - proven adversarial")
  ax.set(xlabel="delta (L-inf radius)", ylabel="robust accuracy (%)",
         ylim=(0, 100), title="verified robustness curve")
  ax.legend(fontsize=7)
  return png_bytes(plt, fig)


def plot_distortion_cdf(bands: Mapping) -> bytes:
  """Both networks' CDF bands of the minimum adversarial distortion: the
  true empirical CDF lies between the fraction of images proven to have at
  most that distortion (a witness) and the fraction not proven to have more
  (no robustness proof that far)."""
  plt = pyplot()
  fig, ax = plt.subplots(figsize=(5.5, 3.8))
  for net, band in bands.items():
    if not len(band.grid):
      continue
    color = COLORS.get(net)
    ax.step(band.grid, band.proven, where="post", color=color,
            label=f"{net}: proven <= x ({band.images} images)")
    ax.step(band.grid, band.possible, where="post", color=color,
            linestyle="--", label=f"{net}: possibly <= x")
    ax.fill_between(band.grid, band.proven, band.possible, step="post",
                    color=color, alpha=0.15)
  ax.set(xlabel="minimum adversarial L-inf distortion",
         ylabel="fraction of images", ylim=(0, 1),
         title="minimum distortion CDF (proven band)")
  ax.legend(fontsize=7)
  return png_bytes(plt, fig)


# The names launch/ablations/run_ablation.py imports.
_pyplot, _png = pyplot, png_bytes
