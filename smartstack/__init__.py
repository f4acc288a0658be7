"""smartstack: shared contracts of nerve and synapse."""
