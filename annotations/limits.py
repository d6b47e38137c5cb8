"""Length limits of every free-text field a user writes, in one place.

Services refuse longer text with a 400 naming the field and its limit (never truncate), the
API serializers declare the same ``max_length`` so the OpenAPI schema states it, and the
pages show the limit with a live counter (``text_limits_for_pages``). Change a limit here
and every layer follows.
"""

from __future__ import annotations

# Review (expert)
COMMENT = 5000  # verdict comment
FREE_TAG = 100  # one free tag
FREE_TAGS = 50  # how many free tags on one review
EVIDENCE_REGIONS = 100  # regions on one image
EVIDENCE_POINTS = 500  # points of one polygon
REGION_CONCEPT = 200  # the concept name attached to a region
SKIP_REASON = 500
DRAFT_BYTES = 256 * 1024  # a draft is any JSON object; this is its size once encoded

# Scientists' and approvers' text
NAME = 200  # project, dataset, model version, round names; labels and concepts
DESCRIPTION = 5000  # project and dataset descriptions, model version notes
INSTANCE_COMMENT = 5000  # the discussion thread on an instance
ROUND_DESCRIPTION = 5000


def text_limits_for_pages() -> dict[str, int]:
    """What the review page's counters need, as ``{field: max characters}``."""
    return {
        "comment": COMMENT,
        "free_tag": FREE_TAG,
        "free_tags": FREE_TAGS,
        "skip_reason": SKIP_REASON,
    }


def too_long_message(limit: int, length: int) -> str:
    return f"At most {limit:,} characters; this has {length:,}. Nothing was saved."
