"""Layer 7: the repository host's side: the agent, access roles, audit log, repository listing."""
