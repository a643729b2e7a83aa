"""inbox: the approval queue's decision service, web inbox and terminal renderers.

Public names: `approve`, `reject`, `resume_decided`, `DecisionOutcome`, `default_actor` (from `inbox.service`);
the web app is `inbox.web.create_app` / `inbox.web.serve` and the CLI renderers live in `inbox.render`. Those
two are not imported here, so `import inbox` stays light (no FastAPI, no Rich).
"""

from inbox.service import DecisionOutcome, ProposalView, approve, default_actor, reject, resume_decided, view

__all__ = ["DecisionOutcome", "ProposalView", "approve", "default_actor", "reject", "resume_decided", "view"]
