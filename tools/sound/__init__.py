"""The embedded sound model: a synthesised world of sounds, its measures and its trainer."""
