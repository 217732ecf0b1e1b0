"""CLI command of the design stage: ``flourish design STUDY.yaml`` (a thin face over flows/design.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from flows.cli.errors import UserError, one_sentence


def design_cmd(
    study: Annotated[Path, typer.Argument(help="The study protocol (YAML); its design section holds the assumptions.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for design-manifest.json and the power-curve chart.")]
    = Path("design-out"),
    nsim: Annotated[int | None, typer.Option("--nsim", min=2, help="Simulated trials per grid cell (default: the "
                                             "design section's nsim, 200).")] = None,
    monitor_nsim: Annotated[int | None, typer.Option("--monitor-nsim", min=2, help="Simulated trials per divergence-"
                                                     "monitor scenario (default: nsim).")] = None,
    no_monitor: Annotated[bool, typer.Option("--no-monitor", help="Skip the divergence-monitor scenarios.")] = False,
    public_nsim: Annotated[int | None, typer.Option("--public-nsim", min=0, help="Simulated trials per epsilon for the "
                                                    "public tier's power and coverage (default: the design "
                                                    "section's public_nsim, else --nsim; 0 skips it).")]
    = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the manifest as JSON for scripts.")] = False,
) -> None:
    """Simulate the preregistered primary analysis before any data exist: power, type I error, bias, RMSE and
    interval coverage per participants x attrition x effect (in MCID multiples), each with its Monte Carlo error,
    and the failure rate apart; then the divergence monitor's detection and false-alarm rates.

    Each simulated trial is drawn as the statistics the warehouse would compute and analysed by the plan's own MMRM
    code, so the numbers are the plan's. Writes design-manifest.json (seeds, versions, grid, protocol hash,
    results: a rerun gives the same summaries) and design-power.html (Altair) into --out.
    """
    from flows.design import design_study

    if not study.is_file():
        raise UserError(f"study protocol {study} does not exist")
    say = (lambda _m: None) if json_out else (lambda m: typer.echo(m, err=True))
    manifest = design_study(study, out, nsim=nsim, monitor_nsim=monitor_nsim, monitor=not no_monitor,
                           public_nsim=public_nsim, progress=say)
    if json_out:
        typer.echo(json.dumps(manifest, indent=2))
        return
    typer.echo(f"{manifest['study_id']}: {manifest['estimator']}, alpha {manifest['alpha']:g}, outcome SD "
               f"{manifest['outcome_sd']:g} ({manifest['outcome_sd_source']}), planned N per arm "
               f"{manifest['planned_participants_per_arm']}")
    head = (f"{'N/arm':>7} {'attr':>5} {'MCID':>5} {'power':>13} {'analytic':>8} {'type I':>13} {'bias':>14} "
            f"{'RMSE':>14} {'coverage':>13} {'failed':>6}")
    typer.echo(head)

    def pm(x, se, f="{:.3f}"):
        return "n/a" if x is None else f"{f.format(x)}±{f.format(se) if se is not None else '?'}"

    for c in manifest["cells"]:
        null = c["effect_mcid_multiple"] == 0
        typer.echo(f"{c['participants_per_arm']:>7} {c['attrition']:>5.0%} {c['effect_mcid_multiple']:>5g} "
                   f"{'-' if null else pm(c['power'], c['power_mcse']):>13} {c['analytic_power']:>8.3f} "
                   f"{pm(c['rejection_rate'], c['rejection_rate_mcse']) if null else '-':>13} "
                   f"{pm(c['bias'], c['bias_mcse'], '{:.2f}'):>14} {pm(c['rmse'], c['rmse_mcse'], '{:.2f}'):>14} "
                   f"{pm(c['coverage'], c['coverage_mcse']):>13} {c['failure_rate']:>6.1%}")
    if manifest["monitor"]:
        need = manifest["monitor_needs_participants_per_arm"]
        typer.echo("divergence monitor: " + (f"{need} participants per arm detect the scenario with 80% probability "
                                             "(analytic)" if need < 10_000_000 else "the scenario's decline is inside "
                                             "the margin: no N detects it as a divergence"))
    for m in manifest["monitor"]:
        typer.echo(f"divergence monitor, {m['scenario']} (N {m['participants_per_arm']}/arm, engagement "
                   f"{m['engagement_effect_sd']:+g} SD, flourishing {m['flourishing_effect_sd']:+g} SD, margin "
                   f"{m['margin_sd']:.2f} SD): divergence at the final wave {pm(m['divergence_rate_final'], m['divergence_rate_final_mcse'])}"
                   f" (analytic {m['analytic_detection_final']:.3f}), at any wave {m['divergence_rate_any_wave']:.3f}, "
                   f"indeterminate {m['indeterminate_rate_final']:.3f}")
    for c in manifest["public"]:
        typer.echo(f"public tier, epsilon {c['epsilon']:g} (release share {c['release_share']:g}, N "
                   f"{c['participants_per_arm']}/arm, 1 MCID): power {pm(c['power'], c['power_mcse'])}, coverage "
                   f"{pm(c['coverage'], c['coverage_mcse'])}, mean interval width {c['mean_interval_width'] or 0:.3g}, "
                   f"failed {c['failure_rate']:.1%}")
    for n in manifest["notes"]:
        typer.echo(f"note: {n}")
    t = manifest["timing"]
    typer.echo(f"{t['trials']} simulated trials in {t['seconds']:.1f} s ({t['trials_per_second']:.1f} trials/s); "
               f"wrote {out / 'design-manifest.json'} and {out / 'design-power.html'}")


def register(app: typer.Typer) -> None:
    app.command("design")(one_sentence(design_cmd))
