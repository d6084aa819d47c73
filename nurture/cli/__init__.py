"""The command line: one Typer app, commands grouped by who uses them."""
