"""The merge-quality score: a check's raw measures normalised to 0..1 and combined with stated weights.

Pure functions over stored numbers (no I/O, no TensorFlow): a check stores its raw measures and the
score computed from them, and the overtraining rule can recompute every earlier check's score with
the current weights, so checks stay comparable when the weights change.

Each component is 0..1, higher is better:
- identity: how far the merged faces moved from the dst person towards the src person, measured by
  the embedder's cosine to the src identity: 0 at the unmerged dst faces' similarity, 1 at the
  held-out src faces' own similarity (what a real photo of the src person scores);
- expression: 1 minus the eye and mouth landmark error (over the inter-ocular distance) as a share
  of `expression_limit`, the error at which the expression no longer follows the dst at all;
- sharpness: the merged face's Laplacian variance over the src faces' median, folded so that too
  sharp (noise) counts like too soft: min(r, 1/r);
- artefacts: 1 minus the share of face pixels driven to pure black or white, over `artefact_limit`;
- held-out loss: 1 at a new best (lowest) held-out src loss, falling as 1 - scale·ln(loss / best so
  far) when the loss rises above it; the best so far counts the checks up to this one only, so a
  stored score never changes afterwards.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Sequence

from curate import options
from curate.errors import FacesmithError
from curate.options import OptionSpec, declare

RULES = ("quality", "heldout-loss")
COMPONENTS = ("identity", "expression", "sharpness", "artefacts", "heldout_loss")


class CheckSettingsError(FacesmithError):
    """A merge-check option has the wrong type, is out of range, or is unknown."""


@dataclass(frozen=True)
class CheckSettings:
    """How merge checks judge a model: which rule decides, the score's weights and the flag's patience.

    The weights were chosen from measured runs (see the README, "Merge checks"); they need not sum
    to 1: the score is their weighted mean over the components a check could measure.
    """

    check_rule: str = declare("quality", "What decides the best iteration and the overtraining flag: quality (the "
                        "merge-quality score of the merged held-out frames) or heldout-loss (the held-out "
                        "src reconstruction loss alone).", choices=RULES)
    check_weight_identity: float = declare(0.3, "Weight of identity (merged faces' likeness to the src person, from "
                                     "the unmerged dst to a real src photo) in the quality score.",
                                     minimum=0.0, maximum=10.0)
    check_weight_expression: float = declare(0.3, "Weight of expression fidelity (eyes and mouth follow the dst) in "
                                       "the quality score.", minimum=0.0, maximum=10.0)
    check_weight_sharpness: float = declare(0.1, "Weight of sharpness relative to the src faces in the quality score.",
                                      minimum=0.0, maximum=10.0)
    check_weight_artefacts: float = declare(0.1, "Weight of artefacts (face pixels clipped to black or white) in the "
                                      "quality score.", minimum=0.0, maximum=10.0)
    check_weight_heldout_loss: float = declare(0.3, "Weight of the held-out src loss (how far above its best so far) "
                                               "in the quality score.", minimum=0.0, maximum=10.0)
    check_expression_limit: float = declare(0.25, "Eye and mouth landmark error (over the inter-ocular distance) at "
                                      "which expression scores 0.", minimum=0.01, maximum=2.0)
    check_artefact_limit: float = declare(0.05, "Share of clipped face pixels at which artefacts score 0.",
                                          minimum=0.001, maximum=1.0)
    check_loss_scale: float = declare(4.0, "How fast the held-out loss component falls as the loss rises above its "
                                      "best so far: 1 - scale*ln(loss/best); at 4, 10% above the best scores 0.62 "
                                      "and 28% above scores 0.", minimum=0.1, maximum=100.0)
    check_patience: int = declare(3, "Checks in a row worse than the best (training loss falling) that raise the "
                            "overtraining flag.", minimum=1, maximum=100)
    check_quality_margin: float = declare(0.075, "How far below its best the quality score must be to count as worse "
                                    "(score units; smaller moves are noise).", minimum=0.0, maximum=1.0)
    check_loss_margin: float = declare(0.05, "How far above its best the held-out loss must be to count as worse "
                                 "(a share of the best) under the heldout-loss rule.", minimum=0.0, maximum=1.0)

    def option_values(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @property
    def weights(self) -> dict[str, float]:
        return {name: getattr(self, f"check_weight_{name}") for name in COMPONENTS}


def check_option_specs() -> tuple[OptionSpec, ...]:
    """The declarations of every merge-check option."""
    return options.option_specs(CheckSettings)


def resolve_check_settings(values: dict[str, Any]) -> CheckSettings:
    """Validated check settings from option values; missing ones default. Raises CheckSettingsError."""
    specs = {spec.name: spec for spec in check_option_specs()}
    unknown = sorted(set(values) - set(specs))
    if unknown:
        raise CheckSettingsError(f"unknown merge-check option(s): {', '.join(unknown)}")
    coerced = {}
    for name, value in values.items():
        coerced[name] = options.coerce(specs[name], value, CheckSettingsError, "merge-check option")
        options.check_range(specs[name], coerced[name], CheckSettingsError, "merge-check option")
    settings = CheckSettings(**coerced)
    if not any(weight > 0 for weight in settings.weights.values()):
        raise CheckSettingsError("at least one quality weight must be above 0")
    return settings


@dataclass(frozen=True)
class QualityComponents:
    """One check's normalised components, 0..1 (higher is better), NaN where not measured."""

    identity: float
    expression: float
    sharpness: float
    artefacts: float
    heldout_loss: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def _clip(value: float) -> float:
    return min(1.0, max(0.0, value)) if math.isfinite(value) else math.nan


