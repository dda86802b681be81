"""An image's report record from what its job gave (or the reason it did not run): the one place
a backend's result becomes an outcome, with text people read masked and data kept exact."""

from __future__ import annotations

from moltbuild.backends.contract import ImageResult
from moltbuild.plan.planner import BuildPlan, ImagePlan
from moltbuild.report import ImageRecord, Outcome
from moltbuild.system.console import mask_known_secrets


def _outcome(plan: BuildPlan, result: ImageResult, *, reused: bool, error: str) -> Outcome:
    if error:  # a failed push after a good build keeps its image: `invoke push` can retry it
        return Outcome.PUSH_FAILED if result.image_id and plan.push else Outcome.FAILED
    if result.pushed and result.digest:
        return Outcome.REUSED if reused else Outcome.PUSHED
    return Outcome.BUILT


def to_record(
    plan: BuildPlan,
    image: ImagePlan,
    result: ImageResult | None,
    *,
    reused: bool = False,
    error: str = "",
    smoke: str = "",
) -> ImageRecord:
    """One image's record: its one outcome, and the result as evidence."""
    result = result or ImageResult(None, image.platforms, 0.0)
    return ImageRecord(
        name=image.name,
        repository=image.repository,
        tags=list(image.tags),
        digest=result.digest,
        input_digest=image.input_digest,
        backend=plan.backend,
        platforms=list(result.platforms),
        duration_s=round(result.duration_s, 2),
        pin_tag=image.pin_tag,
        outcome=_outcome(plan, result, reused=reused, error=error),
        image_id=result.image_id,
        revision=image.revision or plan.git.sha,
        backend_reason=plan.backend_reason,
        log_path=str(result.log_path) if result.log_path else None,
        smoke=mask_known_secrets(result.smoke or smoke),  # text people read: masked; data stays exact
        push=plan.push,
        size_bytes=result.size_bytes,
        error=mask_known_secrets(error),
        cache=result.cache,
    )
