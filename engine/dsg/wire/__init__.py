"""Layer 4: the client-agent protocol and starting an agent over SSH."""
