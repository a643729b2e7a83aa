"""inbox: the approval queue's decision service, web inbox and terminal renderers.

Public names: `decide`, `approve`, `reject`, `proposal_view`, `resume_decided`, `DecisionOutcome`, `default_actor` (from `inbox.service`);
the web app is `inbox.web.create_app` / `inbox.web.serve` and the CLI renderers live in `inbox.render`. Those
two are not imported here, so `import inbox` stays light (no FastAPI, no Rich).
"""

from pipewarden.inbox.service import (
    DecisionOutcome,
    ProposalView,
    approve,
    decide,
    default_actor,
    proposal_view,
    reject,
    resume_decided,
    view,
)

__all__ = ["DecisionOutcome", "ProposalView", "approve", "decide", "default_actor", "proposal_view", "reject",
           "resume_decided", "view"]
