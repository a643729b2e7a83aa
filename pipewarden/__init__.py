"""pipewarden: a supervisor that watches Prefect data pipelines and heals them with a human in the loop.

The kernel package holds what every other folder shares: the domain models, settings, the state DB,
the error hierarchy and the command line. It imports none of the other top-level packages at module
level; the CLI is the composition root and loads them lazily inside each command.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
