"""nerve: health-checks a local service and registers it while healthy."""
