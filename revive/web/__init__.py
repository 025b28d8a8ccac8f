"""The web app Slack talks to: verified slash commands, roles, audit (``revive serve``)."""
