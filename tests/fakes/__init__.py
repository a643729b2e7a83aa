"""Local fakes of outside services (Slack's Web API), real HTTP servers on loopback."""
