"""Rules: turn samples into alerts a duty engineer can trust. Knows nothing of protocols."""
