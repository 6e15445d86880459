"""The command line: argument parsing (``main``), result tables and JSON, graph drawing."""
