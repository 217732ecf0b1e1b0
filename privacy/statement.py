"""Render the study's privacy statement (privacy/STATEMENT.md) with its budget and mechanism figures.

Disclosure follows Dwork, Kohli & Mulligan (2019), "Differential privacy in practice: expose your epsilons!":
the privacy unit, epsilon/delta (and rho), the mechanism, what is public and what DP does not protect.
"""

from __future__ import annotations

from pathlib import Path
from privacy.budget import BudgetStatus, epsilon_to_rho
from privacy.release import OPENDP_FEATURES, installed_opendp_version
from schemas.privacy_values import PrivacyUnit
from schemas.protocol import StudyProtocol

TEMPLATE = Path(__file__).with_name("STATEMENT.md")


def render_statement(protocol: StudyProtocol, status: BudgetStatus | None = None, opendp_version: str | None = None) -> str:
    """Markdown privacy statement for ``protocol`` with the spend in ``status`` (None: nothing spent yet)."""
    p = protocol.privacy
    opendp_version = opendp_version or installed_opendp_version()
    if p.mechanism == "gaussian":
        rho_total = epsilon_to_rho(p.epsilon, p.delta)
        mech = (f"Gaussian noise with zero-concentrated DP accounting; the budget is rho = {rho_total:.6g} "
                f"(the largest rho whose conversion fits epsilon = {p.epsilon:g} at delta = {p.delta:g}).")
    else:
        mech = "Laplace noise with pure epsilon-DP accounting (delta = 0); epsilons of releases add up."
    text = TEMPLATE.read_text(encoding="utf-8")
    body = text.split("\n", 1)[1].lstrip("\n")  # drop the template's title line
    values = {
        "study_id": protocol.study_id, "title": protocol.title, "epsilon_total": f"{p.epsilon:g}",
        "delta": f"{p.delta:g}" if p.mechanism == "gaussian" else "0", "mechanism_text": mech,
        "epsilon_spent": f"{status.epsilon_spent:.4g}" if status else "0",
        "releases": str(status.releases if status else 0),
        "rho_text": (f" (rho = {status.rho_spent:.6g} of {status.rho_total:.6g})"
                     if status and status.accounting == "zcdp" else ""),
        "opendp_version": opendp_version, "features": ", ".join(OPENDP_FEATURES),
        "min_cell_size": str(p.min_cell_size), "unit_text": PrivacyUnit.of(protocol).describe(),
    }
    return "# Privacy statement\n\n" + body.format(**values)
