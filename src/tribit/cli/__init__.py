"""Command-line interface: `tribit <command>`; one module per command."""
