"""Callbacks mlplab adds to Lightning's own."""
