"""Staged, resumable training of the multi-task segmenter (local or Ray Train). See `trainer` and `cli`."""
