"""Command-line interface: ``intriguing --help``."""
