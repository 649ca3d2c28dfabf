"""GitLab publisher: one commit and one merge request per request, safe to re-run.

- ``publisher``: ``GitLabPublisher``, the call sequence and its budget;
- ``client``: the per-publish conversation (retries, error translation, tokens, kept
  HTTP sessions);
- ``commit``: read the branch, plan, commit once;
- ``merge_request``: open or adopt the merge request; the reconciler's read.
"""

from app.core.publish.gitlab.client import GitLabObserver
from app.core.publish.gitlab.publisher import GitLabPublisher

__all__ = ["GitLabObserver", "GitLabPublisher"]
