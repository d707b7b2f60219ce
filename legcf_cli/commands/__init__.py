"""The ``legcf`` commands: short functions that resolve options and forward to the engine."""
