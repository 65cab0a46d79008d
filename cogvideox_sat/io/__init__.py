"""Checkpoint loading and key maps shared with tools/."""