def identity_component(merged: float, dst_baseline: float, src_reference: float) -> float:
    """0 at the unmerged dst faces' cosine to the src identity, 1 at the held-out src faces' own."""
    span = src_reference - dst_baseline
    if not (math.isfinite(merged) and math.isfinite(span)) or span <= 0.05:
        return math.nan  # the embedder cannot tell the two people apart: nothing to measure against
    return _clip((merged - dst_baseline) / span)


def expression_component(error: float, limit: float) -> float:
    return _clip(1.0 - error / limit)


def sharpness_component(ratio: float) -> float:
    if not math.isfinite(ratio) or ratio <= 0:
        return math.nan
    return min(ratio, 1.0 / ratio)


def artefact_component(share: float, limit: float) -> float:
    return _clip(1.0 - share / limit)


def loss_component(loss: float, best: float, scale: float) -> float:
    """1 when `loss` is the best (lowest) held-out loss so far, 1 - scale·ln(loss / best) above it."""
    if not (math.isfinite(loss) and math.isfinite(best)) or best <= 0 or loss <= 0:
        return math.nan
    return _clip(1.0 - scale * math.log(loss / best))


def components(check: dict[str, Any], best_loss: float, settings: CheckSettings) -> QualityComponents:
    """Normalise one stored check (a merge_checks row as a dict; None where not measured); `best_loss`
    is the lowest held-out loss of the checks up to and including this one."""
    def value(name: str) -> float:
        raw = check.get(name)
        return math.nan if raw is None else float(raw)

    return QualityComponents(
        identity=identity_component(value("identity_similarity"), value("dst_identity_similarity"),
                                    value("src_identity_similarity")),
        expression=expression_component(value("expression_error"), settings.check_expression_limit),
        sharpness=sharpness_component(value("sharpness_ratio")),
        artefacts=artefact_component(value("artefact_score"), settings.check_artefact_limit),
        heldout_loss=loss_component(value("validation_src_loss"), best_loss, settings.check_loss_scale))


def combine(parts: QualityComponents, weights: dict[str, float]) -> float:
    """The weighted mean of the measured components (NaN when none was measured)."""
    total = weight_sum = 0.0
    for name, value in parts.to_dict().items():
        weight = weights[name]
        if weight > 0 and math.isfinite(value):
            total += weight * value
            weight_sum += weight
    return total / weight_sum if weight_sum > 0 else math.nan


def best_loss(checks: Sequence[dict[str, Any]]) -> float:
    """The lowest finite held-out src loss of `checks` (NaN when none was measured)."""
    values = [float(c["validation_src_loss"]) for c in checks if c.get("validation_src_loss") is not None]
    finite = [value for value in values if math.isfinite(value)]
    return min(finite) if finite else math.nan


def quality_scores(checks: Sequence[dict[str, Any]], settings: CheckSettings) -> list[float]:
    """Every check's quality score (oldest first) under `settings`, each against the best loss up to it."""
    scores, best = [], math.inf
    for check in checks:
        best = min(best, best_loss([check]) if check.get("validation_src_loss") is not None else math.inf)
        scores.append(combine(components(check, best if math.isfinite(best) else math.nan, settings), settings.weights))
    return scores


__all__ = ["COMPONENTS", "RULES", "CheckSettings", "CheckSettingsError", "QualityComponents", "artefact_component",
           "best_loss",
           "check_option_specs", "combine", "components", "expression_component", "identity_component",
           "loss_component", "quality_scores", "resolve_check_settings", "sharpness_component"]
