"""The `qa-pipeline` command: `cli.main` parses and dispatches, one module per command group."""
