"""Prompts: the task presets, the limits on prompt text, and reading the model's <think>/<answer> output."""
