"""Duty operations: acknowledge, silence, maintenance, drills and the shift duty diary.

The API, the CLI and the drills call these; they change rule state only through the rule
engine's methods and store only through the storage repositories."""
