"""Software-defined assets, one concern per module."""
