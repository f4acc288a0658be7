"""synapse: watches registries and keeps HAProxy in step."""
