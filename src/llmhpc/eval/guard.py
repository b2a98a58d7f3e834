"""Accuracy guard: an evaluation's acc and acc_norm against a reference's (the reference scorer on the same
model, or a recorded metrics file) within a tolerance in points; per-item agreement of two predictions files.

    python -m llmhpc.eval.guard --metrics M --reference R [--tolerance-pt 0.5]
    python -m llmhpc.eval.guard --predictions A --reference-predictions B
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

KEYS = ("acc", "acc_norm")


class AccuracyGuardError(RuntimeError):
    """acc or acc_norm differs from the reference by more than the tolerance."""


def _metrics(m) -> dict:
    return json.loads(Path(m).read_text(encoding="utf-8")) if isinstance(m, (str, Path)) else m


def check_metrics(metrics, reference, tolerance_pt: float = 0.5, keys=KEYS) -> dict:
    """{key: {value, reference, delta_pt}, tolerance_pt, ok}; raises AccuracyGuardError when a key is off."""
    got, ref = _metrics(metrics), _metrics(reference)
    report, bad = {"tolerance_pt": tolerance_pt}, []
    for key in keys:
        if key not in got or key not in ref:
            raise AccuracyGuardError(f"accuracy guard: '{key}' missing from "
                                     f"{'the metrics' if key not in got else 'the reference'}")
        delta = 100.0 * (float(got[key]) - float(ref[key]))
        report[key] = {"value": got[key], "reference": ref[key], "delta_pt": round(delta, 4)}
        if abs(delta) > tolerance_pt:
            bad.append(f"{key} {100 * float(got[key]):.2f} vs reference {100 * float(ref[key]):.2f} "
                       f"({delta:+.2f} pt)")
    report["ok"] = not bad
    if bad:
        where = f" ({reference})" if isinstance(reference, (str, Path)) else ""
        raise AccuracyGuardError(f"accuracy guard: {'; '.join(bad)}: outside the tolerance of "
                                 f"{tolerance_pt} pt of the reference{where}")
    return report


def read_predictions(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def agreement(rows, reference_rows) -> dict:
    """Per-item agreement of two predictions (lists of rows or paths): shared items, the fraction with the same
    pred and pred_norm, the largest log-likelihood difference, the items that differ (first 20)."""
    a = {r["index"]: r for r in (read_predictions(rows) if isinstance(rows, (str, Path)) else rows)}
    b = {r["index"]: r for r in (read_predictions(reference_rows) if isinstance(reference_rows, (str, Path))
                                 else reference_rows)}
    shared = sorted(set(a) & set(b))
    if not shared:
        return {"items": 0, "only_in_first": len(a), "only_in_second": len(b)}
    same_pred = sum(a[i]["pred"] == b[i]["pred"] for i in shared)
    same_norm = sum(a[i]["pred_norm"] == b[i]["pred_norm"] for i in shared)
    max_ll = max(abs(x - y) for i in shared for x, y in zip(a[i]["loglikelihoods"], b[i]["loglikelihoods"]))
    differ = [i for i in shared if (a[i]["pred"], a[i]["pred_norm"]) != (b[i]["pred"], b[i]["pred_norm"])]
    return {
        "items": len(shared), "only_in_first": len(set(a) - set(b)), "only_in_second": len(set(b) - set(a)),
        "pred_agreement": same_pred / len(shared), "pred_norm_agreement": same_norm / len(shared),
        "max_abs_loglikelihood_diff": max_ll, "differing_items": differ[:20],
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--metrics")
    ap.add_argument("--reference")
    ap.add_argument("--tolerance-pt", type=float, default=0.5)
    ap.add_argument("--predictions")
    ap.add_argument("--reference-predictions")
    a = ap.parse_args(argv)
    if a.predictions and a.reference_predictions:
        print(json.dumps(agreement(Path(a.predictions), Path(a.reference_predictions)), indent=1))
    if a.metrics and a.reference:
        try:
            print(json.dumps(check_metrics(Path(a.metrics), Path(a.reference), a.tolerance_pt), indent=1))
        except AccuracyGuardError as err:
            print(err, file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
