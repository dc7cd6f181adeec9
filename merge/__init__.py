"""Merge: put the predicted face back into frames, merge checks during training, and the synthetic-content label."""
