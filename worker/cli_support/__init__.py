"""What every command line of the product shares: argparse types and the exit-code runner.

Standard library and ``worker.core.errors`` only, so the trainer and the client tools can use
it without importing the worker's service or its CLIs.
"""
