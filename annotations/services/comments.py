"""The discussion thread of an instance: scientists and approvers leave notes on a case
("same stool artefact as #812", "label looks wrong, ask the annotator") that outlive any
single review round."""

from __future__ import annotations

from typing import Any

from annotations import limits
from annotations.models import Instance, InstanceComment
from annotations.services._errors import check_text, field_error

# Long enough for a paragraph of reasoning with a pasted snippet, short enough that the
# thread stays readable and nobody pastes a whole log into it.
COMMENT_MAX_LENGTH = limits.INSTANCE_COMMENT


def comment_add(*, instance: Instance, author: Any, body: str) -> InstanceComment:
    """Append a comment to the instance's thread. The caller has checked access (the author
    reads the instance's details). Raises ValidationError on ``body`` when it is blank or
    longer than COMMENT_MAX_LENGTH; nothing is written then."""
    text = (body or "").strip()
    if not text:
        raise field_error("body", "Write something before posting.")
    check_text("body", text, COMMENT_MAX_LENGTH)
    return InstanceComment.objects.create(instance=instance, author=author, body=text)
