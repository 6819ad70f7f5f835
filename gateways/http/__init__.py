"""The HTTP API: one module of routes per context, their shapes in ``models/``, and the plumbing
every route shares (edge checks, auth, problems, position tokens, command dispatch)."""
