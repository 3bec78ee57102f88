"""The HTTP plumbing around the tasks: errors, bodies, limits, headers, logs, metrics, docs."""
