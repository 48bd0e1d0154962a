"""CLI subcommands, one module each (see tinycl.cli)."""
