"""Moved: the verification cascade is `robust_prune.verify` (cascade,
records, runner). These names stay importable from here for old callers."""

from robust_prune.verify.cascade import (  # pylint: disable=unused-import
    BOX_TOLERANCE, CERTIFY_CUTOFF, MIN_DISTORTION_MARGIN, MODES, STATUSES,
    VerifyConfig, check_witness, model_start, pgd_candidates, verify_image)
