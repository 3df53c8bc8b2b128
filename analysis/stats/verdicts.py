"""What a verdict may say, and the multiplicity corrections every family of verdicts goes through.

A verdict is a published claim, so each one comes from a named test with a
null hypothesis, a minimum number of seeds and a multiplicity family, and
reads its decision from the family's adjusted p-value:

- claims (the paper's three, pseudo-time and temporal): :data:`SUPPORTED` when
  the Holm-adjusted p (within the claim's family, across cells) is below
  :data:`ALPHA`, else :data:`NOT_SUPPORTED`;
- contrasts (signal minus a control): :data:`BEYOND` when the
  Benjamini-Hochberg-adjusted p (over the report's contrasts) is below
  :data:`ALPHA`, else :data:`WITHIN`;
- :func:`insufficient` ("insufficient seeds (needs N)") where the test cannot
  reach :data:`ALPHA` with the seeds at hand, whatever the data: never
  "not supported" or "within" then; such a test is left out of its family;
- :data:`UNTESTED` where there is nothing to test (no finished run, no value,
  no spread), with the reason in the row's detail;
- :data:`SATURATED` for a test on H_eff where most runs lie beyond
  H_opt +/- 3 sigma_H (a Gaussian's tail, not a measurement): left out of its
  family; the same test on H_raw is reported beside it;
- :data:`MEASUREMENT` for a comparison that is not a null (the order
  comparison): its value is reported as what it measures, with no verdict.

Examples
--------
>>> holm([0.01, 0.04, 0.03])
[0.03, 0.06, 0.06]
>>> [round(q, 3) for q in benjamini_hochberg([0.01, 0.04, 0.03])]
[0.03, 0.04, 0.04]
>>> insufficient(5)
'insufficient seeds (needs 5)'
"""
from __future__ import annotations

import math

#: The nominal level of every test, and the family-wise (Holm) or false-discovery (BH) level of each family.
ALPHA = 0.05
SUPPORTED, NOT_SUPPORTED = "supported", "not supported"
BEYOND, WITHIN = "beyond", "within"
UNTESTED = "untested"
SATURATED = "H_eff saturated"
MEASUREMENT = "measurement"
INSUFFICIENT = "insufficient seeds"
#: The multiplicity correction of each kind of family.
HOLM, BH = "holm", "benjamini-hochberg"


def insufficient(needs: int) -> str:
    """The verdict of a test that cannot reach :data:`ALPHA` with the seeds at hand; ``needs`` seeds can."""
    return f"{INSUFFICIENT} (needs {needs})"


def is_insufficient(verdict) -> bool:
    """True for a verdict made by :func:`insufficient`."""
    return isinstance(verdict, str) and verdict.startswith(INSUFFICIENT)


def _finite(p) -> bool:
    return p is not None and not (isinstance(p, float) and math.isnan(p))


def holm(pvalues) -> list:
    """Holm's step-down adjusted p-values (family-wise error at most the level), in the input's order.

    None (or NaN) entries are not tests: they stay None and do not count in the family's size.
    """
    idx = [i for i, p in enumerate(pvalues) if _finite(p)]
    m = len(idx)
    out = [None] * len(pvalues)
    running = 0.0
    for rank, i in enumerate(sorted(idx, key=lambda i: pvalues[i])):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        out[i] = running
    return out


def benjamini_hochberg(pvalues) -> list:
    """Benjamini-Hochberg adjusted p-values (false-discovery rate at most the level), in the input's order.

    None (or NaN) entries are not tests: they stay None and do not count in the family's size.
    """
    idx = [i for i, p in enumerate(pvalues) if _finite(p)]
    m = len(idx)
    out = [None] * len(pvalues)
    running = 1.0
    for rank, i in reversed(list(enumerate(sorted(idx, key=lambda i: pvalues[i]), start=1))):
        running = min(running, m * pvalues[i] / rank)
        out[i] = min(1.0, running)
    return out
