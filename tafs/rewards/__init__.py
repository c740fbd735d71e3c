"""Reward functions by name: (prompts, images in [0, 1]) -> one score per image."""
