"""Helpers shared by the tests (documents, datasets, collections, servers); importable as ``support.*``."""
