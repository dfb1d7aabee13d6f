"""The user-level jobs behind ``qernel sample``, ``qernel observe`` and ``qernel phasediagram``."""
