"""The bench report (``python -m lbsim.bench --out DIR``): the claims of the direct-to-Pod design
judged from the simulated numbers (:mod:`lbsim.report.claims`), and ``report.md`` with one section
per scenario (:mod:`lbsim.report.markdown`); see docs/report.md.

The figures are :mod:`lbsim.figures`; the runs themselves are :mod:`lbsim.scenario_run`, below this
package in the pipeline: nothing here runs a simulation or imports the figures.
"""

from ..formatting import fmt_value, slug
from .claims import (CLAIMS, FAIL_THRESHOLD, HOTSPOT_MARGIN, PERSISTENCE_THRESHOLD, Claim, ClaimRow,
                     RunRecord, claims_markdown, claims_text, evaluate_claims)
from .markdown import ReportRun, describe_version, render_markdown

__all__ = ["Claim", "CLAIMS", "ClaimRow", "RunRecord", "ReportRun", "evaluate_claims",
           "claims_markdown", "claims_text", "render_markdown", "describe_version", "fmt_value",
           "slug", "FAIL_THRESHOLD", "PERSISTENCE_THRESHOLD", "HOTSPOT_MARGIN"]
