"""gptforge.scripts: the `gptforge` command line, one module per subcommand (see `cli.py`)."""
