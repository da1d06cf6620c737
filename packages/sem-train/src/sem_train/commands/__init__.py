"""Command modules of the ``sem`` CLI; each exposes ``register(subparsers)``."""
