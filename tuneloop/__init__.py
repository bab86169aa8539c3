"""The composition root: settings, CLI, building the service, the scheduled jobs."""
