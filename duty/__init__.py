"""Duty operations: acknowledge, silence, maintenance, drills, the shift duty diary and the
machine room's entry register (`entries.py`: who is in which room, the people rules' samples).

The API, the CLI and the drills call these; they change rule state only through the rule
engine's methods and store only through the storage repositories."""
